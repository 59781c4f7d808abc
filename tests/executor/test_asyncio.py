"""asyncio on Executor's futures: run_in_executor, wrap_future, ``await
future`` and ``async for`` over ``map``. Completion reaches the loop through
the future's done callback, or the engine's ready notification, which the
engine's callback thread runs; no thread waits per call."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
from concurrent.futures.process import _RemoteTraceback

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def test_run_in_executor_gathers_many_calls(executor: shoal.Executor) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, tasks.square, i) for i in range(500)))

    assert asyncio.run(main()) == [i * i for i in range(500)]


def test_wrap_future_awaits_a_result_and_an_error(executor: shoal.Executor) -> None:
    async def main() -> None:
        assert await asyncio.wrap_future(executor.submit(tasks.mul, 6, 7)) == 42
        with pytest.raises(ValueError, match="bad item 1"):
            await asyncio.wrap_future(executor.submit(tasks.fail_on(1), 1))

    asyncio.run(main())


def test_no_thread_is_started_per_call(executor: shoal.Executor) -> None:
    executor.submit(tasks.square, 1).result()  # the callback thread exists from here on
    before = threading.active_count(), shoal._shoal.live_threads()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, tasks.square, i) for i in range(200)))

    assert len(asyncio.run(main())) == 200
    assert (threading.active_count(), shoal._shoal.live_threads()) == before


def test_a_future_can_be_awaited_itself(executor: shoal.Executor) -> None:
    async def main() -> None:
        assert await executor.submit(tasks.mul, 6, 7) == 42
        with pytest.raises(ValueError, match="bad item 1") as info:
            await executor.submit(tasks.fail_on(1), 1)
        assert type(info.value.__cause__) is _RemoteTraceback

    asyncio.run(main())


def test_cancelling_the_task_awaiting_a_future_cancels_its_queued_task(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))
    queued = executor.submit(tasks.touch, gates.path("ran"))

    async def main() -> None:
        waiter = asyncio.ensure_future(queued)
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())
    cf.wait([queued], timeout=30)
    assert queued.cancelled()  # as asyncio.wrap_future does
    gates.open("go")
    assert [f.result() for f in blockers] == [0, 1]
    assert executor.submit(tasks.square, 2).result() == 4
    assert not os.path.exists(gates.path("ran"))


@pytest.mark.parametrize("kwargs", [{}, {"chunksize": 3}, {"buffersize": 4}])
def test_async_for_over_map_gives_results_in_order(executor: shoal.Executor, kwargs: dict) -> None:
    async def main() -> list[int]:
        return [x async for x in executor.map(tasks.square, range(300), **kwargs)]

    assert asyncio.run(main()) == [i * i for i in range(300)]


def test_async_for_over_map_raises_a_failed_item_with_the_stdlib_cause(executor: shoal.Executor) -> None:
    async def main() -> list[int]:
        got = []
        with pytest.raises(ValueError, match="bad item 2") as info:
            async for x in executor.map(tasks.fail_on(2), range(5), chunksize=1):
                got.append(x)
        assert type(info.value.__cause__) is _RemoteTraceback
        return got

    assert asyncio.run(main()) == [0, 10]


def test_async_for_over_map_times_out_as_the_sync_map_does(executor: shoal.Executor, gates) -> None:
    async def main() -> list[object]:
        got = []
        results = executor.map(tasks.gated, [(gates.path("open"), 0), (gates.path("never"), 1)], timeout=0.5)
        gates.open("open")
        with pytest.raises(TimeoutError):
            async for x in results:
                got.append(x)
        return got

    assert asyncio.run(main()) == [0]
    gates.open("never")  # the second task ends, its result dropped


def test_cancelling_an_async_for_over_map_leaves_it_readable(executor: shoal.Executor, gates) -> None:
    results = executor.map(tasks.gated, [(gates.path("go"), i) for i in range(3)])

    async def main() -> None:
        reader = asyncio.ensure_future(results.__anext__())
        await asyncio.sleep(0)  # the reader runs its first step and waits
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

    asyncio.run(main())
    gates.open("go")
    assert list(results) == [0, 1, 2]


def test_gather_over_thousands_of_run_in_executor_calls(executor: shoal.Executor) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, tasks.square, i) for i in range(5000)))

    assert asyncio.run(main()) == [i * i for i in range(5000)]
