"""shoal.ThreadPool: the API of multiprocessing.pool.ThreadPool, on threads
of this process, with objects passed as they are (never pickled)."""

from __future__ import annotations

import io
import multiprocessing.pool
import os
import threading

import pytest

import shoal
from shoal import _platform

pytestmark = pytest.mark.timeout(60)


def test_exported_and_a_pool() -> None:
    assert "ThreadPool" in shoal.__all__
    assert issubclass(shoal.ThreadPool, shoal.Pool)


def test_default_size_is_the_cpus_this_process_may_use() -> None:
    with shoal.ThreadPool() as p:
        assert p._processes == _platform.usable_cpus()


def test_bad_arguments_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        shoal.ThreadPool(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        shoal.ThreadPool(1, initializer=3)  # type: ignore[arg-type]


def test_tasks_run_on_other_threads_of_this_process(tpool: shoal.ThreadPool) -> None:
    pid, ident = tpool.apply(lambda: (os.getpid(), threading.get_ident()))
    assert pid == os.getpid()
    assert ident != threading.get_ident()


def test_arguments_and_results_are_the_objects_themselves(tpool: shoal.ThreadPool) -> None:
    lock = threading.Lock()  # cannot be pickled
    stream = io.StringIO()
    assert tpool.apply(lambda a, b: (a, b), (lock, stream)) == (lock, stream)
    got = tpool.apply(lambda a: a, (lock,))
    assert got is lock
    seen: list[int] = []
    tpool.map(seen.append, range(10))  # a bound method of the caller's list
    assert sorted(seen) == list(range(10))
    gen = tpool.apply(lambda: (i for i in range(3)))  # a generator: no pickle
    assert list(gen) == [0, 1, 2]


def test_keywords_and_closures(tpool: shoal.ThreadPool) -> None:
    offset = 10
    assert tpool.apply(lambda x, *, y: x + y + offset, (1,), {"y": 2}) == 13


def test_the_map_family(tpool: shoal.ThreadPool) -> None:
    assert tpool.map(lambda x: x * 2, range(100)) == [x * 2 for x in range(100)]
    assert tpool.map(str, range(20), chunksize=7) == [str(x) for x in range(20)]
    assert tpool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert tpool.map_async(abs, [-1, -2]).get(timeout=30) == [1, 2]
    assert tpool.starmap_async(max, [(1, 5), (7, 2)]).get(timeout=30) == [5, 7]
    assert list(tpool.imap(lambda x: -x, iter(range(50)))) == [-x for x in range(50)]
    assert list(tpool.imap(lambda x: -x, range(50), chunksize=4)) == [-x for x in range(50)]
    assert sorted(tpool.imap_unordered(lambda x: x, iter(range(50)))) == list(range(50))
    assert tpool.map(len, []) == []


def test_apply_async_results(tpool: shoal.ThreadPool) -> None:
    r = tpool.apply_async(divmod, (7, 2))
    assert r.get(timeout=30) == (3, 1)
    assert r.ready() and r.successful()
    assert isinstance(r, multiprocessing.pool.AsyncResult) or isinstance(r, shoal.AsyncResult)


def test_get_times_out_with_multiprocessings_error(tpool: shoal.ThreadPool) -> None:
    release = threading.Event()
    r = tpool.apply_async(release.wait, (30,))
    with pytest.raises(multiprocessing.TimeoutError):
        r.get(timeout=0.05)
    release.set()
    assert r.get(timeout=30) is True


def test_close_join_runs_everything_submitted() -> None:
    done: list[int] = []
    p = shoal.ThreadPool(2)
    for i in range(20):
        p.apply_async(done.append, (i,))
    p.close()
    p.join()
    assert sorted(done) == list(range(20))
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply(abs, (1,))


def test_with_block_terminates() -> None:
    with shoal.ThreadPool(2) as p:
        assert p.apply(abs, (-1,)) == 1
    assert p._state == "TERMINATE"
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(abs, [1])


def test_many_small_tasks(tpool: shoal.ThreadPool) -> None:
    results = [tpool.apply_async(abs, (-i,)) for i in range(2000)]
    assert [r.get(timeout=30) for r in results] == list(range(2000))


def test_nothing_left_in_the_object_table() -> None:
    from shoal import _handles

    with shoal.ThreadPool(2) as p:
        table = p._backend.handles  # type: ignore[union-attr]
        p.map(lambda x: [x], range(100), chunksize=3)
        p.apply(lambda a: a, (object(),))
        p.apply(lambda a: a, (object(),))  # the second: apply's fast path
        list(p.imap(lambda x: x, iter([object(), object()])))
        with pytest.raises(KeyError):
            p.apply(lambda: {}["missing"])
        left = [v for k, v in _handles._objects.items() if k >> _handles._KEY_BITS == table.id]
        assert left == [(None, ())]  # the pinned initializer, and nothing else


def test_repr() -> None:
    with shoal.ThreadPool(2) as p:
        assert repr(p) == "<shoal.thread_pool.ThreadPool state=RUN pool_size=2>"
