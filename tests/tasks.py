"""Functions tests run in workers. Workers import this module by name."""

from __future__ import annotations

import os
import time

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
