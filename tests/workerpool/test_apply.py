"""apply and apply_async as MPIRE has them: arguments, callbacks, the
builtin TimeoutError from get, extra arguments, one failure per call."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading

import pytest
import wp_tasks

import shoal
import tasks


@pytest.mark.timeout(60)
def test_arguments(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        assert pool.apply(wp_tasks.square, 42) == 42 * 42  # not a tuple: one argument
        assert pool.apply(wp_tasks.echo, "ab") == (("ab",), {})
        assert pool.apply(wp_tasks.echo, [1, 2]) == ((1, 2), {})
        assert pool.apply(wp_tasks.add, (1,), {"b": 2, "c": 3}) == 6
        assert pool.apply_async(wp_tasks.add, (4, 5)).get(timeout=30) == 9


@pytest.mark.timeout(60)
def test_callbacks_and_failures_are_per_call(method: str) -> None:
    done = threading.Event()
    seen: list[object] = []

    def on_value(value: object) -> None:
        seen.append(value)

    def on_error(exc: BaseException) -> None:
        seen.append(type(exc))
        done.set()

    with shoal.WorkerPool(2, start_method=method) as pool:
        good = pool.apply_async(wp_tasks.square, (3,), callback=on_value)
        bad = pool.apply_async(wp_tasks.fail_on_five, (5,), error_callback=on_error)
        assert good.get(timeout=30) == 9
        with pytest.raises(wp_tasks.CustomError):
            bad.get(timeout=30)
        assert done.wait(30)
        assert good.successful() and not bad.successful()
        assert pool.apply(wp_tasks.square, (4,)) == 16
    assert seen.count(9) == 1 and seen.count(wp_tasks.CustomError) == 1


@pytest.mark.timeout(60)
def test_get_times_out_with_the_builtin_timeout_error(method: str, gates: object) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        result = pool.apply_async(tasks.wait_for, (gates.path("a"), "done"))  # type: ignore[attr-defined]
        # The builtin TimeoutError, as MPIRE raises; also the one Pool's get
        # raises, so that code written for either catches it.
        with pytest.raises(TimeoutError) as info:
            result.get(timeout=0.01)
        assert isinstance(info.value, multiprocessing.TimeoutError)
        assert not result.ready()
        with pytest.raises(ValueError):
            result.successful()
        gates.open("a")  # type: ignore[attr-defined]
        assert result.get(timeout=30) == "done"


@pytest.mark.timeout(60)
def test_extra_arguments_and_init_from_the_first_apply(method: str) -> None:
    with shoal.WorkerPool(
        2, start_method=method, pass_worker_id=True, shared_objects="shared", use_worker_state=True
    ) as pool:
        worker_id, shared, n, x = pool.apply(wp_tasks.extras, (7,))
        assert worker_id in (0, 1) and shared == "shared" and n == 1 and x == 7
    with shoal.WorkerPool(2, start_method=method, use_worker_state=True) as pool:
        # The first apply starts the workers with its worker_init and worker_exit.
        assert (
            pool.apply(wp_tasks.count_task, (1,), worker_init=wp_tasks.init_record, worker_exit=wp_tasks.exit_record)
            == 1
        )
        results = [pool.apply_async(wp_tasks.count_task, (i,)) for i in range(10)]
        assert [r.get(timeout=30) for r in results] == list(range(10))
        pool.stop_and_join()
        exits = pool.get_exit_results()
    assert len(exits) == 2
    assert sum(tasks for _, _, tasks in exits) == 11


@pytest.mark.timeout(60)
def test_an_apply_async_result_can_be_awaited(method: str) -> None:
    async def main(pool: shoal.WorkerPool) -> tuple[object, ...]:
        good = pool.apply_async(wp_tasks.square, (6,))
        bad = pool.apply_async(wp_tasks.fail_on_five, (5,))
        value = await good
        with pytest.raises(wp_tasks.CustomError):
            await bad
        return value, await pool.apply_async(wp_tasks.add, (1, 2))

    with shoal.WorkerPool(2, start_method=method) as pool:
        assert asyncio.run(main(pool)) == (36, 3)
