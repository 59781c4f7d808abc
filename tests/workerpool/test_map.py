"""The map family: results, argument unpacking, chunking, numpy, extra
arguments, and MPIRE's documented examples, under every start method."""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest
import wp_tasks

import shoal
from shoal.utils import make_single_arguments


@pytest.mark.timeout(60)
def test_the_four_maps(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        assert pool.map(wp_tasks.square, range(50)) == [x * x for x in range(50)]
        unordered = pool.map_unordered(wp_tasks.square, range(50))
        assert isinstance(unordered, list)
        assert sorted(unordered) == [x * x for x in range(50)]
        ordered = pool.imap(wp_tasks.square, range(50))
        assert isinstance(ordered, types.GeneratorType)
        assert list(ordered) == [x * x for x in range(50)]
        gen = pool.imap_unordered(wp_tasks.square, range(50))
        assert isinstance(gen, types.GeneratorType)
        assert sorted(gen) == [x * x for x in range(50)]


@pytest.mark.timeout(60)
def test_arguments_are_unpacked_as_mpire_does(method: str) -> None:
    tasks = [(1, 2), {"a": 1, "c": 5}, 7, "ab", [3, 4], b"xy", 2.5, None]
    with shoal.WorkerPool(2, start_method=method) as pool:
        got = pool.map(wp_tasks.echo, tasks, chunk_size=3)
        assert got == [
            ((1, 2), {}),
            ((), {"a": 1, "c": 5}),
            ((7,), {}),
            (("ab",), {}),  # str and bytes are one argument
            ((3, 4), {}),  # any other iterable is unpacked
            ((b"xy",), {}),
            ((2.5,), {}),
            ((None,), {}),
        ]
        # make_single_arguments passes tuples and dicts whole.
        assert pool.map(wp_tasks.echo, make_single_arguments([(1, 2), {"a": 1}]), iterable_len=2) == [
            (((1, 2),), {}),
            (({"a": 1},), {}),
        ]
        assert pool.map(wp_tasks.add, [(1, 2), (3, 4, 5)]) == [3, 12]


@pytest.mark.timeout(60)
def test_iterable_len_chunk_size_and_n_splits(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        # A generator with its length; iterable_len also caps the input.
        gen = (x for x in range(100))
        assert pool.map(wp_tasks.square, gen, iterable_len=10) == [x * x for x in range(10)]
        assert pool.map(wp_tasks.square, range(100), iterable_len=5) == [0, 1, 4, 9, 16]
        # A generator without a length: shoal sizes chunks itself.
        assert pool.map(wp_tasks.square, (x for x in range(30))) == [x * x for x in range(30)]
        for kwargs in ({"chunk_size": 2.5}, {"chunk_size": 7}, {"n_splits": 3}, {"max_tasks_active": 3}):
            assert pool.map(wp_tasks.square, range(40), **kwargs) == [x * x for x in range(40)], kwargs
        assert pool.map(wp_tasks.square, iter(range(20)), max_tasks_active=2) == [x * x for x in range(20)]


@pytest.mark.timeout(60)
def test_a_generator_is_read_as_workers_need_it(method: str) -> None:
    read = itertools.count()

    def source():
        for i in range(10_000):
            next(read)
            yield i

    with shoal.WorkerPool(2, start_method=method) as pool:
        results = pool.imap(wp_tasks.square, source(), max_tasks_active=8, chunk_size=2)
        assert next(results) == 0
        assert next(read) < 10_000  # far from all of it
        results.close()


@pytest.mark.timeout(60)
def test_numpy_arrays_go_in_row_blocks_and_come_back_as_one(method: str) -> None:
    # MPIRE's numpy example: an array is split into blocks of rows, each
    # block is one task, and map concatenates the blocks' results.
    arr = np.random.default_rng(0).random((100, 2))
    with shoal.WorkerPool(2, start_method=method) as pool:
        out = pool.map(wp_tasks.square, arr)
        assert isinstance(out, np.ndarray)
        assert np.array_equal(out, arr * arr)
        # n_jobs * 4 blocks by default, n_splits or chunk_size if given.
        assert pool.map(wp_tasks.shape_of, arr) == [(13, 2), (12, 2)] * 4
        assert pool.map(wp_tasks.shape_of, arr, n_splits=4) == [(25, 2)] * 4
        assert pool.map(wp_tasks.shape_of, arr, chunk_size=40) == [(40, 2), (40, 2), (20, 2)]
        blocks = pool.map(wp_tasks.rows_sum, arr, concatenate_numpy_output=False)
        assert isinstance(blocks, list) and len(blocks) == 8
        assert np.allclose(np.concatenate(blocks), arr.sum(axis=1, keepdims=True))
        # imap and the unordered maps never concatenate.
        assert len(list(pool.imap(wp_tasks.square, arr))) == 8
        assert len(pool.map_unordered(wp_tasks.square, arr)) == 8
        # Any map whose results are arrays is concatenated, as in MPIRE.
        assert pool.map(np.ones, [2, 3]).shape == (5,)


@pytest.mark.timeout(60)
def test_extra_arguments_come_first_in_mpire_order(method: str) -> None:
    shared = {"config": 42}
    with shoal.WorkerPool(2, start_method=method, pass_worker_id=True, shared_objects=shared) as pool:
        pool.set_use_worker_state(True)
        got = pool.map(wp_tasks.extras, range(40), chunk_size=1)
    assert [x for *_, x in got] == list(range(40))
    assert {wid for wid, *_ in got} <= {0, 1}
    assert all(s == shared for _, s, _, _ in got)
    # Each worker's state counts the tasks it ran: 1, 2, 3, ... per worker.
    for wid in {wid for wid, *_ in got}:
        counts = [n for w, _, n, _ in got if w == wid]
        assert counts == list(range(1, len(counts) + 1))


@pytest.mark.timeout(60)
def test_worker_state_counts_even_numbers(method: str) -> None:
    # MPIRE's worker_init / worker_exit example.
    with shoal.WorkerPool(2, start_method=method, use_worker_state=True) as pool:
        out = pool.map(
            wp_tasks.square_and_count_even,
            range(100),
            worker_init=wp_tasks.init_count_even,
            worker_exit=wp_tasks.exit_count_even,
        )
        assert out == [x * x for x in range(100)]
        counts = pool.get_exit_results()
        assert len(counts) == 2
        assert sum(counts) == 50


@pytest.mark.timeout(60)
def test_shared_objects_set_after_the_constructor_travel_by_inheritance() -> None:
    # Workers start at the first map, so an object made after the pool (a
    # multiprocessing Value, which only travels by inheritance) reaches them.
    pool = shoal.WorkerPool(2, start_method="fork")
    counter = pool.ctx.Value("i", 0)
    pool.set_shared_objects(counter)
    with pool:
        pool.map(wp_tasks.increment, range(25), chunk_size=1)
    assert counter.value == 25


@pytest.mark.timeout(60)
def test_lambdas_and_closures(method: str) -> None:
    offset = 10
    with shoal.WorkerPool(2, start_method=method) as pool:
        assert pool.map(lambda x: x + offset, range(5)) == [10, 11, 12, 13, 14]


def _joined_in_place(out: np.ndarray) -> bool:
    """Whether ``out`` lies over the results' own blocks (``_shm.joined``),
    not over memory of its own."""
    base = out.base
    while base is not None and type(base).__name__ != "Span":
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base is not None


@pytest.mark.timeout(60)
def test_large_numpy_results_are_concatenated_without_a_copy(method: str) -> None:
    # Results of whole pages each (256 rows of 512 float64: 1 MiB) come back
    # in shared memory; map lays them end to end as one array, without
    # copying them, equal to what numpy.concatenate gives.
    sizes = [(256, 512)] * 6 + [(100, 512)]  # the last need not be whole pages
    with shoal.WorkerPool(2, start_method=method) as pool:
        out = pool.map(wp_tasks.rows_of, sizes)
        expected = np.concatenate([wp_tasks.rows_of(*s) for s in sizes])
        assert out.shape == expected.shape and out.dtype == expected.dtype
        assert np.array_equal(out, expected)
        assert out.flags.writeable and out.flags.c_contiguous
        assert _joined_in_place(out) == (method != "threading")
        out[0, 0] = -1.0  # the caller's own array
        # While it lives, its blocks are not handed out again: later maps
        # write elsewhere and it keeps its values.
        again = pool.map(wp_tasks.rows_of, [(256, 512)] * 6, concatenate_numpy_output=False)
        assert all(np.array_equal(a, wp_tasks.rows_of(256, 512)) for a in again)
        expected[0, 0] = -1.0
        assert np.array_equal(out, expected)
        del out, again
        # Once it is gone, the blocks serve the next map.
        assert np.array_equal(pool.map(wp_tasks.rows_of, sizes), np.concatenate([wp_tasks.rows_of(*s) for s in sizes]))


@pytest.mark.timeout(60)
def test_numpy_results_that_cannot_be_laid_end_to_end_are_copied(method: str) -> None:
    cases = [
        [(255, 500)] * 4,  # not whole pages
        [(256, 512, "float64"), (256, 512, "float32"), (256, 512, "int64")],  # dtypes promoted as numpy does
        [(256, 512), (10, 512), (256, 512)],  # a small one travels in the stream
    ]
    with shoal.WorkerPool(2, start_method=method) as pool:
        for sizes in cases:
            out = pool.map(wp_tasks.rows_of, sizes, chunk_size=1)
            expected = np.concatenate([wp_tasks.rows_of(*s) for s in sizes])
            assert out.dtype == expected.dtype
            assert np.array_equal(out, expected)
            assert not _joined_in_place(out)
        # One array object as every result of a chunk: the copies must be
        # independent, as numpy's concatenation makes them.
        out = pool.map(wp_tasks.same_rows, range(4), chunk_size=4)
        assert np.array_equal(out, np.concatenate([wp_tasks.rows_of(256, 512)] * 4))
        out[0, 0] = -1.0
        assert out[256, 0] == 256 * 1000
