"""MPIRE's semantics from shoal issue 14 (items 2 and 6) not covered by the
other WorkerPool tests: a death fails only its task while the rest of the
work is delivered, a failed map leaves the pool usable whatever its window
or lifespans, exit results of lifespan replacements (large ones too), and
keep_alive across maps that change the function or hooks."""

from __future__ import annotations

from typing import Any

import pytest
import wp_sem_tasks
import wp_tasks

import shoal


@pytest.mark.timeout(60)
def test_a_death_fails_only_its_task_and_the_rest_is_delivered(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        # apply_async: every other call delivers its result.
        results = [pool.apply_async(wp_sem_tasks.die_on_three, (x,)) for x in range(8)]
        for x, result in enumerate(results):
            if x == 3:
                with pytest.raises(shoal.WorkerLostError, match="exit code 5") as info:
                    result.get()
                assert isinstance(info.value, RuntimeError)  # what MPIRE programs catch
            else:
                assert result.get() == x
        # imap: every result before the lost task is delivered, in order.
        got = []
        with pytest.raises(RuntimeError, match="die_on_three\\(3\\)"):
            for value in pool.imap(wp_sem_tasks.die_on_three, range(8), chunk_size=1):
                got.append(value)
        assert got == [0, 1, 2]
        assert pool.map(wp_tasks.square, range(10)) == [x * x for x in range(10)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("keep_alive", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"max_tasks_active": 2}, {"worker_lifespan": 2}, {"max_tasks_active": 3, "worker_lifespan": 1}],
    ids=["plain", "max_tasks_active", "worker_lifespan", "both"],
)
def test_a_failed_map_leaves_the_pool_usable(method: str, keep_alive: bool, kwargs: dict[str, Any]) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=keep_alive) as pool:
        with pytest.raises(ValueError, match="three"):
            pool.map(wp_sem_tasks.fail_on_three, range(20), chunk_size=1, **kwargs)
        with pytest.raises(shoal.WorkerLostError):
            pool.map(wp_sem_tasks.die_on_three, range(20), chunk_size=1, **kwargs)
        assert pool.map(wp_sem_tasks.slow_square, range(20), chunk_size=1, **kwargs) == [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(wp_tasks.square, range(20), **kwargs)) == sorted(x * x for x in range(20))


@pytest.mark.timeout(90)
def test_large_exit_results_of_lifespan_replacements(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        pool.map(wp_tasks.square, range(8), chunk_size=1, worker_lifespan=2, worker_exit=wp_sem_tasks.big_exit)
        results = pool.get_exit_results()
    # One per exiting worker: at least 8 / 2 of them, each 10 MiB, whole.
    assert len(results) >= 4
    assert all(r == b"y" * (10 << 20) for r in results)


@pytest.mark.timeout(60)
def test_keep_alive_keeps_workers_when_the_function_or_hooks_change(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True, use_worker_state=True) as pool:
        hooks = {"worker_init": wp_tasks.init_record, "worker_exit": wp_tasks.exit_record}
        first = {pid for pid, _ in pool.map(wp_tasks.state_tasks, range(10), chunk_size=1, **hooks)}
        # Another function: same workers, same state.
        pool.map(wp_tasks.count_task, range(10), chunk_size=1, **hooks)
        # Other hooks (none): MPIRE's warning; the workers (and their init) stay.
        with pytest.warns(RuntimeWarning, match="keep_alive"):
            second = {pid for pid, _ in pool.map(wp_tasks.state_tasks, range(10), chunk_size=1)}
        # Still the two workers the first map started (it may have used one).
        assert len(first | second) <= 2
        # keep_alive off: this map's workers stop after it, running exit once each.
        pool.set_keep_alive(False)
        with pytest.warns(RuntimeWarning, match="keep_alive"):
            pool.map(wp_tasks.state_tasks, range(4), chunk_size=1, worker_exit=wp_tasks.exit_record)
        exits = pool.get_exit_results()
        assert len(exits) == 2
        assert first | second <= {pid for pid, _, _ in exits}
        assert all(inits == 1 for _, inits, _ in exits)
        # The next map has new workers.
        third = {pid for pid, _ in pool.map(wp_tasks.state_tasks, range(10), chunk_size=1)}
        assert not third & first
