"""Shared objects holding multiprocessing primitives (Value, Array, Lock,
Event, Barrier, Queue) under every start method, set in the constructor or
by set_shared_objects: forked workers inherit them, the others get them
pickled as multiprocessing pickles for a process it spawns. Ones made by
pool.ctx or a context of the pool's start method work everywhere; ones made
for fork reach forked workers only, and elsewhere the map says so."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest
import wp_sem_tasks

import shoal

N_JOBS = 3


def maker(pool: shoal.WorkerPool, source: str, method: str) -> Any:
    """Where the primitives come from: the pool's context, the stdlib
    context of the pool's start method, or multiprocessing's default one."""
    if source == "pool.ctx":
        return pool.ctx
    if source == "context":
        return multiprocessing.get_context(method)
    return multiprocessing


def only_inherited(source: str, method: str) -> bool:
    """Whether these primitives are made for fork while the workers are not forked."""
    return source == "default" and method != "fork" and multiprocessing.get_start_method() == "fork"


def check_value(pool: shoal.WorkerPool, make: Any) -> Callable[[], None]:
    value = make.Value("i", 0)
    pool.set_shared_objects(value)

    def run() -> None:
        assert pool.map(wp_sem_tasks.add_to_value, range(20), chunk_size=1) == list(range(20))
        assert value.value == sum(range(20))

    return run


def check_array(pool: shoal.WorkerPool, make: Any) -> Callable[[], None]:
    array = make.Array("i", 10)
    pool.set_shared_objects(array)

    def run() -> None:
        pool.map(wp_sem_tasks.write_to_array, range(10), chunk_size=1)
        assert array[:] == [x * x for x in range(10)]

    return run


def check_lock(pool: shoal.WorkerPool, make: Any) -> Callable[[], None]:
    lock = make.Lock()
    pool.set_shared_objects(lock)

    def run() -> None:
        assert pool.map(wp_sem_tasks.try_lock, range(2)) == [True, True]
        # Held here, it is held for the workers too: it is the same lock.
        with lock:
            assert pool.map(wp_sem_tasks.try_lock, range(2)) == [False, False]

    return run


def check_event(pool: shoal.WorkerPool, make: Any) -> Callable[[], None]:
    event = make.Event()
    pool.set_shared_objects(event)

    def run() -> None:
        pool.map(wp_sem_tasks.set_event, range(1))
        assert event.is_set()
        assert pool.map(wp_sem_tasks.wait_event, range(3)) == [True] * 3

    return run


def check_barrier(pool: shoal.WorkerPool, make: Any) -> Callable[[], None]:
    barrier = make.Barrier(N_JOBS)
    pool.set_shared_objects(barrier)

    def run() -> None:
        assert pool.map(wp_sem_tasks.wait_on_barrier, range(N_JOBS)) == list(range(N_JOBS))

    return run


def check_queue(pool: shoal.WorkerPool, make: Any) -> Callable[[], None]:
    queue = make.Queue()
    pool.set_shared_objects(queue)

    def run() -> None:
        pool.map(wp_sem_tasks.put_in_queue, range(5))
        assert sorted(queue.get(timeout=30) for _ in range(5)) == [0, 10, 20, 30, 40]

    return run


CHECKS = {
    "Value": check_value,
    "Array": check_array,
    "Lock": check_lock,
    "Event": check_event,
    "Barrier": check_barrier,
    "Queue": check_queue,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("source", ["pool.ctx", "context", "default"])
@pytest.mark.parametrize("primitive", list(CHECKS))
def test_each_primitive_reaches_the_workers(method: str, primitive: str, source: str) -> None:
    pool = shoal.WorkerPool(N_JOBS, start_method=method)
    run = CHECKS[primitive](pool, maker(pool, source, method))
    with pool:
        if only_inherited(source, method):
            with pytest.raises(RuntimeError, match=r"made for fork.*pool\.ctx"):
                run()
        else:
            run()


@pytest.mark.timeout(60)
def test_shared_objects_given_to_the_constructor(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    value, barrier = ctx.Value("i", 0), ctx.Barrier(2)
    with shoal.WorkerPool(2, start_method=method, shared_objects=(value, barrier), keep_alive=True) as pool:
        pool.map(wp_sem_tasks.add_to_value_in_pair, range(10), chunk_size=1)
        assert value.value == sum(range(10))
        # Replaced by set_shared_objects: the kept workers restart with the new ones.
        other = ctx.Value("i", 100)
        pool.set_shared_objects((other, barrier))
        pool.map(wp_sem_tasks.add_to_value_in_pair, range(4), chunk_size=1)
        assert (value.value, other.value) == (sum(range(10)), 106)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kwargs", [{}, {"chunk_size": 1}, {"n_splits": N_JOBS}], ids=["default", "chunk_size=1", "n_splits"]
)
def test_every_worker_gets_work_early(method: str, kwargs: dict[str, Any]) -> None:
    # Each task waits for all N_JOBS: it deadlocks unless every worker gets
    # a task before any task finishes.
    pool = shoal.WorkerPool(N_JOBS, start_method=method)
    pool.set_shared_objects(pool.ctx.Barrier(N_JOBS))
    with pool:
        assert pool.map(wp_sem_tasks.wait_on_barrier, range(N_JOBS), **kwargs) == list(range(N_JOBS))
        assert sorted(pool.imap_unordered(wp_sem_tasks.wait_on_barrier, range(N_JOBS), **kwargs)) == list(range(N_JOBS))
