"""The details of multiprocessing.Pool's API that shoal.Pool keeps."""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.pool
import os
import threading

import pytest

import shoal
import tasks
from shoal import _shoal

pytestmark = pytest.mark.timeout(60)


def test_validation_errors() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="Number of processes must be at least 1"):
            shoal.Pool(bad)
    for bad in (0, -1, 0.5, "12"):
        with pytest.raises(ValueError, match="maxtasksperchild must be a positive int or None"):
            shoal.Pool(1, maxtasksperchild=bad)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        shoal.Pool(1, initializer=3)
    with pytest.raises(ValueError, match="start method must be one of"):
        shoal.Pool(1, start_method="teleport")


def test_closed_pool_refuses_work_and_join_needs_close() -> None:
    p = shoal.Pool(1)
    with pytest.raises(ValueError, match="Pool is still running"):
        p.join()
    p.close()
    for call in (lambda: p.map(abs, [1]), lambda: p.apply_async(abs, (1,)), lambda: p.imap(abs, [1])):
        with pytest.raises(ValueError, match="Pool not running"):
            call()
    p.join()


def test_with_block_terminates_and_cannot_be_reentered() -> None:
    with shoal.Pool(1) as p:
        r = p.apply_async(tasks.wait_for, ("/nonexistent-gate",))
    assert p._state == "TERMINATE"
    with pytest.raises(shoal.PoolTerminatedError):
        r.get(timeout=10)
    with pytest.raises(ValueError, match="Pool not running"), p:
        pass
    p.join()


def test_timeouts_raise_multiprocessing_timeout_error(pool: shoal.Pool, gates) -> None:
    r = pool.apply_async(tasks.wait_for, (gates.path(0), 1))
    with pytest.raises(multiprocessing.TimeoutError):
        r.get(timeout=0.05)
    it = pool.imap(tasks.wait_for, [gates.path(1)])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    gates.open(0)
    gates.open(1)
    assert r.get(timeout=30) == 1
    assert it.next(timeout=30) is None
    with pytest.raises(StopIteration):
        it.next(timeout=1)


def test_empty_iterables_return_at_once(pool: shoal.Pool) -> None:
    assert pool.map(abs, []) == []
    assert pool.starmap(abs, []) == []
    assert list(pool.imap(abs, [])) == []
    assert list(pool.imap_unordered(abs, iter([]))) == []
    assert pool.map_async(abs, []).get(timeout=1) == []


def test_equal_map_chunks_are_the_stdlib_formula_up_to_8192() -> None:
    # ceil(n / (4 * workers)), as multiprocessing.Pool.map computes it; a
    # long input streams back in chunks of 8192 rather than eight huge ones.
    for n, workers in [(1, 2), (8, 2), (9, 2), (65_536, 2), (65_537, 2), (500_000, 2), (100, 3)]:
        expected, extra = divmod(n, workers * 4)
        expected += bool(extra)
        assert _shoal.map_chunks(n, workers, None, True)[0] == min(expected, 8192)
    assert _shoal.map_chunks(0, 2, None, True) == []
    with pytest.raises(ValueError, match="Chunksize must be 1"):
        _shoal.map_chunks(5, 2, 0)


def test_map_default_chunks_keep_runs_on_one_worker(pool: shoal.Pool) -> None:
    out = pool.starmap(tasks.pid_and_product, [(i, 1) for i in range(40)])
    # 40 items, 2 workers: chunks of 5, 5, 4, 4, 3, ... shrinking to single
    # items, each chunk run by one worker.
    lens = _shoal.map_chunks(40, 2)
    assert lens[:4] == [5, 5, 4, 4] and lens[-8:] == [1] * 8
    start = 0
    for n in lens:
        assert len({pid for pid, _ in out[start : start + n]}) == 1, (start, n)
        start += n
    assert [product for _, product in out] == list(range(40))


def test_map_keeps_multiprocessing_chunks_when_workers_are_replaced() -> None:
    # maxtasksperchild counts chunks, so map must make as many as
    # multiprocessing does: 16 items on 2 workers are 8 chunks of 2, and each
    # chunk gets a fresh worker.
    with shoal.Pool(2, maxtasksperchild=1) as p:
        out = p.starmap(tasks.pid_and_product, [(i, 1) for i in range(16)])
    pids = [pid for pid, _ in out]
    assert len(set(pids)) == 8
    assert all(pids[i] == pids[i + 1] for i in range(0, 16, 2))


