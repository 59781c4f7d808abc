"""Cancelling: future.cancel() with the stdlib's meaning (queued work only),
and Executor.cancel, which also stops a running task by killing its worker."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import time

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def test_cancel_of_a_queued_task_succeeds_and_it_never_runs(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))  # both workers hold a blocker
    queued = executor.submit(tasks.touch, gates.path("ran"))
    assert queued.cancel()
    assert queued.cancelled() and queued.done()
    with pytest.raises(cf.CancelledError):
        queued.result()
    gates.open("go")
    assert [f.result() for f in blockers] == [0, 1]
    # The executor drains in order: a task submitted after it has run, and
    # the cancelled one never did.
    executor.submit(tasks.square, 1).result()
    assert not os.path.exists(gates.path("ran"))


def test_cancel_of_a_running_task_fails_and_it_delivers(executor: shoal.Executor, gates) -> None:
    running = executor.submit(tasks.started_then_wait, gates.path("s"), gates.path("go"), "done")
    tasks.wait_for(gates.path("s"))
    assert not running.cancel()
    assert not running.cancelled()
    gates.open("go")
    assert running.result() == "done"
    assert not running.cancel()  # finished: as the stdlib says


def test_a_cancelled_future_wakes_wait_and_as_completed(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))
    queued = executor.submit(tasks.square, 2)
    assert queued.cancel()
    done, _ = cf.wait([queued, *blockers], return_when=cf.FIRST_COMPLETED)
    assert done == {queued}
    assert next(cf.as_completed([queued, *blockers])) is queued
    gates.open("go")
    cf.wait(blockers)


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_executor_cancel_kills_a_task_stuck_in_c_code(start_method: str, gates) -> None:
    with shoal.Executor(2, start_method=start_method) as ex:
        stuck = ex.submit(tasks.started_then_block_in_c, gates.path("s"))
        tasks.wait_for(gates.path("s"))  # sleeping in C, SIGTERM ignored
        with open(gates.path("s")) as f:
            pid = int(f.read())
        assert ex.cancel(stuck)
        assert stuck.cancelled()
        with pytest.raises(cf.CancelledError):
            stuck.result()
        # The worker is killed and replaced, and the executor goes on.
        assert ex.submit(tasks.square, 9).result() == 81
        deadline = time.monotonic() + 30
        while pid in (ex._processes or {}) or len(ex._processes or {}) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.01)
        assert list(ex.map(tasks.square, range(4), chunksize=1)) == [0, 1, 4, 9]


def test_executor_cancel_without_kill_keeps_the_stdlib_meaning(executor: shoal.Executor, gates) -> None:
    running = executor.submit(tasks.started_then_wait, gates.path("s"), gates.path("go"), 1)
    tasks.wait_for(gates.path("s"))
    assert not executor.cancel(running, kill_running=False)
    gates.open("go")
    assert running.result() == 1
    assert not executor.cancel(running)  # done: nothing to cancel


def test_executor_cancel_of_a_queued_task_cancels_it(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))
    queued = executor.submit(tasks.square, 3)
    assert executor.cancel(queued)
    assert queued.cancelled()
    gates.open("go")
    assert [f.result() for f in blockers] == [0, 1]


def test_cancelling_the_asyncio_future_cancels_the_queued_task(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))

    async def main() -> cf.Future[int]:
        queued = executor.submit(tasks.square, 4)
        wrapped = asyncio.wrap_future(queued)
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped
        return queued

    queued = asyncio.run(main())
    cf.wait([queued], timeout=30)
    assert queued.cancelled()
    gates.open("go")
    cf.wait(blockers)


def test_shutdown_cancelling_futures_cancels_the_tasks_of_dropped_ones_too(gates) -> None:
    ex = shoal.Executor(1, start_method="forkserver")
    blocker = ex.submit(tasks.started_then_wait, gates.path("s"), gates.path("go"), 1)
    tasks.wait_for(gates.path("s"))
    kept = ex.submit(tasks.touch, gates.path("kept"))
    for i in range(3):
        ex.submit(tasks.touch, gates.path(f"dropped{i}"))  # the future is dropped at once
    ex.shutdown(wait=False, cancel_futures=True)
    assert kept.cancelled()
    gates.open("go")
    assert blocker.result(timeout=30) == 1
    ex.shutdown(wait=True)
    assert not [p for p in ["kept", "dropped0", "dropped1", "dropped2"] if os.path.exists(gates.path(p))]
