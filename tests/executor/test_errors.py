"""Errors as ProcessPoolExecutor gives them, and what it cannot do: a dead
worker fails only its future, a deadline kills only its task."""

from __future__ import annotations

import multiprocessing.pool
import pickle
import signal
import sys
import threading
import traceback
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def test_a_task_exception_keeps_its_type_with_the_remote_traceback_as_cause(executor: shoal.Executor) -> None:
    future = executor.submit(tasks.nested_failure, 5)
    exc = future.exception()
    assert type(exc) is KeyError and exc.args == ("missing 5",)
    assert type(exc.__cause__) is _RemoteTraceback
    assert "def inner" not in exc.__cause__.tb and "in inner" in exc.__cause__.tb
    text = "".join(traceback.format_exception(exc))
    assert "in inner" in text and "The above exception was the direct cause" in text


def test_a_map_item_error_has_the_same_cause(executor: shoal.Executor) -> None:
    with pytest.raises(ValueError) as info:
        list(executor.map(tasks.fail_on(2), range(4)))
    assert type(info.value.__cause__) is _RemoteTraceback


def test_system_exit_comes_back_as_itself(executor: shoal.Executor) -> None:
    with pytest.raises(SystemExit) as info:
        executor.submit(sys.exit, 3).result()
    assert info.value.code == 3
    assert executor.submit(tasks.square, 2).result() == 4


# ProcessPoolExecutor (3.11 to 3.13) fails the future of an argument or a
# result that cannot be pickled with the pickling error itself, its
# traceback as a _RemoteTraceback cause.


@pytest.mark.parametrize("arg", [tasks.FaultOnPickle("error"), threading.Lock()])
def test_an_argument_that_cannot_be_pickled_fails_through_the_future(executor: shoal.Executor, arg: object) -> None:
    future = executor.submit(tasks.identity, arg)
    exc = future.exception(timeout=0)
    assert isinstance(exc, RuntimeError if isinstance(arg, tasks.FaultOnPickle) else TypeError)
    assert type(exc.__cause__) is _RemoteTraceback
    assert "Traceback (most recent call last)" in exc.__cause__.tb
    assert executor.submit(tasks.square, 2).result() == 4


def test_a_result_that_cannot_be_pickled_fails_its_future_with_the_pickling_error(executor: shoal.Executor) -> None:
    exc = executor.submit(tasks.unpicklable_result, None).exception()
    assert type(exc) is TypeError and "pickle" in str(exc)
    assert type(exc.__cause__) is _RemoteTraceback
    assert "dumps" in exc.__cause__.tb  # where pickling failed, in the worker
    with pytest.raises(TypeError, match="pickle"):
        list(executor.map(tasks.unpicklable_result, range(3)))


@pytest.mark.parametrize(("action", "error"), [("error", RuntimeError), ("exit", SystemExit)])
def test_an_error_while_pickling_the_result_is_raised_as_itself(
    executor: shoal.Executor, action: str, error: type[BaseException]
) -> None:
    # As ProcessPoolExecutor does (test_concurrent_futures' test_error_during_result_pickle_on_worker).
    with pytest.raises(error):
        executor.submit(tasks.return_fault_on_pickle, action).result()
    assert executor.submit(tasks.square, 3).result() == 9


def test_pool_still_reports_an_unpicklable_result_as_maybe_encoding_error(gates) -> None:
    with shoal.Pool(1) as pool:
        with pytest.raises(multiprocessing.pool.MaybeEncodingError) as info:
            pool.apply(tasks.unpicklable_result, (None,))
        assert "pickle" in info.value.exc and "dumps" in info.value.__cause__.tb


def test_an_error_while_unpickling_the_task_fails_only_its_future(executor: shoal.Executor) -> None:
    # The stdlib breaks the whole pool here (BrokenProcessPool).
    with pytest.raises(RuntimeError, match="fault injected"):
        executor.submit(tasks.identity, tasks.FaultOnUnpickle("error")).result()
    assert executor.submit(tasks.square, 3).result() == 9


@pytest.mark.parametrize(
    ("action", "exitcode", "sig"),
    [("os_exit", 7, None), ("sigkill", None, signal.SIGKILL), ("segfault", None, signal.SIGSEGV)],
)
def test_a_dead_worker_fails_only_its_future_with_a_broken_process_pool_error(
    executor: shoal.Executor, action: str, exitcode: int | None, sig: int | None
) -> None:
    others = [executor.submit(tasks.square, i) for i in range(20)]
    doomed = executor.submit(tasks.run_fault, action)
    exc = doomed.exception()
    assert isinstance(exc, shoal.WorkerLostError)
    assert isinstance(exc, BrokenProcessPool)  # except clauses written for the stdlib catch it
    assert (exc.exitcode, exc.signal) == (exitcode, sig)
    assert [f.result() for f in others] == [i * i for i in range(20)]
    # Replaced: the executor goes on.
    assert list(executor.map(tasks.square, range(10))) == [i * i for i in range(10)]


def test_worker_lost_error_pickles_with_its_attributes() -> None:
    exc = shoal.WorkerLostError("gone", 12, None, 9)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is shoal.WorkerLostError and (back.pid, back.signal) == (12, 9)
    assert issubclass(shoal.TaskTimeoutError, TimeoutError)
    assert issubclass(shoal.TaskTimeoutError, shoal.WorkerLostError)


def test_schedule_timeout_kills_a_task_stuck_in_c_code_and_the_executor_goes_on(gates) -> None:
    with shoal.Executor(2) as ex:
        stuck = ex.schedule(tasks.started_then_block_in_c, args=(gates.path("s"),), timeout=0.5)
        other = ex.schedule(tasks.mul, args=(6,), kwargs={"b": 7}, timeout=30)
        with pytest.raises(TimeoutError) as info:
            stuck.result()
        assert isinstance(info.value, shoal.TaskTimeoutError)
        assert info.value.signal == signal.SIGKILL
        assert "timeout of 0.500 s" in str(info.value)
        assert other.result() == 42
        assert ex.submit(tasks.square, 5).result() == 25


def test_task_timeout_applies_to_submit_and_map(gates) -> None:
    with shoal.Executor(2, task_timeout=0.5) as ex:
        stuck = ex.submit(tasks.started_then_block_in_c, gates.path("s"))
        assert isinstance(stuck.exception(), shoal.TaskTimeoutError)
        results = ex.map(tasks.started_then_block_in_c, [gates.path("m")])
        with pytest.raises(shoal.TaskTimeoutError):
            next(results)
        assert list(ex.map(tasks.square, range(5))) == [0, 1, 4, 9, 16]


def test_schedule_refuses_a_bad_timeout(executor: shoal.Executor) -> None:
    with pytest.raises(ValueError):
        executor.schedule(tasks.square, (1,), timeout=0)


def test_futures_of_terminated_workers_end_cancelled_or_terminated(gates) -> None:
    for stop in ("terminate_workers", "kill_workers"):
        ex = shoal.Executor(1)
        running = ex.submit(tasks.started_then_block_in_c, gates.path(stop))
        queued = [ex.submit(tasks.square, i) for i in range(5)]
        tasks.wait_for(gates.path(stop))
        getattr(ex, stop)()
        with pytest.raises(shoal.PoolTerminatedError):
            running.result()
        assert all(f.cancelled() for f in queued)
        with pytest.raises(RuntimeError):
            ex.submit(tasks.square, 1)
        ex.shutdown(wait=True)  # returns: the workers are gone
        assert ex._processes is None
