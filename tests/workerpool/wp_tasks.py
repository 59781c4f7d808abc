"""Functions the WorkerPool tests run in workers; workers import this
module by name (tests/workerpool is on sys.path)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
from typing import Any

import shoal


def square(x: Any) -> Any:
    return x * x


def add(a: int, b: int = 0, c: int = 0) -> int:
    return a + b + c


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What the function was called with."""
    return args, kwargs


def worker() -> int:
    """Which worker runs this: its process id, or under threading its
    thread's (a process worker's main thread has the process's id)."""
    return threading.get_native_id()


def pid(*_: object) -> int:
    return worker()


def worker_id_of(worker_id: int, _: object = None) -> int:
    return worker_id


def extras(worker_id: int, shared: Any, state: dict[str, Any], x: int) -> tuple[int, Any, int, int]:
    """The three extra arguments, in MPIRE's order, and the task's."""
    state["n"] = state.get("n", 0) + 1
    return worker_id, shared, state["n"], x


# MPIRE's worker-state example (docs, "worker_init and worker_exit"):
# count the even numbers each worker sees.
def init_count_even(worker_state: dict[str, Any]) -> None:
    worker_state["count_even"] = 0


def square_and_count_even(worker_state: dict[str, Any], x: int) -> int:
    if x % 2 == 0:
        worker_state["count_even"] += 1
    return x * x


def exit_count_even(worker_state: dict[str, Any]) -> int:
    return worker_state["count_even"]


# worker_init / worker_exit bookkeeping: how often init ran in this worker,
# and how many tasks it ran, reported by the exit hook.
def init_record(state: dict[str, Any]) -> None:
    state["inits"] = state.get("inits", 0) + 1
    state["tasks"] = 0
    state["pid"] = worker()


def count_task(state: dict[str, Any], x: Any) -> Any:
    state["tasks"] += 1
    return x


def exit_record(state: dict[str, Any]) -> tuple[int, int, int]:
    return state["pid"], state["inits"], state["tasks"]


def state_tasks(state: dict[str, Any], _: object = None) -> tuple[int, int]:
    """(worker, tasks this worker has run so far, this one included)."""
    state["tasks"] = state.get("tasks", 0) + 1
    return worker(), state["tasks"]


def exit_big(_: object = None) -> bytes:
    return b"x" * (10 << 20)


def exit_raises() -> None:
    raise KeyError("from worker_exit")


def init_raises() -> None:
    raise LookupError("from worker_init")


def rows_sum(block: Any) -> Any:
    return block.sum(axis=1, keepdims=True)


def rows_of(n_rows: int, width: int, dtype: str = "float64") -> Any:
    """``n_rows`` rows of ``width`` values, each row ``r`` filled with the
    task's ``n_rows * 1000 + r``: big enough to come back through an arena."""
    import numpy as np

    return (np.arange(n_rows, dtype=dtype)[:, None] + n_rows * 1000).repeat(width, axis=1)


_SAME: list[Any] = []


def same_rows(_: object = None) -> Any:
    """One array, the same object each call (1 MiB): a chunk's results
    then pickle it once."""
    if not _SAME:
        _SAME.append(rows_of(256, 512))
    return _SAME[0]


def shape_of(block: Any) -> tuple[int, ...]:
    return tuple(block.shape)


def increment(shared: Any, _: object) -> None:
    with shared.get_lock():
        shared.value += 1


class CustomError(Exception):
    """An exception whose __init__ takes other arguments than its args."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(what)
        self.code = code


def fail_on(bad: int, x: int) -> int:
    if x == bad:
        raise CustomError(f"bad item {x}", code=x)
    return x


def fail_on_five(x: int) -> int:
    return fail_on(5, x)


def exits(x: int) -> int:
    if x == 2:
        raise SystemExit(3)
    return x


def die_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def sleep_in_c_on_three(x: int) -> int:
    """Task 3 blocks in C (libc's sleep) far past any test's timeout."""
    if x == 3:
        ctypes.CDLL(None).sleep(3600)
    return x


def start_a_process(_: object = None) -> bool:
    p = multiprocessing.Process(target=os.getpid)
    p.start()
    p.join()
    return True


def nested_pool(n: int) -> int:
    with shoal.WorkerPool(2) as pool:
        return sum(pool.map(square, range(n)))


def affinity(_: object = None) -> list[int]:
    return sorted(os.sched_getaffinity(0))


def wait_on(barrier: Any, x: int) -> int:
    barrier.wait(timeout=60)
    return x
