"""shoal.Pool's initializer and initargs reach forked workers by
inheritance, as multiprocessing.Pool's do under fork: a Barrier (whose
Condition insists on inheritance) in initargs works, under shoal's default
in a single-threaded process and under an explicit fork. Spawn and
forkserver workers get them pickled as multiprocessing pickles a spawned
process's arguments, so a Barrier or a Queue made by their context reaches
them too."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

import shoal
from scripts import run_script

_barrier: Any = None


def wait_at(barrier: Any) -> None:
    global _barrier
    barrier.wait(timeout=30)
    _barrier = barrier


def parties(_: object) -> int:
    return int(_barrier.parties)


def remember(value: int) -> None:
    global _barrier
    _barrier = value


def remembered(_: object) -> Any:
    return _barrier


@pytest.mark.timeout(60)
def test_barrier_in_initargs_under_fork() -> None:
    ctx = multiprocessing.get_context("fork")
    with shoal.Pool(2, wait_at, initargs=(ctx.Barrier(2),), context=ctx) as pool:
        assert pool.map(parties, range(4)) == [2] * 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_barrier_in_initargs_under_spawn_and_forkserver(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with shoal.Pool(2, wait_at, initargs=(ctx.Barrier(2),), context=ctx) as pool:
        assert pool.map(parties, range(4)) == [2] * 4


def put_pid(queue: Any) -> None:
    queue.put(os.getpid())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_executor_queue_in_initargs_under_spawn_and_forkserver(method: str) -> None:
    # As concurrent.futures' own test_init does: a Queue each worker writes to as it starts.
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    with shoal.Executor(2, mp_context=ctx, initializer=put_pid, initargs=(queue,)) as ex:
        pids = set(ex.map(pid_of, range(8)))
    started = {queue.get(timeout=30) for _ in range(2)}
    assert pids <= started


def pid_of(_: object) -> int:
    return os.getpid()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_initargs_are_pickled_elsewhere(method: str) -> None:
    with shoal.Pool(2, remember, initargs=(42,), context=multiprocessing.get_context(method)) as pool:
        assert pool.map(remembered, range(4)) == [42] * 4


SCRIPT = """
import multiprocessing
import shoal

seen = None


def init(barrier):
    global seen
    barrier.wait(timeout=30)
    seen = barrier.parties


def read(_):
    return seen


if __name__ == "__main__":
    pool = shoal.Pool(2, init, initargs=(multiprocessing.Barrier(2),))
    print(pool._start_method, pool.map(read, range(3)))
    pool.close()
    pool.join()
"""


@pytest.mark.timeout(120)
def test_barrier_in_initargs_under_the_default(tmp_path: Path) -> None:
    assert run_script(tmp_path, SCRIPT).strip() == "fork [2, 2, 2]"