def test_remote_exception_keeps_type_and_traceback(pool: shoal.Pool) -> None:
    with pytest.raises(KeyError) as info:
        pool.apply(tasks.nested_failure, (7,))
    cause = info.value.__cause__
    assert type(cause) is multiprocessing.pool.RemoteTraceback
    assert "in inner" in cause.tb and "in nested_failure" in cause.tb
    assert "nested_failure(7)" in cause.tb  # the task's arguments


def test_unpicklable_result_is_maybe_encoding_error(pool: shoal.Pool) -> None:
    errors = []
    r = pool.apply_async(tasks.unpicklable_result, (1,), error_callback=errors.append)
    with pytest.raises(multiprocessing.pool.MaybeEncodingError) as info:
        r.get(timeout=30)
    assert "lock" in info.value.value
    assert isinstance(errors[0], multiprocessing.pool.MaybeEncodingError)
    # The other items of the map still arrive; only that one fails.
    it = pool.imap(tasks.unpicklable_result, [1])
    with pytest.raises(multiprocessing.pool.MaybeEncodingError):
        next(it)
    assert pool.map(tasks.square, [3]) == [9]


def test_unpicklable_argument_raises_at_submission(pool: shoal.Pool) -> None:
    import threading

    with pytest.raises(TypeError, match="lock"):
        pool.map(tasks.square, [threading.Lock()])
    r = pool.apply_async(tasks.square, (threading.Lock(),))
    with pytest.raises(TypeError):
        r.get(timeout=1)


def test_input_iterable_exception_surfaces_at_its_position(pool: shoal.Pool) -> None:
    def gen():
        yield 1
        yield 2
        raise RuntimeError("input broke")

    it = pool.imap(tasks.square, gen())
    assert next(it) == 1
    assert next(it) == 4
    with pytest.raises(RuntimeError, match="input broke") as info:
        next(it)
    assert info.value.__cause__ is None
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(RuntimeError, match="input broke"):
        pool.map(tasks.square, gen())


def test_imap_reads_a_generator_only_as_workers_need_it(pool: shoal.Pool) -> None:
    from shoal._jobs import TAKE_CHUNKS

    for chunksize, bound in [(1, _shoal.window_chunks(pool._processes, False) + TAKE_CHUNKS + 1), (None, 200_000)]:
        drawn = itertools.count()

        def endless(drawn=drawn):
            for i in itertools.count():
                next(drawn)
                yield i

        it = pool.imap(tasks.square, endless(), chunksize=chunksize)
        assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
        # Bounded by the window plus one batch taken into Python, however
        # much input there is (this one is endless).
        assert next(drawn) <= bound, chunksize
        del it


