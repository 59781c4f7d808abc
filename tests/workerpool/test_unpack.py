"""MPIRE's argument rule applied by the worker itself (task bit UNPACK)
when a map needs no extra arguments: every item shape, in chunks of one
(run by the Rust worker loop) and of several (run in C where a chunk's
items share a shape), mixed chunks, and failures in the middle of a chunk
collected by map's batch path; and the same with extra arguments (MapCall)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import wp_tasks

import shoal

Pair = collections.namedtuple("Pair", "x y")


SHAPES = [
    1,
    2.5,
    None,
    True,
    "ab",
    b"cd",
    (1, 2),
    (),
    {"a": 1, "b": 2},
    [3, 4],
    Pair(5, 6),
    range(2),
    frozenset({7}),
]


def expected(item: object) -> tuple[object, ...]:
    """What MPIRE's rule calls wp_tasks.echo with."""
    if isinstance(item, dict):
        return wp_tasks.echo(**item)
    if isinstance(item, (str, bytes)) or not hasattr(item, "__iter__"):
        return wp_tasks.echo(item)
    return wp_tasks.echo(*item)  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk_size", [1, 4, None])
@pytest.mark.parametrize("pass_worker_id", [False, True])
def test_every_shape_is_called_by_mpires_rule(method: str, chunk_size: int | None, pass_worker_id: bool) -> None:
    with shoal.WorkerPool(2, start_method=method, pass_worker_id=pass_worker_id) as pool:
        got = pool.map(wp_tasks.echo, SHAPES, chunk_size=chunk_size)
    if pass_worker_id:
        assert {g[0][0] for g in got} <= {0, 1}
        got = [((*g[0][1:],), g[1]) for g in got]
    assert got == [expected(item) for item in SHAPES]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("items", [list(range(40)), [(i, i) for i in range(40)], [{"x": i} for i in range(40)]])
def test_chunks_of_one_shape(items: list[object]) -> None:
    with shoal.WorkerPool(2, start_method="fork") as pool:
        got = pool.map(wp_tasks.echo, items, chunk_size=7)
        assert got == [expected(item) for item in items]
        assert sorted(map(repr, pool.map_unordered(wp_tasks.echo, items, chunk_size=7))) == sorted(map(repr, got))


@pytest.mark.timeout(60)
def test_numpy_rows_are_one_argument() -> None:
    array = np.arange(12).reshape(6, 2)
    with shoal.WorkerPool(2, start_method="fork") as pool:
        # A list of arrays: each array is one argument, not unpacked.
        got = pool.map(wp_tasks.shape_of, list(array), chunk_size=2)
    assert got == [(2,)] * 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk_size", [1, 10])
def test_failure_mid_chunk_raises_its_own_error(chunk_size: int) -> None:
    with shoal.WorkerPool(2, start_method="fork", keep_alive=True) as pool:
        with pytest.raises(wp_tasks.CustomError, match="bad item 5"):
            pool.map(wp_tasks.fail_on_five, range(10), chunk_size=chunk_size)
        with pytest.raises(wp_tasks.CustomError, match="bad item 5"):
            pool.map_unordered(wp_tasks.fail_on_five, [(i,) for i in range(10)], chunk_size=chunk_size)
        # The pool goes on.
        assert pool.map(wp_tasks.square, range(20), chunk_size=chunk_size) == [i * i for i in range(20)]


@pytest.mark.timeout(60)
def test_many_tiny_tasks_collected_in_order() -> None:
    with shoal.WorkerPool(2, start_method="fork") as pool:
        assert pool.map(wp_tasks.square, range(20_000)) == [i * i for i in range(20_000)]


class Number(int):
    """An int subclass: not one of the exact types a chunk's shape is read from."""


def test_the_shape_of_a_chunk_is_read_by_exact_type() -> None:
    from shoal import _shoal

    one, tuples, mixed = _shoal.SHAPE_ONE, _shoal.SHAPE_TUPLES, _shoal.SHAPE_MIXED
    assert _shoal.unpack_shape(range(5)) == one
    assert _shoal.unpack_shape([]) == one
    assert _shoal.unpack_shape([1, 2.5, None, True, "a", b"b"]) == one
    assert _shoal.unpack_shape([(1,), (), (2, 3)]) == tuples
    assert _shoal.unpack_shape([1, (1,)]) == mixed
    assert _shoal.unpack_shape([(1,), 1]) == mixed
    # Subclasses, and chunks that are not lists, go to the Python rule.
    assert _shoal.unpack_shape([(1, 2), Pair(1, 2)]) == mixed
    assert _shoal.unpack_shape([1, Number(2)]) == mixed
    assert _shoal.unpack_shape((1, 2)) == mixed


@pytest.mark.timeout(60)
def test_a_chunk_of_subclasses_is_called_by_mpires_rule() -> None:
    items = [Number(i) for i in range(6)] + [Pair(1, 2), (3, 4)]
    with shoal.WorkerPool(2, start_method="fork") as pool:
        got = pool.map(wp_tasks.echo, items, chunk_size=8)
    assert got == [expected(item) for item in items]
