"""Functions the progress-bar and insights tests run in workers; workers
import this module by name (tests/ is on sys.path)."""

from __future__ import annotations

import os
import signal
import time

from tasks import wait_for


def sleep_and_square(x: int) -> int:
    """MPIRE's insights example (docs, "Worker insights")."""
    time.sleep(x / 1000)
    return x * x


def square(x: int) -> int:
    return x * x


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return x


def interrupt_or_wait(x: int, parent: int, gate: str) -> int:
    """Task 0 sends SIGINT to the test process (Ctrl-C) every 0.2 s until
    ``gate`` opens; every task waits for ``gate``, so the map is still
    running when it arrives. Sent again because CPython drops the
    KeyboardInterrupt when its handler happens to run inside a weakref
    callback ("Exception ignored in: WeakSet._remove"), as a user whose
    first Ctrl-C is lost presses it again."""
    if x == 0:
        while not os.path.exists(gate):
            os.kill(parent, signal.SIGINT)
            time.sleep(0.2)
    wait_for(gate)
    return x


def wait_unless_first(x: int, gate: str) -> int:
    """Task 0 returns at once; the others wait for ``gate``."""
    if x:
        wait_for(gate)
    return x


def star_wait_unless_first(args: tuple[int, str]) -> int:
    return wait_unless_first(*args)


def keyword_task(a: int, b: int = 0) -> int:
    return a + b


def long_arg(s: str) -> int:
    return len(s)


def row_sums(block):  # type: ignore[no-untyped-def]
    return block.sum(axis=1)