def test_initializer_runs_once_in_every_worker_including_replacements() -> None:
    with shoal.Pool(2, initializer=tasks.count_init, maxtasksperchild=2) as p:
        out = p.map(tasks.init_count, range(20), chunksize=1)
    pids = {pid for pid, _ in out}
    assert len(pids) >= 5  # workers were replaced along the way
    assert {count for _, count in out} == {1}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_start_method_is_honoured(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    tasks.parent_value = "set in the parent"
    try:
        with shoal.Pool(1, context=ctx) as p:
            assert p._start_method == method
            seen = p.apply(tasks.read_global, (None,))
    finally:
        del tasks.parent_value
    # Only a forked worker inherits the parent's module state.
    assert seen == ("set in the parent" if method == "fork" else None)
    with shoal.Pool(1, start_method=method) as p:
        assert p._start_method == method


def test_global_set_start_method_is_honoured() -> None:
    old = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        with shoal.Pool(1) as p:
            assert p._start_method == "spawn"
            assert p.apply(os.getpid) != os.getpid()
    finally:
        multiprocessing.set_start_method(old, force=True)


def test_unclosed_pool_warns_when_collected() -> None:
    import gc

    p = shoal.Pool(1)
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del p
        gc.collect()


def test_pool_cannot_be_pickled(pool: shoal.Pool) -> None:
    import pickle

    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_iterators_never_end_early(pool: shoal.Pool) -> None:
    # Regression: an iterator that saw the job finish between two takes
    # used to stop without the last outcomes.
    for _ in range(100):
        assert sorted(pool.imap_unordered(tasks.square, range(10))) == [i * i for i in range(10)]
        assert list(pool.imap(tasks.square, range(7), chunksize=2)) == [i * i for i in range(7)]


def test_an_apply_result_is_shared_safely_between_threads(pool: shoal.Pool, gates) -> None:
    r = pool.apply_async(tasks.wait_for, (gates.path(0), 7))
    assert isinstance(r, shoal.AsyncResult)
    assert isinstance(pool.apply_async(abs, (1,), callback=lambda _: None), shoal.AsyncResult)
    assert not r.ready()
    with pytest.raises(ValueError, match="not ready"):
        r.successful()
    got: list[object] = []
    readers = [threading.Thread(target=lambda: got.append(r.get(timeout=30))) for _ in range(4)]
    for t in readers:
        t.start()
    gates.open(0)
    for t in readers:
        t.join(timeout=30)
    assert got == [7, 7, 7, 7]
    assert r.ready() and r.successful()
    r.wait()


def test_apply_async_gives_the_same_result_on_every_path(pool: shoal.Pool) -> None:
    import collections

    Pair = collections.namedtuple("Pair", "a b")
    got = []
    # The first call registers square; the later ones find it cached and
    # run wholly in Rust unless they need keywords, callbacks or a tuple.
    for args, kwds in [((3,), {}), ((3,), {}), ([3], {}), ((), {"x": 3}), (Pair(3, 4), {}), ((3.5,), {})]:
        func = tasks.mul if isinstance(args, Pair) else tasks.square
        got.append(pool.apply_async(func, args, kwds).get(timeout=30))
    collected: list[object] = []
    pool.apply_async(tasks.square, (5,), callback=collected.append).wait(timeout=30)
    assert collected == [25]  # callbacks run before the result is ready, as in multiprocessing
    assert got == [9, 9, 9, 9, 12, 12.25]
    assert type(got[0]) is int and type(got[5]) is float
    r = pool.apply_async(tasks.square, ("x",))
    with pytest.raises(TypeError):
        r.get(timeout=30)
    assert not r.successful()


def test_apply_results_are_tracked_only_once_they_hold_something_that_can_refer_back(pool: shoal.Pool) -> None:
    import gc

    # Thousands of waiting results must not be walked by every collection:
    # while waiting they hold nothing that could lead back to them.
    pool.apply(tasks.square, (2,))  # cache the function: the next calls take the Rust path
    results = [pool.apply_async(tasks.square, (i,)) for i in range(3)]
    results.append(pool.apply_async(tasks.square, (), {"x": 3}))  # the Python path
    assert all(type(r) is _shoal.JobResult for r in results)
    assert not any(gc.is_tracked(r) for r in results)
    assert [r.get(timeout=30) for r in results] == [0, 1, 4, 9]
    assert not any(gc.is_tracked(r) for r in results)  # ints refer to nothing
    # An exception (with its traceback) or a container can: then it is tracked.
    failed = pool.apply_async(tasks.fail_on(1), (1,))
    listed = pool.apply_async(list, ((1, 2),))
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    assert listed.get(timeout=30) == [1, 2]
    assert gc.is_tracked(failed) and gc.is_tracked(listed)


def test_an_apply_result_reraises_every_time(pool: shoal.Pool) -> None:
    r = pool.apply_async(tasks.fail_on(3), (3,))
    for _ in range(2):
        with pytest.raises(ValueError, match="bad item 3") as info:
            r.get(timeout=30)
        assert "in the task" in str(info.value.__cause__)
    assert not r.successful()


def test_dropped_apply_results_still_run_and_free_the_pool(pool: shoal.Pool, gates) -> None:
    for i in range(50):
        pool.apply_async(tasks.gated, ((gates.path(i), i),))
    for i in range(50):
        gates.open(i)
    # The pool keeps working; the dropped results' jobs are forgotten as they end.
    assert pool.apply_async(tasks.square, (9,)).get(timeout=30) == 81
    assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]


def test_join_returns_only_after_every_callback_ran() -> None:
    # Slow callbacks queue up behind the workers: join must wait for them,
    # as multiprocessing's join waits for its result handler thread.
    import time

    got: list[int] = []

    def slow_append(value: int) -> None:
        time.sleep(0.002)
        got.append(value)

    p = shoal.Pool(2)
    for i in range(100):
        p.apply_async(tasks.square, (i,), callback=slow_append)
    p.map_async(tasks.square, range(10), callback=lambda v: got.append(-1))
    p.close()
    p.join()
    assert sorted(got) == [-1] + [i * i for i in range(100)]
