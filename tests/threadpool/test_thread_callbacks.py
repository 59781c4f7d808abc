"""Callbacks run in this process, once, with the result, as in the stdlib."""

from __future__ import annotations

import threading

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)


def test_callback_gets_the_result_object(tpool: shoal.ThreadPool) -> None:
    value = object()
    got: list[object] = []
    done = threading.Event()

    def on_result(v: object) -> None:
        got.append(v)
        done.set()

    r = tpool.apply_async(lambda: value, callback=on_result)
    assert done.wait(30)
    assert r.get(timeout=30) is value
    assert got == [value] and got[0] is value


def test_map_async_callback_gets_the_list(tpool: shoal.ThreadPool) -> None:
    got: list[list[int]] = []
    done = threading.Event()

    def on_result(v: list[int]) -> None:
        got.append(v)
        done.set()

    tpool.map_async(lambda x: x + 1, range(5), callback=on_result)
    assert done.wait(30)
    assert got == [[1, 2, 3, 4, 5]]


def test_a_callback_may_submit_more_work(tpool: shoal.ThreadPool) -> None:
    second: list[shoal.AsyncResult[int]] = []
    submitted = threading.Event()

    def on_result(v: int) -> None:
        second.append(tpool.apply_async(abs, (-v,)))
        submitted.set()

    tpool.apply_async(abs, (5,), callback=on_result)
    assert submitted.wait(30)
    assert second[0].get(timeout=30) == 5


def test_callbacks_have_run_when_join_returns() -> None:
    got: list[int] = []
    p = shoal.ThreadPool(2)
    for i in range(50):
        p.apply_async(abs, (i,), callback=got.append)
    p.close()
    p.join()
    assert sorted(got) == list(range(50))
