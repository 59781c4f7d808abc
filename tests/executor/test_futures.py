"""Executor's API as concurrent.futures defines it: submit, map, the
futures it returns, shutdown and the context manager."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Iterator

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def wait_path(path: str) -> None:
    """Block until a task has created ``path``."""
    tasks.wait_for(path)


def test_is_a_concurrent_futures_executor_and_returns_real_futures(executor: shoal.Executor) -> None:
    assert isinstance(executor, cf.Executor)
    future = executor.submit(pow, 2, 8)
    assert isinstance(future, cf.Future)
    assert future.result() == 256
    assert future.done() and not future.cancelled() and future.exception() is None


def test_submit_passes_keywords_even_ones_named_fn_and_self(executor: shoal.Executor) -> None:
    assert executor.submit(tasks.mul, 2, b=8).result() == 16
    assert executor.submit(dict, fn=1, self=2).result() == {"fn": 1, "self": 2}
    with pytest.raises(TypeError):
        executor.submit(fn=dict)  # type: ignore[call-arg]


def test_lambdas_and_closures_run(executor: shoal.Executor) -> None:
    k = 3
    assert executor.submit(lambda x: x * k, 5).result() == 15
    assert list(executor.map(lambda x: x + k, range(4))) == [3, 4, 5, 6]


def test_as_completed_and_wait_see_every_future(executor: shoal.Executor) -> None:
    futures = [executor.submit(tasks.square, i) for i in range(50)]
    assert sorted(f.result() for f in cf.as_completed(futures)) == [i * i for i in range(50)]
    done, not_done = cf.wait(futures, return_when=cf.ALL_COMPLETED)
    assert done == set(futures) and not not_done


def test_done_callbacks_run_once_with_the_finished_future(executor: shoal.Executor) -> None:
    seen: list[object] = []
    finished = threading.Event()

    def on_done(f: cf.Future[int]) -> None:
        seen.append(f.result())
        finished.set()

    executor.submit(tasks.square, 7).add_done_callback(on_done)
    assert finished.wait(30)
    assert seen == [49]


def test_wait_first_completed_returns_before_a_blocked_task(executor: shoal.Executor, gates) -> None:
    blocked = executor.submit(tasks.wait_for, gates.path("b"))
    quick = executor.submit(tasks.square, 3)
    done, not_done = cf.wait([blocked, quick], return_when=cf.FIRST_COMPLETED)
    assert done == {quick} and not_done == {blocked}
    gates.open("b")
    assert blocked.result() is None


def test_running_is_true_once_a_worker_holds_the_task_and_false_once_done(executor: shoal.Executor, gates) -> None:
    blockers = [executor.submit(tasks.started_then_wait, gates.path(f"s{i}"), gates.path("go"), i) for i in range(2)]
    for i in range(2):
        tasks.wait_for(gates.path(f"s{i}"))
    queued = executor.submit(tasks.square, 3)  # both workers are busy
    assert all(f.running() for f in blockers)
    assert "state=running" in repr(blockers[0])
    assert not queued.running()
    assert not blockers[0].cancel()  # running: as the stdlib says
    gates.open("go")
    assert [f.result() for f in blockers] == [0, 1] and queued.result() == 9
    assert not any(f.running() for f in [*blockers, queued])


def test_a_running_future_killed_by_executor_cancel_ends_cancelled(executor: shoal.Executor, gates) -> None:
    running = executor.submit(tasks.started_then_wait, gates.path("s"), gates.path("never"), 1)
    tasks.wait_for(gates.path("s"))
    assert running.running()
    done = threading.Event()
    running.add_done_callback(lambda _: done.set())
    assert executor.cancel(running)
    assert running.cancelled() and running.done() and not running.running()
    assert done.is_set()
    assert cf.wait([running], timeout=0).done == {running}
    assert executor.submit(tasks.square, 5).result() == 25


def test_map_gives_results_in_order_for_one_or_several_iterables(executor: shoal.Executor) -> None:
    assert list(executor.map(tasks.square, range(1000))) == [i * i for i in range(1000)]
    assert list(executor.map(pow, range(10), range(10))) == [i**i for i in range(10)]
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == [i**i for i in range(10)]
    # zip's rule: the shortest iterable ends the map.
    assert list(executor.map(tasks.mul, [1, 2, 3], [4, 5])) == [4, 10]
    assert list(executor.map(tasks.square, [])) == []


def test_map_reads_and_submits_its_input_at_once_without_buffersize(executor: shoal.Executor) -> None:
    read: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            read.append(i)
            yield i

    results = executor.map(tasks.square, source())
    assert read == list(range(100))  # before a single result is asked for
    assert list(results) == [i * i for i in range(100)]


def test_map_with_buffersize_reads_input_as_results_are_taken(executor: shoal.Executor) -> None:
    read: list[int] = []
    readers: list[threading.Thread] = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            read.append(i)
            readers.append(threading.current_thread())
            yield i
            i += 1

    results = executor.map(tasks.square, endless(), buffersize=3)
    # The first buffersize tasks are submitted before map returns, as in
    # 3.14: read by this thread, not by a feeder thread racing the caller.
    assert len(read) == 3
    assert readers == [threading.current_thread()] * 3
    assert [next(results) for _ in range(10)] == [i * i for i in range(10)]
    # Submitted and not yet yielded: at most buffersize in the engine, and
    # as many taken from it and not yet yielded.
    assert len(read) <= 10 + 2 * 3
    results.close()


@pytest.mark.parametrize(("buffersize", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_map_refuses_a_bad_buffersize(executor: shoal.Executor, buffersize: object, error: type) -> None:
    with pytest.raises(error):
        executor.map(tasks.square, range(3), buffersize=buffersize)  # type: ignore[arg-type]


def test_map_refuses_a_bad_chunksize(executor: shoal.Executor) -> None:
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(tasks.square, range(3), chunksize=0)


def test_map_raises_a_failed_item_at_its_place_after_the_ones_before(executor: shoal.Executor) -> None:
    results = executor.map(tasks.fail_on(3), range(6))
    assert [next(results) for _ in range(3)] == [0, 10, 20]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)
    # As with the stdlib's generator, the map is over after its error.
    assert list(results) == []


def test_map_timeout_raises_timeout_error_and_keeps_earlier_results(executor: shoal.Executor, gates) -> None:
    gates.open(0)
    results = executor.map(tasks.gated, [(gates.path(0), "a"), (gates.path(1), "b")], timeout=3)
    assert next(results) == "a"
    with pytest.raises(TimeoutError):
        next(results)
    gates.open(1)


def test_submit_after_shutdown_raises_runtime_error() -> None:
    ex = shoal.Executor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 3)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(tasks.square, [1])
    ex.shutdown()  # again: nothing happens


def test_submit_the_engine_refuses_after_its_check_raises_runtime_error() -> None:
    # submit checks for shutdown without a lock: a shutdown landing between
    # that check and the engine's call shows as the engine's refusal, which
    # submit reports as the stdlib does.
    ex = shoal.Executor(1)
    ex.submit(pow, 2, 3).result(timeout=30)  # pow cached: the next call takes the plain path
    plain = ex._apply_plain

    def shut_first(*args: object) -> object:
        ex.shutdown(wait=False)
        return plain(*args)

    ex._apply_plain = shut_first  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 3)
    ex.shutdown()


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_submits_racing_shutdown_each_run_or_are_cancelled_or_raise(cancel_futures: bool) -> None:
    ex = shoal.Executor(2)
    futures: list[cf.Future[int]] = []
    refused: list[BaseException] = []
    some = threading.Event()

    def submitter() -> None:
        i = 0
        while True:
            try:
                futures.append(ex.submit(tasks.square, i))
            except RuntimeError as exc:
                refused.append(exc)
                return
            i += 1
            if i == 200:
                some.set()

    t = threading.Thread(target=submitter)
    t.start()
    assert some.wait(30)
    ex.shutdown(wait=True, cancel_futures=cancel_futures)
    t.join(30)
    assert len(refused) == 1 and "after shutdown" in str(refused[0])
    # Every future the submits returned ends: with its result, or cancelled.
    assert not cf.wait(futures, timeout=30).not_done
    for i, f in enumerate(futures):
        assert f.cancelled() or f.result() == i * i
    if not cancel_futures:
        assert not any(f.cancelled() for f in futures)


def test_shutdown_waits_for_submitted_work() -> None:
    ex = shoal.Executor(2)
    futures = [ex.submit(tasks.square, i) for i in range(20)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [i * i for i in range(20)]
    assert ex._processes is None


def test_shutdown_cancel_futures_cancels_what_no_worker_holds(gates) -> None:
    ex = shoal.Executor(1)
    running = ex.submit(tasks.started_then_wait, gates.path("started"), gates.path("r"), "ran")
    queued = [ex.submit(tasks.square, i) for i in range(10)]
    wait_path(gates.path("started"))  # the worker holds it; the rest wait in the engine
    closer = threading.Thread(target=ex.shutdown, kwargs={"wait": True, "cancel_futures": True})
    closer.start()
    # shutdown cancels at once; the blocked task holds it until its gate opens.
    cf.wait(queued, timeout=30)
    assert all(f.cancelled() for f in queued)
    gates.open("r")
    closer.join(30)
    assert running.result() == "ran"


def test_shutdown_cancel_futures_leaves_maps_running(gates) -> None:
    # Only submitted tasks are cancelled: a map's queued chunks run.
    ex = shoal.Executor(1)
    running = ex.submit(tasks.started_then_wait, gates.path("started"), gates.path("r"), "ran")
    wait_path(gates.path("started"))
    results = ex.map(tasks.square, range(50), chunksize=5)
    queued = ex.submit(tasks.square, 3)
    closer = threading.Thread(target=ex.shutdown, kwargs={"wait": True, "cancel_futures": True})
    closer.start()
    cf.wait([queued], timeout=30)
    assert queued.cancelled()
    gates.open("r")
    assert list(results) == [i * i for i in range(50)]
    closer.join(30)
    assert running.result() == "ran"


def test_context_manager_shuts_down_waiting() -> None:
    with shoal.Executor(2) as ex:
        futures = [ex.submit(tasks.square, i) for i in range(10)]
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(10)]
    with pytest.raises(RuntimeError):
        ex.submit(pow, 1, 1)


def test_a_lazy_map_reads_no_more_input_after_shutdown_and_says_so() -> None:
    read: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            read.append(i)
            yield i

    ex = shoal.Executor(2)
    results = ex.map(tasks.square, source(), buffersize=2)
    ex.shutdown(wait=True)
    assert read == [0, 1]
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(RuntimeError, match="after shutdown"):
        next(results)


@pytest.mark.parametrize(("kwargs", "error"), [({"max_workers": 0}, ValueError), ({"max_workers": -1}, ValueError)])
def test_constructor_checks_as_the_stdlib(kwargs: dict, error: type) -> None:
    with pytest.raises(error, match="max_workers must be greater than 0"):
        shoal.Executor(**kwargs)


def test_constructor_checks_initializer_and_max_tasks_per_child() -> None:
    with pytest.raises(TypeError):
        shoal.Executor(1, initializer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        shoal.Executor(1, max_tasks_per_child=0)
    with pytest.raises(TypeError):
        shoal.Executor(1, max_tasks_per_child=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        shoal.Executor(1, task_timeout=0)


def test_initializer_runs_in_every_worker() -> None:
    with shoal.Executor(2, initializer=tasks.count_init) as ex:
        assert {n for _, n in ex.map(tasks.init_count, range(20), chunksize=1)} == {1}


def test_max_tasks_per_child_replaces_workers_with_fork_too() -> None:
    with shoal.Executor(1, start_method="fork", max_tasks_per_child=2) as ex:
        pids = [ex.submit(tasks.pid_of, None).result() for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]


def test_manager_proxies_reach_spawned_workers() -> None:
    # Workers take the parent's authkey, as stdlib children do.
    import multiprocessing

    with multiprocessing.Manager() as manager:
        shared = manager.list()
        with shoal.Executor(1, start_method="spawn") as ex:
            ex.submit(shared.append, 5).result()
        assert list(shared) == [5]


@pytest.mark.parametrize("buffersize", [None, 2])
def test_map_input_that_submits_to_its_executor_does_not_hang(executor: shoal.Executor, buffersize: int | None) -> None:
    # The input is read without the executor's lock, as the stdlib's map
    # reads it outside submit's: an iterable that submits needs that lock.
    side: list[cf.Future[int]] = []

    def submitting() -> Iterator[int]:
        for i in range(4):
            side.append(executor.submit(tasks.square, i))
            yield i

    results = executor.map(tasks.square, submitting(), buffersize=buffersize)
    assert list(results) == [0, 1, 4, 9]
    assert [f.result(timeout=30) for f in side] == [0, 1, 4, 9]


def test_shutdown_while_a_lazy_map_reads_its_first_window_ends_that_map() -> None:
    ex = shoal.Executor(2)
    try:

        def shuts_down() -> Iterator[int]:
            yield 0
            ex.shutdown(wait=False)
            yield 1
            yield 2

        results = ex.map(tasks.square, shuts_down(), buffersize=4)
        # What the first window read runs (the executor sees the shutdown
        # once that window is in); then, as for 3.14's map, the refusal to
        # schedule more.
        got = []
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            for value in results:
                got.append(value)
        assert got == [0, 1, 4][: len(got)]
    finally:
        ex.shutdown(wait=True)
