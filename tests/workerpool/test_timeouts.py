"""worker_init_timeout and worker_exit_timeout: a worker stuck in its hook,
even in C code, is killed at the deadline (the engine's, as for
task_timeout), the map raises the builtin TimeoutError naming the hook, and
the pool is usable after. Latencies are measured by benches, not asserted."""

from __future__ import annotations

import contextlib
import time

import pytest
import wp_sem_tasks
import wp_tasks

import shoal


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep_alive", [False, True])
def test_worker_init_past_its_timeout_fails_the_map(method: str, keep_alive: bool) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=keep_alive) as pool:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=r"worker_init timed out .*ran past its timeout of 0\.500 s") as info:
            pool.map(wp_tasks.square, range(10), worker_init=wp_sem_tasks.sleep_in_c, worker_init_timeout=0.5)
        assert time.monotonic() - t0 < 30  # killed, not the hour the hook sleeps
        assert isinstance(info.value, shoal.TaskTimeoutError)
        # The stuck workers were stopped; the pool starts others.
        assert pool.map(wp_tasks.square, range(5)) == [0, 1, 4, 9, 16]
        # An init that finishes in time changes nothing (kept workers warn
        # that their init does not run again, as MPIRE's do).
        with pytest.warns(RuntimeWarning, match="worker_init") if keep_alive else contextlib.nullcontext():
            out = pool.map(wp_tasks.square, range(5), worker_init=wp_sem_tasks.quick_init, worker_init_timeout=30)
        assert out == [0, 1, 4, 9, 16]


@pytest.mark.timeout(60)
def test_the_worker_stuck_in_init_is_replaced(method: str) -> None:
    # One worker: its init blocks (the first time only); the map fails, and
    # the next map's worker, whose init returns, runs every task.
    pool = shoal.WorkerPool(1, start_method=method)
    flag = pool.ctx.Value("i", 0)
    pool.set_shared_objects(flag)
    hooks = {"worker_init": wp_sem_tasks.sleep_in_c_once, "worker_init_timeout": 0.5}
    with pool:
        with pytest.raises(TimeoutError, match="worker_init"):
            pool.map(wp_sem_tasks.add_to_value, [1, 2], **hooks)
        assert flag.value == 1
        assert pool.map(wp_sem_tasks.add_to_value, [2, 3], **hooks) == [2, 3]
    assert flag.value == 6


@pytest.mark.timeout(60)
def test_apply_with_a_stuck_worker_init(method: str) -> None:
    with shoal.WorkerPool(1, start_method=method) as pool:
        with pytest.raises(TimeoutError, match=r"ran past its timeout of 0\.300 s"):
            pool.apply(wp_tasks.square, (3,), worker_init=wp_sem_tasks.sleep_in_c, worker_init_timeout=0.3)


@pytest.mark.timeout(60)
def test_worker_exit_past_its_timeout_fails_the_map(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=r"worker_exit timed out .*ran past its timeout of 0\.500 s"):
            pool.map(wp_tasks.square, range(10), worker_exit=wp_sem_tasks.sleep_in_c, worker_exit_timeout=0.5)
        assert time.monotonic() - t0 < 30
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]
        # An exit that finishes in time is collected as usual.
        pool.map(wp_tasks.square, range(4), worker_exit=wp_sem_tasks.exit_pid, worker_exit_timeout=30)
        assert len(pool.get_exit_results()) == 2


@pytest.mark.timeout(60)
def test_a_kept_workers_stuck_exit_is_raised_by_stop_and_join(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        hooks = {"worker_exit": wp_sem_tasks.sleep_in_c, "worker_exit_timeout": 0.5}
        assert pool.map(wp_tasks.square, range(4), **hooks) == [0, 1, 4, 9]
        with pytest.raises(TimeoutError, match="worker_exit timed out"):
            pool.stop_and_join()
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_a_lifespan_replacements_stuck_exit_fails_the_map(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        with pytest.raises(TimeoutError, match="worker_exit timed out"):
            pool.map(
                wp_tasks.square,
                range(6),
                chunk_size=1,
                worker_lifespan=2,
                worker_exit=wp_sem_tasks.sleep_in_c,
                worker_exit_timeout=0.3,
            )
        pool.terminate()
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]
