"""Workers' lives: when they start and stop, keep_alive, worker_init and
worker_exit, lifespans, and what a pool refuses once terminated."""

from __future__ import annotations

import os

import pytest
import wp_tasks

import shoal


def exits_by_pid(pool: shoal.WorkerPool) -> dict[int, tuple[int, int]]:
    """exit_record's reports: pid -> (inits, tasks)."""
    return {pid: (inits, tasks) for pid, inits, tasks in pool.get_exit_results()}


@pytest.mark.timeout(60)
def test_without_keep_alive_each_map_has_its_own_workers(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, use_worker_state=True) as pool:
        hooks = {"worker_init": wp_tasks.init_record, "worker_exit": wp_tasks.exit_record}
        pool.map(wp_tasks.count_task, range(20), **hooks)
        first = exits_by_pid(pool)
        pool.map(wp_tasks.count_task, range(20), **hooks)
        second = exits_by_pid(pool)
    # Every worker ran init once and exit once; the second map's are new.
    assert len(first) == len(second) == 2
    assert not set(first) & set(second)
    for got in (first, second):
        assert all(inits == 1 for inits, _ in got.values())
        assert sum(tasks for _, tasks in got.values()) == 20


@pytest.mark.timeout(60)
def test_keep_alive_keeps_workers_state_and_init(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, use_worker_state=True, keep_alive=True) as pool:
        hooks = {"worker_init": wp_tasks.init_record, "worker_exit": wp_tasks.exit_record}
        first = pool.map(wp_tasks.state_tasks, range(20), chunk_size=1, **hooks)
        second = pool.map(wp_tasks.state_tasks, range(20), chunk_size=1, **hooks)
        # A different function still runs on the same workers, with their state.
        pool.map(wp_tasks.count_task, range(10), **hooks)
        assert pool.get_exit_results() == []  # nobody has exited yet
        pool.stop_and_join()
        exits = exits_by_pid(pool)
    pids = {p for p, _ in first} | {p for p, _ in second}
    assert len(exits) == 2 and pids <= set(exits)
    assert all(inits == 1 for inits, _ in exits.values())
    # The task counters went on from one map to the next.
    for p in pids:
        counts = [n for q, n in first + second if q == p]
        assert counts == list(range(1, len(counts) + 1))


@pytest.mark.timeout(60)
def test_changing_pool_settings_restarts_kept_workers(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        before = set(pool.map(wp_tasks.pid, range(10), chunk_size=1))
        pool.pass_on_worker_id()
        after = pool.map(wp_tasks.worker_id_of, range(10), chunk_size=1)
        assert set(after) <= {0, 1}
        now = set(pool.map(wp_tasks.pid, range(10), chunk_size=1))
    assert not before & now


@pytest.mark.timeout(60)
def test_worker_lifespan_replaces_workers_with_init_and_exit(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, use_worker_state=True) as pool:
        out = pool.map(
            wp_tasks.count_task,
            range(40),
            chunk_size=1,
            worker_lifespan=5,
            worker_init=wp_tasks.init_record,
            worker_exit=wp_tasks.exit_record,
        )
        assert out == list(range(40))
        exits = exits_by_pid(pool)
    assert len(exits) >= 8  # at least 40 / 5 workers
    assert all(inits == 1 for inits, _ in exits.values())
    assert all(tasks <= 5 for _, tasks in exits.values())
    assert sum(tasks for _, tasks in exits.values()) == 40


@pytest.mark.timeout(60)
def test_large_exit_results(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        pool.map(wp_tasks.square, range(4), worker_exit=wp_tasks.exit_big)
        results = pool.get_exit_results()
    assert len(results) == 2
    assert all(r == b"x" * (10 << 20) for r in results)


@pytest.mark.timeout(60)
def test_a_failing_worker_exit_is_raised(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        pool.map(wp_tasks.square, range(4), worker_exit=wp_tasks.exit_raises)
        with pytest.raises(KeyError, match="from worker_exit") as info:
            pool.stop_and_join()
        assert isinstance(info.value.__cause__, shoal.RemoteTraceback)
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_a_failing_worker_init_fails_the_map_and_not_the_pool(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        with pytest.raises(LookupError, match="from worker_init"):
            pool.map(wp_tasks.square, range(10), worker_init=wp_tasks.init_raises)
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_a_second_map_while_an_imap_is_unfinished(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        results = pool.imap(wp_tasks.square, range(100), chunk_size=1)
        assert next(results) == 0
        with pytest.raises(RuntimeError, match="Cannot call 'map' while another 'map' is running"):
            pool.map(wp_tasks.square, range(3))
        assert list(results) == [x * x for x in range(1, 100)]
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_an_imap_after_terminate_or_the_with_block_raises(method: str) -> None:
    pool = shoal.WorkerPool(2, start_method=method)
    results = pool.imap(wp_tasks.square, range(100), chunk_size=1)
    assert next(results) == 0
    pool.terminate()
    with pytest.raises(RuntimeError, match="terminated"):
        next(results)
    # The pool itself starts workers again.
    assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]

    with shoal.WorkerPool(2, start_method=method) as pool:
        results = pool.imap_unordered(wp_tasks.square, range(100), chunk_size=1)
        next(results)
        never_started = pool.imap(wp_tasks.square, range(3))
    with pytest.raises(RuntimeError, match="terminated"):
        next(results)
    with pytest.raises(RuntimeError, match="terminated"):
        next(never_started)


@pytest.mark.timeout(60)
def test_leaving_an_imap_early_cancels_the_rest(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        for value in pool.imap(wp_tasks.square, range(10_000), chunk_size=1):
            if value == 25:
                break
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_daemon_workers_cannot_start_processes(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
            pool.map(wp_tasks.start_a_process, range(1))
        with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
            pool.map(wp_tasks.nested_pool, [3])
    with shoal.WorkerPool(2, start_method=method, daemon=False) as pool:
        assert pool.map(wp_tasks.nested_pool, [3, 4]) == [5, 14]


@pytest.mark.timeout(60)
def test_cpu_ids_pin_workers(method: str) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    with shoal.WorkerPool(2, start_method=method, cpu_ids=[allowed[0]]) as pool:
        assert pool.map(wp_tasks.affinity, range(4)) == [[allowed[0]]] * 4
    if len(allowed) > 1:
        pins = [[allowed[0]], [allowed[1]]]
        with shoal.WorkerPool(2, start_method=method, cpu_ids=pins) as pool:
            got = pool.map(wp_tasks.affinity, range(10), chunk_size=1)
        assert all(cpus == pins[0] or cpus == pins[1] for cpus in got)
