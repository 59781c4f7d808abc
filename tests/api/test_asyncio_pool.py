"""asyncio on shoal.Pool: ``await`` on apply_async/map_async results and
``async for`` over imap and imap_unordered.

Completion reaches the event loop through the engine's callback thread
(``JobResult._wake_on_outcome``, ``Engine.notify_ready``), never through a
thread waiting per result; cancelling the awaiting task detaches it: the
pool's task runs on and its result stays readable.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import weakref
from collections.abc import Iterator
from multiprocessing.pool import RemoteTraceback

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def _blocked(pool: shoal.Pool, gates, name: str, value: object = None) -> shoal.AsyncResult:
    """A task that has started in a worker and waits for gate ``name``."""
    result = pool.apply_async(tasks.started_then_wait, (gates.path(f"{name}-started"), gates.path(name), value))
    tasks.wait_for(gates.path(f"{name}-started"))
    return result


def test_await_gives_the_value_of_apply_async_map_async_and_starmap_async(pool: shoal.Pool) -> None:
    async def main() -> tuple[object, ...]:
        return (
            await pool.apply_async(tasks.mul, (6, 7)),
            await pool.map_async(tasks.square, range(50)),
            await pool.starmap_async(tasks.mul, [(1, 2), (3, 4)]),
            await pool.map_async(tasks.square, []),
        )

    assert asyncio.run(main()) == (42, [i * i for i in range(50)], [2, 12], [])


def test_await_raises_the_task_exception_with_its_remote_traceback(pool: shoal.Pool) -> None:
    async def main() -> None:
        with pytest.raises(KeyError) as info:
            await pool.apply_async(tasks.nested_failure, (5,))
        assert type(info.value.__cause__) is RemoteTraceback
        assert "in inner" in info.value.__cause__.tb
        with pytest.raises(ValueError, match="bad item 3"):
            await pool.map_async(tasks.fail_on(3), range(10))

    asyncio.run(main())


def test_await_of_a_result_that_failed_before_the_engine_raises_its_error(pool: shoal.Pool) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="pickle"):
            await pool.apply_async(tasks.identity, (threading.Lock(),))

    asyncio.run(main())


def test_await_of_a_ready_result_returns_at_once(pool: shoal.Pool) -> None:
    result = pool.apply_async(tasks.square, (9,))
    result.wait()

    async def main() -> object:
        return await result

    assert asyncio.run(main()) == 81
    # Awaiting again, or get(), gives the same.
    assert asyncio.run(main()) == 81
    assert result.get() == 81


def test_await_returns_after_the_callback_has_run(pool: shoal.Pool, gates) -> None:
    seen: list[object] = []

    async def main() -> object:
        result = pool.apply_async(tasks.started_then_wait, (gates.path("s"), gates.path("go"), 5), callback=seen.append)
        waiter = asyncio.ensure_future(result)
        await asyncio.sleep(0)  # the waiter is armed before the task may finish
        gates.open("go")
        value = await waiter
        assert seen == [5]  # as with get(): ready only once the callback ran
        return value

    assert asyncio.run(main()) == 5


def test_many_concurrent_awaits_each_get_their_own_value(pool: shoal.Pool) -> None:
    async def main() -> list[object]:
        results = [pool.apply_async(tasks.square, (i,)) for i in range(2000)]
        return await asyncio.gather(*results)

    assert asyncio.run(main()) == [i * i for i in range(2000)]


def test_several_tasks_and_loops_await_one_result(pool: shoal.Pool, gates) -> None:
    result = _blocked(pool, gates, "go", "shared")
    got: list[object] = []
    armed = threading.Barrier(3)

    async def one_loop() -> list[object]:
        waiters = [asyncio.ensure_future(result) for _ in range(3)]
        await asyncio.sleep(0)
        armed.wait(10)
        return list(await asyncio.gather(*waiters))

    thread = threading.Thread(target=lambda: got.extend(asyncio.run(one_loop())))
    thread.start()

    async def main() -> list[object]:
        waiters = [asyncio.ensure_future(result) for _ in range(3)]
        await asyncio.sleep(0)
        armed.wait(10)
        return list(await asyncio.gather(*waiters))

    def opener() -> None:
        armed.wait(10)
        gates.open("go")

    threading.Thread(target=opener).start()
    assert asyncio.run(main()) == ["shared"] * 3
    thread.join(30)
    assert got == ["shared"] * 3


def test_cancelling_the_awaiting_task_detaches_it_and_the_pool_goes_on(pool: shoal.Pool, gates) -> None:
    result = _blocked(pool, gates, "go", "late")

    async def main() -> None:
        waiter = asyncio.ensure_future(result)
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(result, 0.05)
        # Cancelled waits leave no waker behind: nothing of this loop is held.
        assert not [r for r in gc.get_referents(result) if isinstance(r, functools.partial)]
        assert await pool.apply_async(tasks.square, (3,)) == 9
        gates.open("go")
        assert await result == "late"

    asyncio.run(main())
    assert result.get() == "late"


def test_await_after_terminate_raises_what_get_raises(gates) -> None:
    with shoal.Pool(1) as pool:
        result = _blocked(pool, gates, "never")

        async def main() -> None:
            waiter = asyncio.ensure_future(result)
            await asyncio.sleep(0)
            pool.terminate()
            with pytest.raises(shoal.PoolTerminatedError):
                await waiter

        asyncio.run(main())
        with pytest.raises(shoal.PoolTerminatedError):
            result.get()


def test_an_awaited_result_keeps_no_reference_to_the_loop(pool: shoal.Pool, gates) -> None:
    results = [pool.apply_async(tasks.square, (i,)) for i in range(20)]
    mapped = pool.map_async(tasks.square, range(20))
    gated = pool.apply_async(tasks.gated, ((gates.path("go"), "late"),))
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        waiter = asyncio.ensure_future(gated)
        await asyncio.sleep(0)
        # The waiting task has left a waker with the result...
        assert [r for r in gc.get_referents(gated) if isinstance(r, functools.partial)]
        gates.open("go")
        await asyncio.gather(*results, mapped, waiter)
        # ...which went when it was called.
        assert not [r for r in gc.get_referents(gated) if isinstance(r, functools.partial)]

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None
    assert [r.get() for r in results] == [i * i for i in range(20)]
    assert gated.get() == "late"


def test_no_thread_is_started_per_await(pool: shoal.Pool) -> None:
    pool.apply_async(tasks.square, (1,), callback=lambda _: None).get()  # the callback thread exists
    before = threading.active_count(), shoal._shoal.live_threads()

    async def main() -> None:
        await asyncio.gather(*(pool.apply_async(tasks.square, (i,)) for i in range(300)))
        assert [x async for x in pool.imap(tasks.square, range(300))] == [i * i for i in range(300)]

    asyncio.run(main())
    # imap's feeder thread ends with its input; the engine started no thread
    # (a thread of an earlier test's pool may have ended meanwhile).
    assert shoal._shoal.live_threads() <= before[1]
    assert threading.active_count() <= before[0] + 1


# -- async for over imap ------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_async_for_over_imap_gives_results_in_order(pool: shoal.Pool, chunksize: int | None) -> None:
    async def main() -> list[int]:
        return [x async for x in pool.imap(tasks.square, range(500), chunksize)]

    assert asyncio.run(main()) == [i * i for i in range(500)]


def test_async_for_over_imap_unordered_gives_every_result(pool: shoal.Pool) -> None:
    async def main() -> list[int]:
        return [x async for x in pool.imap_unordered(tasks.square, range(500), 3)]

    assert sorted(asyncio.run(main())) == [i * i for i in range(500)]


def test_async_for_raises_a_failed_item_at_its_place_and_can_go_on(pool: shoal.Pool) -> None:
    async def main() -> None:
        it = pool.imap(tasks.fail_on(3), range(6))
        got = []
        with pytest.raises(ValueError, match="bad item 3") as info:
            async for x in it:
                got.append(x)
        assert got == [0, 10, 20]
        assert type(info.value.__cause__) is RemoteTraceback
        assert [x async for x in it] == [40, 50]

    asyncio.run(main())


def test_async_for_waits_without_blocking_the_loop(pool: shoal.Pool, gates) -> None:
    async def main() -> None:
        it = pool.imap(tasks.gated, [(gates.path(i), i) for i in range(3)], 1)
        ticks = 0
        reader = asyncio.ensure_future(it.__anext__())
        while not reader.done():
            # The loop runs while the reader waits; open the gate on a later turn.
            ticks += 1
            if ticks == 3:
                gates.open(0)
            await asyncio.sleep(0.001)
        assert reader.result() == 0 and ticks >= 3
        gates.open(1)
        gates.open(2)
        assert [x async for x in it] == [1, 2]

    asyncio.run(main())


def test_async_for_reads_an_input_fed_from_its_own_results(pool: shoal.Pool) -> None:
    # The input generator blocks until the reader has the previous result:
    # only the items the feeder has read, submitted by the reader, let it on.
    got = threading.Semaphore(0)

    def feed() -> Iterator[int]:
        for i in range(5):
            yield i
            got.acquire(timeout=20)

    async def main() -> list[int]:
        out = []
        async for x in pool.imap(tasks.square, feed()):
            out.append(x)
            got.release()
        return out

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_cancelling_an_async_for_keeps_the_iterator_whole(pool: shoal.Pool, gates) -> None:
    it = pool.imap(tasks.gated, [(gates.path(i), i) for i in range(4)], 1)

    async def main() -> None:
        reader = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # the reader runs its first step and waits
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        # No waiter is left for a cancelled read.
        assert it._waiters is not None and not it._waiters._waiters

    asyncio.run(main())
    for i in range(4):
        gates.open(i)
    assert list(it) == [0, 1, 2, 3]


def test_an_async_for_keeps_no_reference_to_the_loop(pool: shoal.Pool, gates) -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    it = pool.imap(tasks.gated, [(gates.path(i), i) for i in range(3)], 1)

    async def main() -> list[int]:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        reader = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # the reader runs its first step and waits
        assert it._waiters is not None and it._waiters._waiters  # one waits
        for i in range(3):
            gates.open(i)
        return [await reader] + [x async for x in it]

    assert asyncio.run(main()) == [0, 1, 2]
    assert it._waiters is not None and not it._waiters._waiters
    gc.collect()
    assert loops[0]() is None


def test_next_timeout_and_async_for_mix(pool: shoal.Pool) -> None:
    it = pool.imap(tasks.square, range(10))
    assert it.next(timeout=30) == 0

    async def main() -> list[int]:
        first = await it.__anext__()
        return [first] + [x async for x in it]

    assert asyncio.run(main()) == [i * i for i in range(1, 10)]
    with pytest.raises(StopIteration):
        next(it)
