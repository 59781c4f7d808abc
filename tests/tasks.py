"""Functions tests run in workers. Workers import this module by name."""

from __future__ import annotations

import os
import threading
import time
import weakref

_initialised = 0


def square(x: int) -> int:
    return x * x


def mul(a: int, b: int) -> int:
    return a * b


def wait_for(path: str, value: object = None, limit: float = 30.0) -> object:
    """Block until the file ``path`` exists (the test opens the gate)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.002)
    return value


def gated(args: tuple[str, object]) -> object:
    path, value = args
    return wait_for(path, value)


def pid_and_product(a: int, b: int) -> tuple[int, int]:
    return os.getpid(), a * b


def fail_on(bad: int):
    def f(x: int) -> int:
        if x == bad:
            raise ValueError(f"bad item {x}")
        return x * 10

    return f


def count_init() -> None:
    global _initialised
    _initialised += 1


def init_count(_: object) -> tuple[int, int]:
    return os.getpid(), _initialised


def nested_failure(x: int) -> int:
    def inner(y: int) -> int:
        raise KeyError(f"missing {y}")

    return inner(x)


def unpicklable_result(_: object) -> object:
    import threading

    return threading.Lock()


def read_global(_: object) -> object:
    import tasks

    return getattr(tasks, "parent_value", None)


# -- faults for the crash matrix ---------------------------------------------

FAULTS = ("error", "exit", "os_exit", "segfault", "sigkill", "sigterm", "keyboard_interrupt", "base_exception")


class CustomBase(BaseException):
    """A BaseException that is neither Exception, SystemExit nor KeyboardInterrupt."""


def fault(action: str) -> None:
    """Fail in the way ``action`` names, wherever this is called."""
    import ctypes
    import signal
    import sys

    if action == "error":
        raise RuntimeError("fault injected")
    if action == "exit":
        sys.exit(3)
    if action == "os_exit":
        os._exit(7)
    if action == "segfault":
        ctypes.string_at(0)
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    if action == "keyboard_interrupt":
        raise KeyboardInterrupt
    if action == "base_exception":
        raise CustomBase("custom base exception")
    raise AssertionError(f"unknown fault {action}")


def _fault_on_load(action: str) -> None:
    fault(action)


class FaultOnPickle:
    """Faults when pickled."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self):
        fault(self.action)
        return (FaultOnPickle, (self.action,))


class FaultOnUnpickle:
    """Pickles fine; faults when unpickled."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self):
        return (_fault_on_load, (self.action,))


def run_fault(action: str) -> None:
    fault(action)


def return_fault_on_pickle(action: str) -> FaultOnPickle:
    return FaultOnPickle(action)


def return_fault_on_unpickle(action: str) -> FaultOnUnpickle:
    return FaultOnUnpickle(action)


def identity(x: object) -> object:
    return x


class InitOnlyError(Exception):
    """Cannot be rebuilt from its args: __init__ wants two."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a + b)


def raise_init_only(_: object) -> None:
    raise InitOnlyError(1, 2)


class UnpicklableError(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        import threading

        self.lock = threading.Lock()


def raise_unpicklable(_: object) -> None:
    raise UnpicklableError


def ignore_sigterm_and_block(ready_path: str) -> None:
    """Stuck in C code (sleep) with SIGTERM ignored: only SIGKILL stops it.
    Creates ``ready_path`` once SIGTERM is ignored."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(ready_path, "w").close()
    time.sleep(120)


def touch(path: str) -> None:
    time.sleep(0.005)
    open(path, "w").close()


def array_total(a) -> float:
    return float(a.sum())


def bump_and_total(a) -> float:
    """Changes its argument in place: the parent's copy must not see it."""
    a += 1
    return float(a.sum())


def filled(args: tuple[int, float]):
    import numpy as np

    n, value = args
    return np.full(n, value)


# In a worker: the array filled_after_last made last, weakly.
_last_filled: weakref.ref | None = None


def filled_after_last(args: tuple[int, float]):
    """``filled``, with its last item saying whether the array this worker
    made for its previous task was still alive (1.0) or gone (0.0)."""
    global _last_filled
    import numpy as np

    n, value = args
    alive = _last_filled is not None and _last_filled() is not None
    out = np.full(n, value)
    out[-1] = float(alive)
    _last_filled = weakref.ref(out)
    return out


def large_or_not(item: object) -> object:
    """An array for ``(n, value)``; 7 for "small"; raises ValueError for
    "raise"; a result that cannot be pickled (a lock) for "lock"."""
    if isinstance(item, tuple):
        return filled(item)
    if item == "raise":
        raise ValueError("asked to raise")
    return threading.Lock() if item == "lock" else 7


def filled_or_die(args: tuple[int, float]):
    """``filled``; exits the worker, as a crash would, on a negative value."""
    if args[1] < 0:
        os._exit(3)
    return filled(args)


def total_or_die(a) -> float:
    """Exits the worker, as a crash would, on an array that starts with -1."""
    if a[0] == -1:
        os._exit(3)
    return float(a.sum())


def pid_of(_: object) -> int:
    """The pid of the worker that ran it."""
    return os.getpid()


def fault_on_item(arg: tuple[int, str]) -> int:
    """Return the item's index, or end the worker (``"os_exit"``) on it."""
    index, action = arg
    if action:
        fault(action)
    return index


def started_then_wait(started: str, gate: str, value: object = None) -> object:
    """Create ``started`` (the test learns the task runs), then wait for ``gate``."""
    open(started, "w").close()
    return wait_for(gate, value)


def started_then_block_in_c(started: str) -> None:
    """Write this worker's pid to ``started``, then sleep in C code with
    SIGTERM ignored: only SIGKILL stops it."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(started + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(started + ".tmp", started)  # whole, or not there
    time.sleep(120)
