"""order_tasks: chunk i of each map runs on worker i mod n_jobs, starting
again at worker 0 in every map; a chunk whose worker died runs on that
worker's replacement (crates/shoal-core tests pin that within one job)."""

from __future__ import annotations

import pytest
import wp_sem_tasks
import wp_tasks

import shoal


@pytest.mark.timeout(60)
def test_chunk_i_goes_to_worker_i_mod_n(method: str) -> None:
    with shoal.WorkerPool(3, start_method=method, pass_worker_id=True, order_tasks=True, keep_alive=True) as pool:
        assert pool.map(wp_tasks.worker_id_of, range(10), chunk_size=1) == [i % 3 for i in range(10)]
        # Each map starts again at worker 0, whatever the last one ended on.
        assert pool.map(wp_tasks.worker_id_of, range(4), chunk_size=1) == [0, 1, 2, 0]
        # Chunks, not tasks: 3 per chunk here.
        got = pool.map(wp_sem_tasks.id_and_item, range(10), chunk_size=3)
        assert got == [(i // 3 % 3, i) for i in range(10)]
        # The unordered maps pin the same way.
        got = pool.imap_unordered(wp_sem_tasks.id_and_item, range(9), n_splits=9)
        assert sorted(got, key=lambda r: r[1]) == [(i % 3, i) for i in range(9)]


@pytest.mark.timeout(60)
def test_set_order_tasks_and_back(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, pass_worker_id=True, keep_alive=True) as pool:
        pool.set_order_tasks()
        assert pool.map(wp_tasks.worker_id_of, range(6), chunk_size=1) == [0, 1, 0, 1, 0, 1]
        pool.set_order_tasks(False)
        assert set(pool.map(wp_tasks.worker_id_of, range(6), chunk_size=1)) <= {0, 1}


@pytest.mark.timeout(60)
def test_a_dead_workers_replacement_takes_its_chunks(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, pass_worker_id=True, order_tasks=True, keep_alive=True) as pool:
        before = dict(pool.map(wp_sem_tasks.id_and_pid, range(4), chunk_size=1))
        with pytest.raises(shoal.WorkerLostError, match="exit code 5"):
            pool.map(wp_sem_tasks.die_on_three, range(4), chunk_size=1)  # task 3: worker 1
        after = pool.map(wp_sem_tasks.id_and_pid, range(4), chunk_size=1)
        assert [wid for wid, _ in after] == [0, 1, 0, 1]
        now = dict(after)
        assert now[0] == before[0]  # worker 0 lived on
        assert now[1] != before[1]  # worker 1 was replaced, in its place


@pytest.mark.timeout(60)
def test_lock_step_rounds_on_a_barrier() -> None:
    # Strict round-robin keeps every round of n_jobs tasks on n_jobs
    # workers, so tasks that wait for each other never wait behind each other.
    pool = shoal.WorkerPool(2, pass_worker_id=True, order_tasks=True)
    pool.set_shared_objects(pool.ctx.Barrier(2))
    with pool:
        got = pool.map(wp_sem_tasks.id_after_barrier, range(8), chunk_size=1)
    assert got == [(i % 2, i) for i in range(8)]
