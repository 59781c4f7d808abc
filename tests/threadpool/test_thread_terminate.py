"""terminate: no thread can be killed, so terminate fails what has not
finished and returns without waiting for a task that does not return."""

from __future__ import annotations

import itertools
import threading

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)


def test_terminate_returns_while_a_task_is_still_running() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def stuck() -> str:
        started.set()
        release.wait(30)
        finished.set()
        return "late"

    p = shoal.ThreadPool(1)
    r = p.apply_async(stuck)
    queued = p.apply_async(abs, (-1,))
    assert started.wait(30)
    p.terminate()
    p.join()
    # Returned with the task still inside stuck().
    assert not finished.is_set()
    with pytest.raises(shoal.PoolTerminatedError):
        r.get(timeout=30)
    with pytest.raises(shoal.PoolTerminatedError):
        queued.get(timeout=30)
    release.set()
    assert finished.wait(30)  # the thread ran its task to the end, alone


def test_queued_tasks_never_start_after_terminate() -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[int] = []

    def first() -> None:
        started.set()
        release.wait(30)

    p = shoal.ThreadPool(1)
    p.apply_async(first)
    results = [p.apply_async(ran.append, (i,)) for i in range(10)]
    assert started.wait(30)
    p.terminate()
    p.join()
    release.set()
    for r in results:
        with pytest.raises(shoal.PoolTerminatedError):
            r.get(timeout=30)
    assert ran == []


def test_an_idle_pool_terminates_and_its_threads_end() -> None:
    p = shoal.ThreadPool(3)
    assert p.map(abs, [-1, -2, -3]) == [1, 2, 3]
    p.terminate()
    p.join()
    assert p._pool == []
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply_async(abs, (1,))


def test_imap_after_terminate_raises() -> None:
    release = threading.Event()

    def work(x: int) -> int:
        if x > 0:
            release.wait(30)
        return x

    p = shoal.ThreadPool(2)
    it = p.imap(work, itertools.count(), chunksize=1)
    assert next(it) == 0
    p.terminate()
    p.join()
    with pytest.raises(shoal.PoolTerminatedError):
        list(it)
    release.set()
