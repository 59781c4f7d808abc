"""Garbage collection: no cycle through one of shoal's objects outlives
``gc.collect()``.

Each test makes many objects that sit in a reference cycle through the
class under test, drops every outside reference, collects, and counts how
many are still alive through weak references to a payload in the cycle.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable, Iterator

import pytest

import shoal
import tasks
from shoal import _shoal

pytestmark = pytest.mark.timeout(120)

ROUNDS = 300


class Marker:
    """Something in the cycle a weak reference can watch."""


@pytest.fixture(scope="module")
def gc_pool() -> Iterator[shoal.Pool]:
    with shoal.Pool(2) as p:
        p.apply(tasks.square, (1,))  # functions cached: the Rust fast path too
        yield p


def survivors(make: Callable[[], Marker]) -> int:
    """How many of ROUNDS markers, each kept alive only by a cycle that
    ``make`` built, survive a full collection."""
    refs = [weakref.ref(make()) for _ in range(ROUNDS)]
    gc.collect()
    gc.collect()
    return sum(r() is not None for r in refs)


def test_a_caught_task_exception_does_not_keep_its_result_alive(gc_pool: shoal.Pool) -> None:
    # The common `try: r.get() except E: pass`: the exception's traceback
    # holds this frame, whose locals hold the result, which holds the
    # exception.
    def make() -> Marker:
        marker = Marker()
        r = gc_pool.apply_async(tasks.fail_on(1), (1,))
        try:
            r.get(timeout=30)
        except ValueError as exc:
            exc.marker = marker  # type: ignore[attr-defined]
            keep = exc  # noqa: F841 - the frame's locals now hold the exception
        return marker

    assert survivors(make) == 0


def test_a_result_whose_value_refers_back_to_it_is_collected(gc_pool: shoal.Pool) -> None:
    def make() -> Marker:
        marker = Marker()
        r = gc_pool.apply_async(list, ((1, 2),))
        value = r.get(timeout=30)
        value.append((r, marker))  # result -> value -> result
        return marker

    assert survivors(make) == 0


def test_a_map_result_in_a_cycle_is_collected(gc_pool: shoal.Pool) -> None:
    def make() -> Marker:
        marker = Marker()
        r = gc_pool.map_async(tasks.square, range(4))
        value = r.get(timeout=30)
        value.append((r, marker))
        return marker

    assert survivors(make) == 0


def test_a_callback_that_refers_to_its_result_is_collected(gc_pool: shoal.Pool) -> None:
    # result -> callback -> closure cell -> result.
    def make() -> Marker:
        marker = Marker()
        box: list[object] = []

        def callback(_value: object) -> None:
            box.append(marker)

        r = gc_pool.apply_async(tasks.square, (3,), callback=callback)
        box.append(r)
        r.wait(timeout=30)
        return marker

    assert survivors(make) == 0


def test_a_failed_submission_in_a_cycle_is_collected(gc_pool: shoal.Pool) -> None:
    def make() -> Marker:
        marker = Marker()
        r = gc_pool.apply_async(tasks.square, (tasks.FaultOnPickle("error"),))
        try:
            r.get(timeout=30)
        except RuntimeError as exc:
            exc.marker = marker  # type: ignore[attr-defined]
            keep = exc  # noqa: F841
        return marker

    assert survivors(make) == 0


def test_an_iterator_in_a_cycle_is_collected(gc_pool: shoal.Pool) -> None:
    def make() -> Marker:
        marker = Marker()
        it = gc_pool.imap(tasks.square, range(3))
        assert list(it) == [0, 1, 4]
        it.marker = (it, marker)  # type: ignore[attr-defined]
        return marker

    assert survivors(make) == 0


def test_a_pool_in_a_cycle_is_collected() -> None:
    refs = []
    for _ in range(3):
        marker = Marker()
        p = shoal.Pool(1)
        assert p.apply(tasks.square, (2,)) == 4
        p.apply_async(tasks.square, (3,), callback=lambda _v, p=p, m=marker: (p, m)).wait(timeout=30)
        p.close()
        p.join()
        p.marker = (p, marker)  # type: ignore[attr-defined]
        refs.append(weakref.ref(marker))
        del p, marker
    gc.collect()
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_span_lives_exactly_as_long_as_its_views() -> None:
    # _shm frees a shared-memory block when its Span dies: a view taken of
    # it (numpy's, pickle's) must keep it alive, and the last one let go.
    fd = os.memfd_create("span-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 1 << 16)
        addr = _shoal.mmap_shared(fd, 1 << 16, 0)
        span = _shoal.Span(addr, 4096)
        dead = weakref.ref(span)
        view = memoryview(span)
        view[:3] = b"abc"
        del span
        gc.collect()
        assert dead() is not None
        assert os.pread(fd, 3, 0) == b"abc"
        view.release()
        del view
        assert dead() is None
        _shoal.munmap(addr, 1 << 16)
    finally:
        os.close(fd)


def test_joined_spans_share_their_pages() -> None:
    # WorkerPool.map's concatenation of numpy results (_shm.joined): the
    # pieces' pages mapped again end to end, in the order given, no copy.
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.memfd_create("joined-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 4 * page)
        addrs = [_shoal.mmap_shared(fd, page, k * page) for k in range(4)]
        spans = [_shoal.Span(a, page) for a in addrs]
        for k, s in enumerate(spans):
            memoryview(s)[:1] = bytes([k + 1])
        # The last piece may be part of a page.
        parts = [(spans[k], addrs[k], page if k != 3 else 10) for k in (2, 0, 3)]
        addr, mapped = _shoal.join_spans(parts)
        assert mapped == 3 * page
        view = memoryview(_shoal.Span(addr, 2 * page + 10))
        assert [view[i * page] for i in range(3)] == [3, 1, 4]
        view[page] = 42  # the same pages: written through to the file
        assert os.pread(fd, 1, 0) == b"\x2a"
        view.release()
        _shoal.munmap(addr, mapped)
        with pytest.raises(ValueError, match="whole number of pages"):
            _shoal.join_spans([(spans[0], addrs[0], 10), (spans[1], addrs[1], page)])
        with pytest.raises(ValueError, match="start"):
            _shoal.join_spans([(spans[0], addrs[0] + 8, page)])
        for a in addrs:
            _shoal.munmap(a, page)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def gc_executor() -> Iterator[shoal.Executor]:
    with shoal.Executor(2) as ex:
        ex.submit(tasks.square, 1).result()  # functions cached: the Rust fast path too
        yield ex


def test_a_submitted_future_is_hidden_from_the_collector_until_it_can_hold_a_cycle(
    gc_executor: shoal.Executor,
) -> None:
    waited = gc_executor.submit(tasks.square, 2)
    assert not gc.is_tracked(waited)
    assert waited.result(timeout=30) == 4
    assert gc.is_tracked(waited)
    called = gc_executor.submit(tasks.square, 3)
    assert not gc.is_tracked(called)
    called.add_done_callback(lambda _f: None)
    assert gc.is_tracked(called)


def test_a_future_in_a_cycle_through_its_callback_is_collected(gc_executor: shoal.Executor) -> None:
    def make() -> Marker:
        marker = Marker()
        future = gc_executor.submit(tasks.square, 3)
        future.marker = marker  # type: ignore[attr-defined]
        future.add_done_callback(lambda _f: future)  # future -> callback -> future
        future.result(timeout=30)
        return marker

    assert survivors(make) == 0


def test_a_failed_future_whose_traceback_holds_it_is_collected(gc_executor: shoal.Executor) -> None:
    def make() -> Marker:
        marker = Marker()
        future = gc_executor.submit(tasks.fail_on(1), 1)
        future.marker = marker  # type: ignore[attr-defined]
        try:
            future.result(timeout=30)
        except ValueError as exc:
            keep = exc  # noqa: F841 - the frame (in the traceback) holds the future
        return marker

    assert survivors(make) == 0


def test_a_future_awaited_through_asyncio_is_collected(gc_executor: shoal.Executor) -> None:
    import asyncio

    def make() -> Marker:
        marker = Marker()

        async def main() -> None:
            future = gc_executor.submit(tasks.square, 3)
            future.marker = marker  # type: ignore[attr-defined]
            future.me = future  # type: ignore[attr-defined] - a cycle, read below
            assert await future == 9

        asyncio.run(main())
        return marker

    assert survivors(make) == 0
