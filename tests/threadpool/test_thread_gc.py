"""Garbage collection of ThreadPool objects, as tests/memory/test_gc.py does
for the process pools: nothing in a cycle through them outlives a collection,
and the object table holds nothing once its pool and results are gone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import pytest

import shoal
from shoal import _handles

pytestmark = pytest.mark.timeout(120)

ROUNDS = 200


class Marker:
    """Something in the cycle a weak reference can watch."""


def survivors(make: Callable[[], Marker]) -> int:
    refs = [weakref.ref(make()) for _ in range(ROUNDS)]
    gc.collect()
    gc.collect()
    return sum(r() is not None for r in refs)


def test_a_result_in_a_cycle_is_collected(tpool: shoal.ThreadPool) -> None:
    def make() -> Marker:
        marker = Marker()
        r = tpool.apply_async(list, ((1, 2),))
        value = r.get(timeout=30)
        value.append((r, marker))
        return marker

    assert survivors(make) == 0


def test_a_caught_exception_does_not_keep_its_result_alive(tpool: shoal.ThreadPool) -> None:
    def fail() -> None:
        raise ValueError("x")

    def make() -> Marker:
        marker = Marker()
        r = tpool.apply_async(fail)
        try:
            r.get(timeout=30)
        except ValueError as exc:
            exc.marker = marker  # type: ignore[attr-defined]
            keep = exc  # noqa: F841 - the frame's locals now hold the exception
        return marker

    assert survivors(make) == 0


def test_arguments_and_results_are_let_go(tpool: shoal.ThreadPool) -> None:
    def make() -> Marker:
        marker = Marker()
        assert tpool.apply(lambda m: [m], (marker,))[0] is marker
        assert tpool.map(lambda m: m, [marker])[0] is marker
        return marker

    assert survivors(make) == 0


def test_a_dropped_pool_is_collected_with_what_it_held() -> None:
    def make() -> Marker:
        marker = Marker()
        p = shoal.ThreadPool(1)
        p.marker = marker  # type: ignore[attr-defined]
        p.apply(abs, (1,))
        # A result nobody reads: its object stays in the table until the
        # pool is gone.
        p.apply_async(lambda: marker)
        p.terminate()
        p.join()
        return marker

    refs = [weakref.ref(make()) for _ in range(20)]
    gc.collect()
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    assert not _handles._objects or all(k >> _handles._KEY_BITS != 0 for k in _handles._objects)
