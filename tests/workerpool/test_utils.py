"""shoal.utils: MPIRE's chunk_tasks and make_single_arguments, with the
outputs MPIRE's documentation and implementation give."""

from __future__ import annotations

import types

import numpy as np
import pytest

from shoal.utils import chunk_tasks, make_single_arguments


def test_chunk_size() -> None:
    assert list(chunk_tasks(range(10), chunk_size=3)) == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]


def test_fractional_chunk_size_carries_its_remainder() -> None:
    assert list(chunk_tasks(range(10), chunk_size=2.5)) == [(0, 1, 2), (3, 4), (5, 6, 7), (8, 9)]
    # Below one, every chunk still holds one task.
    assert list(chunk_tasks(range(3), chunk_size=0.5)) == [(0,), (1,), (2,)]


def test_n_splits() -> None:
    assert list(chunk_tasks(range(10), n_splits=3)) == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert list(chunk_tasks(range(11), n_splits=4)) == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10)]


def test_iterable_len_caps_a_generator() -> None:
    read: list[int] = []

    def gen() -> types.GeneratorType:  # type: ignore[type-arg]
        for i in range(100):
            read.append(i)
            yield i

    assert list(chunk_tasks(gen(), iterable_len=7, chunk_size=3)) == [(0, 1, 2), (3, 4, 5), (6,)]
    assert read == list(range(7))  # nothing past the cap is read
    assert list(chunk_tasks(gen(), iterable_len=6, n_splits=2)) == [(0, 1, 2), (3, 4, 5)]


def test_numpy_arrays_are_sliced_into_row_blocks() -> None:
    arr = np.arange(20).reshape(10, 2)
    chunks = list(chunk_tasks(arr, n_splits=4))
    assert [c.shape for c in chunks] == [(3, 2), (2, 2), (3, 2), (2, 2)]
    assert all(isinstance(c, np.ndarray) for c in chunks)
    assert np.array_equal(np.concatenate(chunks), arr)
    assert [c.shape for c in chunk_tasks(arr, iterable_len=5, chunk_size=2)] == [(2, 2), (2, 2), (1, 2)]


def test_errors_come_when_the_first_chunk_is_asked_for() -> None:
    chunks = chunk_tasks(range(3))  # a generator, as MPIRE's: nothing checked yet
    with pytest.raises(ValueError, match="chunk_size and n_splits cannot both be None"):
        next(chunks)
    with pytest.raises(ValueError, match="iterable_len"):
        next(chunk_tasks(iter(range(3)), n_splits=2))


def test_make_single_arguments() -> None:
    made = make_single_arguments(range(3))
    assert isinstance(made, types.GeneratorType)
    assert list(made) == [(0,), (1,), (2,)]
    assert make_single_arguments([(1, 2), {"a": 1}], generator=False) == [((1, 2),), ({"a": 1},)]
