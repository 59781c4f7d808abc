"""Chunks of plain ints or floats, and single plain numbers or short tuples
of them, travel packed (crates/shoal-py/src/packed.rs): the values, their
types and their order come back exactly as sent."""

from __future__ import annotations

import enum
import math
import struct

import pytest

import shoal
import tasks
from shoal import _shoal
from shoal._pickling import dumps_chunk, dumps_many, dumps_one, loads_chunk, loads_one

pytestmark = pytest.mark.timeout(60)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


class Colour(enum.IntEnum):
    RED = 1


def _same(a: list, b: list) -> bool:
    """Equal item by item, with the same types; NaN equals NaN, and -0.0
    differs from 0.0."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if struct.pack("<d", x) != struct.pack("<d", y):
                return False
        elif x != y:
            return False
    return True


CASES = {
    "ints": ([0, 1, -1, 256, 257, -5, -6, I64_MIN, I64_MAX], b"q"),
    "floats": ([0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 5e-324], b"d"),
    "big int": ([1, I64_MAX + 1], b"\x80"),
    "small negative big int": ([1, I64_MIN - 1], b"\x80"),
    "bool among ints": ([1, True], b"\x80"),
    "IntEnum among ints": ([Colour.RED, 2], b"\x80"),
    "int among floats": ([1.0, 2], b"\x80"),
    "float among ints": ([1, 2.0], b"\x80"),
    "one item": ([7], b"\x80"),
    "empty": ([], b"\x80"),
    "strings": (["a", "b"], b"\x80"),
}


@pytest.mark.parametrize("name", CASES)
def test_round_trip_keeps_values_and_types(name: str) -> None:
    values, first = CASES[name]
    data = dumps_chunk(list(values))
    assert data[:1] == first
    assert _same(loads_chunk(data), values)
    assert _same(loads_chunk(memoryview(data)), values)


def test_a_packed_chunk_is_eight_bytes_a_value() -> None:
    assert len(dumps_chunk(list(range(1000)))) == 1 + 8 * 1000


def test_bad_packed_data_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a packed chunk"):
        _shoal.unpack_values(b"q123")
    with pytest.raises(ValueError, match="empty packed chunk"):
        _shoal.unpack_values(b"")


def test_map_and_imap_return_exact_values_and_types(pool: shoal.Pool) -> None:
    # Chunks of 4: some pack, some do not, and the order must hold across both.
    values: list = [1, 2, 3, 4, 5, True, 7, 8, 1.5, -0.0, math.nan, math.inf]
    values += [I64_MAX, I64_MAX + 1, 3, 4, Colour.RED, 1, 2, 3, I64_MIN, 0, 0, 0]
    assert _same(pool.map(tasks.identity, values, chunksize=4), values)
    assert _same(list(pool.imap(tasks.identity, iter(values), chunksize=4)), values)
    assert sorted(pool.imap_unordered(tasks.square, (i for i in range(10_000)))) == [i * i for i in range(10_000)]


def test_an_imap_keeps_no_length_of_a_chunk_it_has_decoded(pool: shoal.Pool) -> None:
    # Packed chunks of results are decoded on the engine's side, which
    # drops the length the iterator kept for each: a long imap keeps none.
    it = pool.imap(tasks.square, (i for i in range(5000)), chunksize=10)
    assert list(it) == [i * i for i in range(5000)]
    assert it._lazy.chunk_lens == {}


def test_a_failing_item_in_a_chunk_of_ints_fails_only_itself(pool: shoal.Pool) -> None:
    # A list, not a range, so the arguments travel packed too.
    it = pool.imap(tasks.fail_on(13), list(range(40)), chunksize=10)
    for i in range(13):
        assert next(it) == i * 10
    with pytest.raises(ValueError, match="bad item 13"):
        next(it)
    assert list(it) == [i * 10 for i in range(14, 40)]


ONE_CASES = {
    "int": (I64_MIN, b"i"),
    "float": (-0.0, b"f"),
    "nan": (math.nan, b"f"),
    "argument tuple": ((1, 2.5, I64_MAX), b"t"),
    "empty tuple": ((), b"t"),
    "16 items": (tuple(range(16)), b"t"),
    "17 items": (tuple(range(17)), b"\x80"),
    "big int": (I64_MAX + 1, b"\x80"),
    "bool": (True, b"\x80"),
    "IntEnum": (Colour.RED, b"\x80"),
    "tuple with a str": ((1, "a"), b"\x80"),
    "nested tuple": (((1, 2),), b"\x80"),
    "tuple of bool": ((1, False), b"\x80"),
    "None": (None, b"\x80"),
}


@pytest.mark.parametrize("name", ONE_CASES)
def test_one_value_round_trip_keeps_value_and_type(name: str) -> None:
    value, first = ONE_CASES[name]
    data = dumps_one(value)
    assert data[:1] == first
    for got in (loads_one(data), loads_one(memoryview(data))):
        if isinstance(value, tuple):
            assert type(got) is tuple
            assert _same(list(got), list(value))
        else:
            assert _same([got], [value])


def test_dumps_many_packs_only_when_every_item_packs() -> None:
    assert [d[:1] for d in dumps_many([1, 2.0, (3,)])] == [b"i", b"f", b"t"]
    assert [d[:1] for d in dumps_many([1, "a"])] == [b"\x80", b"\x80"]


def test_bad_packed_value_is_a_clear_error() -> None:
    for bad in (b"i123", b"t" + b"x" * 9, b"f"):
        with pytest.raises(ValueError, match="packed value"):
            _shoal.unpack_one(bad)


def test_apply_async_and_chunksize_one_keep_exact_values_and_types(pool: shoal.Pool) -> None:
    values = [v for v, _ in ONE_CASES.values()]
    got = [pool.apply_async(tasks.identity, (v,)).get(timeout=30) for v in values]
    assert _same(got, values)
    assert pool.apply_async(tasks.mul, (6, 7)).get(timeout=30) == 42
    assert pool.apply_async(tasks.mul, (1.5, 2)).get(timeout=30) == 3.0
    singles = [I64_MIN, 2.5, True, I64_MAX + 1, -0.0, Colour.RED]
    assert _same(list(pool.imap(tasks.identity, singles, chunksize=1)), singles)
    assert _same(pool.map(tasks.identity, singles, chunksize=1), singles)


def test_a_failing_task_with_packed_arguments_fails_only_itself(pool: shoal.Pool) -> None:
    with pytest.raises(ValueError, match="bad item 3"):
        pool.apply_async(tasks.fail_on(3), (3,)).get(timeout=30)
    assert pool.apply_async(tasks.fail_on(3), (4,)).get(timeout=30) == 40
    it = pool.imap(tasks.fail_on(2), [1, 2, 3], chunksize=1)
    assert next(it) == 10
    with pytest.raises(ValueError, match="bad item 2"):
        next(it)
    assert next(it) == 30
