"""``loop.run_in_executor`` on a shoal Executor returns the loop's own kind
of future (``shoal._aio.LoopFuture``), settled in the loop in batches: it
must behave exactly as the future asyncio makes with ``wrap_future`` for
any other executor, in results, errors, cancelling and shutdown."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from concurrent.futures.process import _RemoteTraceback

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def _raise_stop_iteration() -> None:
    raise StopIteration(5)


def test_it_returns_a_future_of_the_running_loop(executor: shoal.Executor) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(executor, tasks.mul, 6, 7)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        assert await fut == 42
        assert fut.result() == 42
        # What the caller sees of the executor's futures is unchanged.
        assert type(executor.submit(tasks.mul, 2, 3)) is shoal.ShoalFuture

    asyncio.run(main())


def test_errors_keep_their_type_and_the_stdlib_cause(executor: shoal.Executor) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError, match="bad item 1") as info:
            await loop.run_in_executor(executor, tasks.fail_on(1), 1)
        assert type(info.value.__cause__) is _RemoteTraceback
        # An argument that cannot be pickled fails before any worker sees it.
        with pytest.raises(TypeError, match="lock") as info:
            await loop.run_in_executor(executor, tasks.square, threading.Lock())
        assert type(info.value.__cause__) is _RemoteTraceback
        # asyncio refuses StopIteration as a future's exception (with
        # wrap_future the awaiter would wait forever): it arrives wrapped.
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await loop.run_in_executor(executor, _raise_stop_iteration)
        assert type(info.value.__cause__) is StopIteration

    asyncio.run(main())


def test_gather_returns_every_result_in_order(executor: shoal.Executor) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, tasks.square, i) for i in range(3000)))

    assert asyncio.run(main()) == [i * i for i in range(3000)]


def test_wait_for_times_out_on_a_running_task_at_once(executor: shoal.Executor, gates) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(executor, tasks.started_then_wait, gates.path("s"), gates.path("go"), 1)
        await loop.run_in_executor(None, tasks.wait_for, gates.path("s"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fut, 0.05)
        assert fut.cancelled()

    asyncio.run(main())
    gates.open("go")  # the task runs on and ends; its outcome is dropped
    assert executor.submit(tasks.square, 3).result() == 9


def test_cancelling_a_queued_call_cancels_its_task(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queued = loop.run_in_executor(executor, tasks.touch, gates.path("ran"))
        waiter = asyncio.ensure_future(asyncio.gather(queued))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert queued.cancelled()

    asyncio.run(main())
    gates.open("go")
    assert [f.result() for f in blockers] == [0, 1]
    assert executor.submit(tasks.square, 2).result() == 4
    assert not os.path.exists(gates.path("ran"))


# Not fork: this process has threads by now, and 3.12+ warns about forking it.
@pytest.mark.parametrize("start_method", ["forkserver", "threading"])
def test_shutdown_with_cancel_futures_cancels_queued_calls(start_method: str, gates) -> None:
    ex = shoal.Executor(1, start_method=start_method)
    blocker = ex.submit(tasks.started_then_wait, gates.path("s"), gates.path("go"), 1)
    tasks.wait_for(gates.path("s"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queued = [loop.run_in_executor(ex, tasks.touch, gates.path(f"ran{i}")) for i in range(3)]
        # From another thread, as a program's shutdown often is.
        stopper = threading.Thread(target=ex.shutdown, kwargs={"wait": False, "cancel_futures": True})
        stopper.start()
        stopper.join()
        for fut in queued:
            with pytest.raises(asyncio.CancelledError):
                await fut

    asyncio.run(main())
    gates.open("go")
    assert blocker.result() == 1
    ex.shutdown(wait=True)
    assert not any(os.path.exists(gates.path(f"ran{i}")) for i in range(3))


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_executor_cancel_kills_a_call_stuck_in_c_code(start_method: str, gates) -> None:
    with shoal.Executor(2, start_method=start_method) as ex:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stuck = loop.run_in_executor(ex, tasks.started_then_block_in_c, gates.path("s"))
            await loop.run_in_executor(None, tasks.wait_for, gates.path("s"))
            assert ex.cancel(stuck)
            assert stuck.cancelled()
            assert await loop.run_in_executor(ex, tasks.square, 9) == 81

        asyncio.run(main())
        assert list(ex.map(tasks.square, range(4), chunksize=1)) == [0, 1, 4, 9]


def test_a_lost_worker_fails_only_its_call(executor: shoal.Executor) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ok = [loop.run_in_executor(executor, tasks.square, i) for i in range(20)]
        with pytest.raises(shoal.WorkerLostError):
            await loop.run_in_executor(executor, tasks.fault, "os_exit")
        assert await asyncio.gather(*ok) == [i * i for i in range(20)]

    asyncio.run(main())


def test_an_outcome_arriving_after_its_loop_closed_is_dropped(executor: shoal.Executor, gates) -> None:
    async def main() -> weakref.ref[asyncio.Future[object]]:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(executor, tasks.started_then_wait, gates.path("s"), gates.path("go"), 1)
        await loop.run_in_executor(None, tasks.wait_for, gates.path("s"))
        return weakref.ref(fut)

    ref = asyncio.run(main())  # the loop is closed with the call still running
    gates.open("go")
    assert executor.submit(tasks.square, 5).result() == 25
    gc.collect()
    assert ref() is None


def test_threads_too() -> None:
    with shoal.Executor(2, start_method="threading") as ex:

        async def main() -> list[object]:
            loop = asyncio.get_running_loop()
            box = [1]
            same = await loop.run_in_executor(ex, tasks.identity, box)
            assert same is box  # nothing pickled
            return await asyncio.gather(*(loop.run_in_executor(ex, tasks.square, i) for i in range(200)))

        assert asyncio.run(main()) == [i * i for i in range(200)]


def test_a_call_outside_the_running_loop_gets_the_stdlib_wrapping(executor: shoal.Executor) -> None:
    loop = asyncio.new_event_loop()
    try:
        # No loop runs: asyncio wraps the executor's future, as ever.
        fut = loop.run_in_executor(executor, tasks.square, 4)
        assert type(fut) is asyncio.Future
        assert loop.run_until_complete(fut) == 16
    finally:
        loop.close()
