"""The threads backend behind WorkerPool and Executor: the same route,
nothing pickled, and what needs killing refused with an error that says so."""

from __future__ import annotations

import threading
from concurrent.futures import as_completed, wait

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)


def test_workerpool_threading_passes_objects_as_they_are() -> None:
    lock = threading.Lock()  # unpicklable shared object

    def task(shared: threading.Lock, x: int) -> bool:
        return shared is lock and x >= 0

    with shoal.WorkerPool(2, start_method="threading", shared_objects=lock) as pool:
        assert pool.map(task, range(10)) == [True] * 10
        assert pool.apply(task, (3,)) is True
        assert pool.ctx.__name__ == "multiprocessing.dummy"


def test_workerpool_threading_worker_state_is_per_thread() -> None:
    def count(state: dict[str, int], _: int) -> tuple[int, int]:
        state["n"] = state.get("n", 0) + 1
        return threading.get_ident(), state["n"]

    with shoal.WorkerPool(2, start_method="threading", use_worker_state=True) as pool:
        got = pool.map(count, range(40), chunk_size=1)
    for ident in {i for i, _ in got}:
        counts = [n for i, n in got if i == ident]
        assert counts == list(range(1, len(counts) + 1))


def test_workerpool_threading_refuses_what_needs_killing() -> None:
    with shoal.WorkerPool(2, start_method="threading") as pool:
        with pytest.raises(ValueError, match="threads, which cannot be"):
            pool.map(abs, range(3), task_timeout=1.0)
        with pytest.raises(ValueError, match="threads, which cannot be"):
            pool.apply(abs, (1,), task_timeout=1.0)
        assert pool.map(abs, [-1, -2]) == [1, 2]  # the pool goes on


def test_executor_threading_futures() -> None:
    event = threading.Event()
    with shoal.Executor(2, start_method="threading") as ex:
        futures = [ex.submit(lambda e, i: (e is event, i), event, i) for i in range(20)]
        done, _ = wait(futures, timeout=30)
        assert len(done) == 20
        assert sorted(f.result()[1] for f in as_completed(futures)) == list(range(20))
        assert all(f.result()[0] for f in futures)
        assert list(ex.map(lambda x: -x, range(5))) == [0, -1, -2, -3, -4]
        exc = KeyError("own")

        def fail() -> None:
            raise exc

        assert ex.submit(fail).exception(timeout=30) is exc


def test_executor_threading_refuses_what_needs_killing() -> None:
    with pytest.raises(ValueError, match="task_timeout needs a worker that can be killed"):
        shoal.Executor(1, start_method="threading", task_timeout=1.0)
    release = threading.Event()
    with shoal.Executor(1, start_method="threading") as ex:
        with pytest.raises(ValueError, match="threads, which cannot be"):
            ex.schedule(abs, (1,), timeout=1.0)
        running = ex.submit(release.wait, 30)
        with pytest.raises(ValueError, match="threads, which cannot be"):
            ex.cancel(running)
        release.set()
        assert running.result(timeout=30) is True
