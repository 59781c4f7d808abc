"""A task's exception reaches the caller as itself, with its traceback."""

from __future__ import annotations

import threading
import traceback

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)


class Custom(Exception):
    def __init__(self, a: int, b: int) -> None:  # not its args: would not unpickle
        super().__init__(f"{a}-{b}")


def fail_with(exc: BaseException) -> None:
    raise exc


def test_the_exception_object_itself(tpool: shoal.ThreadPool) -> None:
    exc = Custom(1, 2)
    with pytest.raises(Custom) as info:
        tpool.apply(fail_with, (exc,))
    assert info.value is exc
    assert info.value.__cause__ is None  # no RemoteTraceback: as ThreadPool
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "fail_with" in frames


def test_a_cause_set_by_the_task_is_kept(tpool: shoal.ThreadPool) -> None:
    def chained() -> None:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("outer") from inner

    with pytest.raises(ValueError) as info:
        tpool.apply(chained)
    assert isinstance(info.value.__cause__, KeyError)


def test_map_raises_the_first_failure(tpool: shoal.ThreadPool) -> None:
    with pytest.raises(ZeroDivisionError):
        tpool.map(lambda x: 1 / x, [1, 2, 0, 4], chunksize=2)


def test_imap_raises_at_the_failing_item_and_goes_on(tpool: shoal.ThreadPool) -> None:
    it = tpool.imap(lambda x: 10 // x, [5, 0, 2])
    assert next(it) == 2
    with pytest.raises(ZeroDivisionError):
        next(it)
    assert next(it) == 5


def test_system_exit_fails_only_its_task(tpool: shoal.ThreadPool) -> None:
    r = tpool.apply_async(fail_with, (SystemExit(3),))
    with pytest.raises(SystemExit):
        r.get(timeout=30)
    assert tpool.apply(abs, (-2,)) == 2  # the worker thread lives on


def test_error_callback_gets_the_exception(tpool: shoal.ThreadPool) -> None:
    exc = Custom(3, 4)
    got: list[BaseException] = []
    done = threading.Event()

    def on_error(e: BaseException) -> None:
        got.append(e)
        done.set()

    tpool.apply_async(fail_with, (exc,), error_callback=on_error)
    assert done.wait(30)
    assert got == [exc] and got[0] is exc


def test_a_failing_initializer_fails_the_tasks_with_its_error() -> None:
    def init() -> None:
        raise Custom(5, 6)

    p = shoal.ThreadPool(2, initializer=init)
    try:
        with pytest.raises(Custom, match="5-6"):
            p.apply_async(abs, (1,)).get(timeout=30)
    finally:
        p.terminate()
        p.join()


def test_an_initializer_that_exits_becomes_an_error_that_says_so() -> None:
    p = shoal.ThreadPool(1, initializer=fail_with, initargs=(SystemExit(2),))
    try:
        with pytest.raises(RuntimeError, match="initializer"):
            p.apply_async(abs, (1,)).get(timeout=30)
    finally:
        p.terminate()
        p.join()
