"""Functions the WorkerPool tests of order_tasks, hook timeouts, shared
objects and MPIRE's remaining semantics run in workers; workers import this
module by name (tests/workerpool is on sys.path)."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any


def sleep_in_c(*_: object) -> None:
    """Block in C (libc's sleep) far past any test's timeout: only a kill ends it."""
    ctypes.CDLL(None).sleep(3600)


def sleep_in_c_once(flag: Any) -> None:
    """worker_init that blocks in C in the first worker to run it only."""
    with flag.get_lock():
        first = flag.value == 0
        flag.value = 1
    if first:
        sleep_in_c()


def quick_init(*_: object) -> None:
    pass


def exit_pid(*_: object) -> int:
    return os.getpid()


def id_and_pid(worker_id: int, _: object = None) -> tuple[int, int]:
    return worker_id, os.getpid()


def id_and_item(worker_id: int, x: Any) -> tuple[int, Any]:
    return worker_id, x


def wait_on_barrier(barrier: Any, x: Any) -> Any:
    """Wait for every worker to reach the barrier (BrokenBarrierError after a minute)."""
    barrier.wait(timeout=60)
    return x


def id_after_barrier(worker_id: int, barrier: Any, x: Any) -> tuple[int, Any]:
    barrier.wait(timeout=60)
    return worker_id, x


def add_to_value(value: Any, x: int) -> int:
    with value.get_lock():
        value.value += x
    return x


def write_to_array(array: Any, x: int) -> int:
    array[x] = x * x
    return x


def try_lock(lock: Any, _: object = None) -> bool:
    """Whether the lock could be taken within 0.2 s (released again if so)."""
    got = bool(lock.acquire(timeout=0.2))
    if got:
        lock.release()
    return got


def set_event(event: Any, _: object = None) -> bool:
    event.set()
    return True


def wait_event(event: Any, _: object = None) -> bool:
    return bool(event.wait(timeout=30))


def put_in_queue(queue: Any, x: int) -> int:
    queue.put(x * 10)
    return x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def die_on_three(*args: int) -> int:
    """Exit (code 5) on task 3; the task is the last argument."""
    x = args[-1]
    if x == 3:
        os._exit(5)
    return x


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def big_exit(*_: object) -> bytes:
    return b"y" * (10 << 20)


def add_to_value_in_pair(pair: tuple[Any, Any], x: int) -> int:
    """add_to_value on the first of the shared objects."""
    return add_to_value(pair[0], x)


def stamp_then_sleep_in_c(stamp: Any) -> None:
    """worker_init that records when it started (time.time()) in the shared
    Value ``stamp``, then blocks in C: for measuring the init timeout's latency."""
    stamp.value = time.time()
    sleep_in_c()
