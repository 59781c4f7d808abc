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
    """Task 0 sends SIGINT to the test process (Ctrl-C); every task then
    waits for ``gate``, so the map is still running when it arrives."""
    if x == 0:
        os.kill(parent, signal.SIGINT)
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
