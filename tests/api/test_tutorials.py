"""The classic multiprocessing tutorial programs, as behaviour tests."""

from __future__ import annotations

import threading

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def test_imap_yields_in_input_order_as_results_arrive(pool: shoal.Pool, gates) -> None:
    it = pool.imap(tasks.gated, [(gates.path(i), i) for i in range(4)])
    gates.open(1)
    # Item 1 is done but item 0 is not: imap holds it back.
    with pytest.raises(shoal.TimeoutError):
        it.next(timeout=0.2)
    gates.open(0)
    assert next(it) == 0
    assert next(it) == 1
    with pytest.raises(shoal.TimeoutError):
        it.next(timeout=0.1)
    gates.open(2)
    assert next(it) == 2
    gates.open(3)
    assert list(it) == [3]


def test_imap_unordered_yields_in_completion_order(pool: shoal.Pool, gates) -> None:
    it = pool.imap_unordered(tasks.gated, [(gates.path(i), i) for i in range(4)])
    got = []
    # Two workers run tasks 0 and 1 first; each finished task frees a worker
    # for the next one, so this is an order the pool can complete in.
    for i in (1, 0, 3, 2):
        gates.open(i)
        got.append(next(it))
    assert got == [1, 0, 3, 2]


def test_map_returns_only_when_all_are_done(pool: shoal.Pool, gates) -> None:
    r = pool.map_async(tasks.gated, [(gates.path(i), i) for i in range(4)], chunksize=1)
    for i in range(3):
        gates.open(i)
    r.wait(0.3)
    assert not r.ready()
    gates.open(3)
    assert r.get(timeout=30) == [0, 1, 2, 3]


def test_map_async_returns_at_once_and_wait_blocks(pool: shoal.Pool, gates) -> None:
    r = pool.map_async(tasks.gated, [(gates.path(0), "x")] * 3)
    assert not r.ready()
    with pytest.raises(ValueError, match="not ready"):
        r.successful()
    r.wait(timeout=0.2)
    assert not r.ready()
    gates.open(0)
    r.wait()
    assert r.ready() and r.successful()
    assert r.get() == ["x"] * 3


def test_apply_blocks_while_apply_async_does_not(pool: shoal.Pool, gates) -> None:
    r = pool.apply_async(tasks.wait_for, (gates.path("a"), "async"))
    assert not r.ready()
    done = threading.Event()
    out = []

    def call_apply() -> None:
        out.append(pool.apply(tasks.wait_for, (gates.path("b"), "sync")))
        done.set()

    t = threading.Thread(target=call_apply)
    t.start()
    assert not done.wait(0.3)  # apply is still blocked on its task
    gates.open("b")
    assert done.wait(30)
    t.join()
    assert out == ["sync"]
    gates.open("a")
    assert r.get(timeout=30) == "async"


def test_apply_async_callbacks_collect_every_result_by_close_join() -> None:
    p = shoal.Pool(2)
    got: list[int] = []
    errors: list[BaseException] = []
    for i in range(50):
        p.apply_async(tasks.square, (i,), callback=got.append, error_callback=errors.append)
    p.close()
    p.join()
    assert sorted(got) == [i * i for i in range(50)]
    assert errors == []


def test_starmap_async_keeps_each_chunk_on_one_worker(pool: shoal.Pool) -> None:
    a, b = range(40), range(40, 80)
    out = pool.starmap_async(tasks.pid_and_product, zip(a, b, strict=True), chunksize=5).get(timeout=30)
    assert [prod for _, prod in out] == [x * y for x, y in zip(a, b, strict=True)]
    for start in range(0, 40, 5):
        assert len({pid for pid, _ in out[start : start + 5]}) == 1


def test_an_exception_in_the_fifth_imap_item_stops_the_loop_there(pool: shoal.Pool) -> None:
    it = pool.imap(tasks.fail_on(4), range(10))
    seen = []
    with pytest.raises(ValueError, match="bad item 4"):
        for value in it:
            seen.append(value)
    assert seen == [0, 10, 20, 30]
    assert list(it) == [50, 60, 70, 80, 90]


def test_an_exception_inside_a_chunk_fails_only_its_item(pool: shoal.Pool) -> None:
    it = pool.imap(tasks.fail_on(4), range(10), chunksize=5)
    assert [next(it) for _ in range(4)] == [0, 10, 20, 30]
    with pytest.raises(ValueError):
        next(it)
    assert list(it) == [50, 60, 70, 80, 90]


def test_a_lambda_over_a_captured_variable(pool: shoal.Pool) -> None:
    k = 3
    assert pool.map(lambda x: x * k, range(10)) == [x * 3 for x in range(10)]


def test_closures_partials_and_nested_functions(pool: shoal.Pool) -> None:
    import functools

    def nested(x: int, y: int = 1) -> int:
        return x + y

    assert pool.map(functools.partial(nested, y=5), [1, 2]) == [6, 7]
    assert pool.apply(nested, (1,), {"y": 2}) == 3
    assert list(pool.imap(lambda x: (lambda: x)(), range(3))) == [0, 1, 2]
    # A lambda as an argument and as a result.
    assert pool.apply(lambda f: f(4), (lambda v: v + 1,)) == 5
    assert pool.apply(lambda: lambda: 42)() == 42


def test_fire_and_forget_apply_async_still_runs(tmp_path) -> None:
    # Nobody keeps the AsyncResults; the tasks must run anyway, as with
    # multiprocessing (a regression: dropped results used to skip queued tasks).
    p = shoal.Pool(2)
    for i in range(20):
        p.apply_async(tasks.touch, (str(tmp_path / f"done-{i}"),))
    p.map_async(tasks.touch, [str(tmp_path / f"mapped-{i}") for i in range(20)])
    p.close()
    p.join()
    assert len(list(tmp_path.iterdir())) == 40
