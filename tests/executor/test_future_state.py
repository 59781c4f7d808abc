"""ShoalFuture's own state handling: its condition is made only when
something waits, on the lock that guards its state, so a first waiter
racing the callback thread's completion can never miss the wake-up, and
``wait``/``as_completed`` work on futures that finished before anyone
waited. A future takes its outcome from the engine when asked, or on
arrival once something waits on it."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import weakref
from typing import Any

import pytest

import shoal
from shoal.executor import ShoalFuture

pytestmark = pytest.mark.timeout(60)


def test_a_future_is_a_real_future_with_no_condition_until_waited_on() -> None:
    future: ShoalFuture[int] = ShoalFuture()
    assert isinstance(future, cf.Future)
    assert future._cond is None
    assert not future.done() and not future.running() and not future.cancelled()
    with pytest.raises(TimeoutError):
        future.result(timeout=0)
    assert future._cond is not None  # a waiter made it
    future.set_result(3)
    assert future.result() == 3 and future.exception() is None


def test_completing_twice_raises_invalid_state_as_the_stdlib_does() -> None:
    future: ShoalFuture[int] = ShoalFuture()
    future.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        future.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        future.set_exception(ValueError())
    assert future.result() == 1


def test_an_exception_is_raised_by_result_and_given_by_exception() -> None:
    future: ShoalFuture[int] = ShoalFuture()
    error = ValueError("boom")
    future.set_exception(error)
    assert future.exception() is error
    with pytest.raises(ValueError, match="boom"):
        future.result()


def test_done_callbacks_run_once_on_completion_or_at_once_when_done(caplog: pytest.LogCaptureFixture) -> None:
    future: ShoalFuture[int] = ShoalFuture()
    seen: list[Any] = []
    future.add_done_callback(lambda f: seen.append(("before", f.result())))

    def bad(_f: cf.Future[int]) -> None:
        raise RuntimeError("callback failed")

    future.add_done_callback(bad)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        future.set_result(5)
    assert "exception calling callback" in caplog.text
    future.add_done_callback(lambda f: seen.append(("after", f.result())))
    assert seen == [("before", 5), ("after", 5)]


def _wait_for(waiter: str, future: ShoalFuture[int], barrier: threading.Barrier, got: list[Any]) -> None:
    """Meet the completing thread at ``barrier``, then wait as ``waiter`` says."""
    barrier.wait()
    try:
        if waiter == "result":
            got.append(future.result())
        elif waiter == "exception":
            got.append(future.exception())
        elif waiter == "wait":
            got.append(cf.wait([future]).done == {future})
        else:
            got.append(list(cf.as_completed([future])) == [future])
    except cf.CancelledError:
        got.append("cancelled")


@pytest.mark.parametrize("waiter", ["result", "exception", "wait", "as_completed"])
def test_a_first_waiter_racing_completion_always_wakes(waiter: str) -> None:
    # The waiter makes the condition while this thread completes: each
    # round lines both up on a barrier, so the two steps overlap in every
    # order over the rounds. A lost wake-up would hang (the test's timeout).
    for i in range(300):
        future: ShoalFuture[int] = ShoalFuture()
        barrier = threading.Barrier(2)
        got: list[Any] = []
        thread = threading.Thread(target=_wait_for, args=(waiter, future, barrier, got))
        thread.start()
        barrier.wait()
        future.set_result(i)
        thread.join()
        assert got == [{"result": i, "exception": None}.get(waiter, True)]


def test_a_waiter_racing_cancellation_wakes() -> None:
    for _ in range(300):
        future: ShoalFuture[int] = ShoalFuture()
        barrier = threading.Barrier(2)
        got: list[Any] = []
        thread = threading.Thread(target=_wait_for, args=("result", future, barrier, got))
        thread.start()
        barrier.wait()
        assert future.cancel()
        thread.join()
        assert got == ["cancelled"]


def test_wait_and_as_completed_on_futures_done_before_anyone_waited(executor: shoal.Executor) -> None:
    finished = threading.Semaphore(0)
    futures = [executor.submit(abs, -i) for i in range(200)]
    for future in futures:
        future.add_done_callback(lambda _f: finished.release())
    for _ in futures:
        assert finished.acquire(timeout=30)
    # Nothing waited, so none made a condition; wait and as_completed
    # lock every future all the same, and find them done.
    assert all(f._cond is None for f in futures)
    done, not_done = cf.wait(futures, timeout=30)
    assert done == set(futures) and not not_done
    assert set(cf.as_completed(futures, timeout=30)) == set(futures)
    assert all(f._cond is None for f in futures)
    assert sorted(f.result() for f in futures) == list(range(200))


def test_wait_and_as_completed_keep_nothing_on_futures_done_before_they_began(executor: shoal.Executor) -> None:
    # A done future's waiters would never be told anything: wait and
    # as_completed add and remove theirs on each future all the same, and a
    # done one keeps none, and makes no lock or condition for them.
    done = [executor.submit(abs, -i) for i in range(50)]
    assert [f.result(timeout=30) for f in done] == list(range(50))
    made = [(f._lk, f._cond) for f in done]  # result() makes them if it waited
    pending: ShoalFuture[int] = ShoalFuture()
    waited = threading.Event()

    def finish_later() -> None:
        waited.wait(30)
        pending.set_result(-1)

    t = threading.Thread(target=finish_later)
    t.start()
    seen = []
    for f in cf.as_completed([*done, pending], timeout=30):
        seen.append(f)
        if len(seen) == len(done):
            waited.set()
    t.join(30)
    assert seen[-1] is pending and set(seen[:-1]) == set(done)
    result = cf.wait([*done, pending], timeout=30)
    assert not result.not_done
    assert pending._w == []  # its waiters were taken off again
    assert all(f._w is None for f in done)
    assert [(f._lk, f._cond) for f in done] == made


def test_wait_first_completed_over_done_and_running_futures(executor: shoal.Executor) -> None:
    gate = threading.Event()
    done_one = executor.submit(abs, -1)
    assert done_one.result(timeout=30) == 1
    pending: ShoalFuture[int] = ShoalFuture()
    result = cf.wait([done_one, pending], return_when=cf.FIRST_COMPLETED, timeout=30)
    assert result.done == {done_one} and result.not_done == {pending}
    # The pending one is completed while as_completed waits on it.
    threading.Timer(0, lambda: (gate.wait(30), pending.set_result(7))).start()
    order = []
    for f in cf.as_completed([done_one, pending], timeout=30):
        order.append(f)
        gate.set()
    assert order == [done_one, pending] and pending.result() == 7


def test_the_condition_of_a_done_future_can_be_held_and_waited_on() -> None:
    future: ShoalFuture[int] = ShoalFuture()
    future.set_result(1)
    with future._condition as held:
        assert held
        assert future._condition.wait(0)
        future._condition.notify_all()
    # A condition made while pending stays the one given after completion.
    other: ShoalFuture[int] = ShoalFuture()
    cond = other._condition
    other.set_result(2)
    assert other._condition is cond


def test_a_future_lets_its_job_result_go_once_read(executor: shoal.Executor) -> None:
    futures = [executor.submit(abs, -i) for i in range(100)]
    cf.wait(futures, timeout=30)
    assert all(f._shoal_result is None for f in futures)
    bad = executor.submit(abs, threading.Lock())  # cannot be pickled: fails here
    assert bad.done() and type(bad.exception()) is TypeError
    assert bad._shoal_result is None


def _wait_on_the_engine(waiter: str, future: ShoalFuture[int], expected: int) -> None:
    if waiter == "result":
        assert future.result(timeout=30) == expected
    elif waiter == "exception":
        assert future.exception(timeout=30) is None
    elif waiter == "wait":
        assert cf.wait([future], timeout=10).done == {future}
    elif waiter == "wait_first":
        assert cf.wait([future], timeout=10, return_when=cf.FIRST_EXCEPTION).done == {future}
    elif waiter == "as_completed":
        assert list(cf.as_completed([future], timeout=30)) == [future]
    else:
        called = threading.Event()
        future.add_done_callback(lambda _f: called.set())
        assert called.wait(30)
    assert future.done() and future.result() == expected


@pytest.mark.parametrize("waiter", ["result", "exception", "wait", "wait_first", "as_completed", "add_done_callback"])
def test_a_first_waiter_racing_the_outcome_s_arrival_always_wakes(executor: shoal.Executor, waiter: str) -> None:
    # Right after submit, the outcome arrives while the waiter arms the
    # future: before, during or after, over the rounds. A lost wake-up
    # would hang (the test's timeout); so would a state that changed while
    # wait() held the future's condition (it reads it twice: a future
    # completed between the reads was waited for, 2 to 4 times in 20,000
    # rounds, before _state stopped taking outcomes under its lock).
    for i in range(2000):
        _wait_on_the_engine(waiter, executor.submit(abs, -i), i)


def test_an_outcome_waits_in_the_engine_until_the_future_is_asked(executor: shoal.Executor) -> None:
    future = executor.submit(abs, -4)
    result = future._shoal_result
    assert result is not None
    result.wait(30)  # arrived, and taken by its JobResult, not by the future
    assert future._st == cf._base.PENDING and future._shoal_result is result
    assert future.done() and future.result() == 4
    assert future._shoal_result is None  # the JobResult is let go once read


def test_futures_dropped_unasked_are_collected(executor: shoal.Executor) -> None:
    futures = [executor.submit(abs, -i) for i in range(500)]
    for future in futures:
        assert future._shoal_result is not None
        future._shoal_result.wait(30)  # done in the engine; the future is never asked
    refs = [weakref.ref(f) for f in futures]
    del futures, future
    assert all(ref() is None for ref in refs)
