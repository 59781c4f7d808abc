"""The crash matrix: an error, an exit or a crash at every stage of a task's
life, under every start method. Each case fails exactly the task it hit,
with the error it should; the other tasks of the same call complete; and
the same pool then runs a normal map correctly.

In the spirit of CPython's test_concurrent_futures/test_deadlock.py and
loky's crash cases. A crash in the parent itself (a segfault while pickling
or unpickling there) kills the caller's own process and is not a case.
"""

from __future__ import annotations

import multiprocessing.pool
import signal
import time

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def lost(exitcode: int | None = None, sig: int | None = None):
    def check(exc: BaseException) -> None:
        assert isinstance(exc, shoal.WorkerLostError), repr(exc)
        assert exc.exitcode == exitcode and exc.signal == sig, (exc.exitcode, exc.signal, str(exc))
        assert f"process {exc.pid}" in str(exc)
        assert ("signal" if sig else "exit code") in str(exc)

    return check


def remote(kind: type[BaseException]):
    def check(exc: BaseException) -> None:
        assert type(exc) is kind, repr(exc)
        assert type(exc.__cause__) is multiprocessing.pool.RemoteTraceback

    return check


def is_a(kind: type[BaseException]):
    def check(exc: BaseException) -> None:
        assert isinstance(exc, kind), repr(exc)

    return check


# (stage, action) -> what the failing task raises. Stages run in the worker
# unless named "parent".
WORKER_CRASHES = {
    "os_exit": lost(exitcode=7),
    "segfault": lost(sig=signal.SIGSEGV),
    "sigkill": lost(sig=signal.SIGKILL),
    "sigterm": lost(sig=signal.SIGTERM),
}
CASES = {
    ("unpickle task", "error"): remote(RuntimeError),
    ("unpickle task", "exit"): remote(SystemExit),
    **{("unpickle task", a): c for a, c in WORKER_CRASHES.items()},
    ("run", "error"): remote(RuntimeError),
    ("run", "exit"): remote(SystemExit),
    ("run", "keyboard_interrupt"): remote(KeyboardInterrupt),
    ("run", "base_exception"): remote(tasks.CustomBase),
    **{("run", a): c for a, c in WORKER_CRASHES.items()},
    ("pickle result", "error"): is_a(multiprocessing.pool.MaybeEncodingError),
    ("pickle result", "exit"): is_a(multiprocessing.pool.MaybeEncodingError),
    **{("pickle result", a): c for a, c in WORKER_CRASHES.items()},
    ("unpickle result in parent", "error"): is_a(RuntimeError),
    ("unpickle result in parent", "exit"): is_a(shoal.RemoteUnpicklingError),
}


def call_for(stage: str, action: str):
    """The (function, argument) whose task faults at ``stage``."""
    if stage == "unpickle task":
        return tasks.identity, tasks.FaultOnUnpickle(action)
    if stage == "run":
        return tasks.run_fault, action
    if stage == "pickle result":
        return tasks.return_fault_on_pickle, action
    if stage == "unpickle result in parent":
        return tasks.return_fault_on_unpickle, action
    raise AssertionError(stage)


@pytest.mark.parametrize(("stage", "action"), list(CASES), ids=[f"{s}-{a}" for s, a in CASES])
def test_fault_fails_only_its_task(pool: shoal.Pool, stage: str, action: str) -> None:
    check = CASES[stage, action]
    func, bad = call_for(stage, action)

    # imap: the error comes at the bad item's position; the rest arrive.
    items = [1, 2, bad, 4, 5]

    def fn(x):
        return x if isinstance(x, int) else func(x)

    it = pool.imap(fn, items)
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(BaseException) as info:
        next(it)
    check(info.value)
    assert list(it) == [4, 5]

    # apply_async: that one result fails; error_callback sees it.
    seen: list[BaseException] = []
    r = pool.apply_async(func, (bad,), error_callback=seen.append)
    with pytest.raises(BaseException) as info:
        r.get(timeout=30)
    check(info.value)
    assert seen and seen[0] is info.value

    # map: the call fails with that error.
    with pytest.raises(BaseException) as info:
        pool.map(fn, items, chunksize=1)
    check(info.value)

    # The same pool still works, and is back to two workers: a replacement
    # starts without holding up the engine, so it may take a fork's time.
    assert pool.map(tasks.square, range(50)) == [i * i for i in range(50)]
    deadline = time.monotonic() + 10
    while len(pool._pool) != 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(pool._pool) == 2


def test_unpicklable_argument_fails_at_submission(pool: shoal.Pool) -> None:
    with pytest.raises(RuntimeError, match="fault injected"):
        pool.map(tasks.identity, [1, tasks.FaultOnPickle("error")])
    r = pool.apply_async(tasks.identity, (tasks.FaultOnPickle("error"),))
    with pytest.raises(RuntimeError, match="fault injected"):
        r.get(timeout=1)
    it = pool.imap(tasks.identity, [1, tasks.FaultOnPickle("error"), 3])
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="fault injected"):
        next(it)
    assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]


def test_exception_that_cannot_be_rebuilt_in_the_parent(pool: shoal.Pool) -> None:
    with pytest.raises(shoal.RemoteUnpicklingError, match="InitOnlyError") as info:
        pool.apply(tasks.raise_init_only, (0,))
    assert "raise InitOnlyError(1, 2)" in info.value.__cause__.tb
    with pytest.raises(shoal.RemoteUnpicklingError, match="UnpicklableError") as info:
        pool.apply(tasks.raise_unpicklable, (0,))
    assert "cannot travel" in str(info.value)
    assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]


def test_results_sent_before_a_death_are_delivered(pool: shoal.Pool) -> None:
    # One chunk per worker call: every task before the crash on that worker
    # has been answered and must come back.
    items = [*range(10), "kill", *range(10, 20)]

    def f(x):
        return tasks.run_fault("sigkill") if x == "kill" else x

    out = []
    it = pool.imap(f, items)
    for _ in items:
        try:
            out.append(next(it))
        except shoal.WorkerLostError:
            out.append("lost")
    assert out == [*range(10), "lost", *range(10, 20)]


def test_a_raising_callback_does_not_stop_delivery(pool: shoal.Pool) -> None:
    import sys

    reported = []
    old = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        got = []

        def bad_callback(value):
            got.append(value)
            raise ValueError("callback broke")

        results = [pool.apply_async(tasks.square, (i,), callback=bad_callback) for i in range(10)]
        assert [r.get(timeout=30) for r in results] == [i * i for i in range(10)]
        r = pool.map_async(tasks.square, range(5), callback=bad_callback)
        assert r.get(timeout=30) == [0, 1, 4, 9, 16]
        errs = pool.apply_async(tasks.run_fault, ("error",), error_callback=bad_callback)
        with pytest.raises(RuntimeError):
            errs.get(timeout=30)
    finally:
        sys.unraisablehook = old
    assert len(reported) == 12
    assert all(isinstance(u.exc_value, ValueError) for u in reported)
    assert pool.map(tasks.square, range(3)) == [0, 1, 4]
