"""asyncio on Executor's futures: run_in_executor and wrap_future. Completion
reaches the loop through the future's done callback, which the engine's
callback thread runs; no thread waits per call."""

from __future__ import annotations

import asyncio
import threading

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
