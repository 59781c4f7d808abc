"""``shoal.Executor``: a ``concurrent.futures.Executor`` on shoal's engine.

A drop-in for ``concurrent.futures.ProcessPoolExecutor``. It stands on the
same job layer as ``shoal.Pool`` (``_jobs.py``): ``submit`` is
``Jobs.apply``, the same call as ``Pool.apply_async``, and its future (a real
``concurrent.futures.Future``) holds the task's JobResult
(``crates/shoal-py/src/result.rs``). The future takes the outcome from it
when asked, or, once something waits on it, the engine's callback thread
completes it on arrival; no thread waits per future. ``map`` is
``Jobs.imap``, fed eagerly as the stdlib's ``map`` reads its input, or
lazily with ``buffersize`` as in Python 3.14.

What the stdlib's executor cannot do, kept from shoal's promises:

* a worker that dies fails only the future of the task it ran, with
  :class:`shoal.WorkerLostError` (a ``BrokenProcessPool``); the executor
  replaces the worker and goes on;
* :meth:`Executor.cancel` cancels a running task by killing its worker;
* per-task deadlines: ``Executor(task_timeout=...)`` and :meth:`Executor.schedule`;
* lambdas, closures and ``__main__`` functions run under every start method.

asyncio: ``loop.run_in_executor`` and ``asyncio.wrap_future`` work as with
the stdlib, a future can be awaited itself (``await executor.submit(...)``),
and ``async for`` reads :meth:`Executor.map`'s results; completion reaches
the loop through the engine's callback thread, never a thread per call.
``submit`` called by ``run_in_executor`` returns the loop's own kind of
future, settled in batches (``_aio.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import weakref
from _thread import RLock as _RLock
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import Executor as _StdExecutor
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, LOGGER, PENDING, RUNNING
from concurrent.futures.process import _RemoteTraceback
from sys import _getframe

from shoal import _backend, _platform, _shoal
from shoal._errors import PoolTerminatedError, RemoteTraceback
from shoal._jobs import IMapIterator, Jobs
from shoal._shoal import gc_track as _track
from shoal._shoal import gc_untrack as _untrack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from shoal._errors import MaybeEncodingError  # declared there: typeshed lacks it

    T = TypeVar("T")
else:
    from multiprocessing.pool import MaybeEncodingError

    from shoal._generic import T

# Set once the interpreter starts to exit: no executor takes work after it.
_global_shutdown = False
# Executors not yet shut down, for the exit hook.
_executors: weakref.WeakSet[Executor] = weakref.WeakSet()
# Engines shut down without waiting (``shutdown(wait=False)``, a collected
# executor, ``terminate_workers``): joined once stopped, at the latest at exit.
_stopping: set[_Stopper] = set()


class _Stopper:
    """Joins an engine that was told to stop, and frees its backend."""

    def __init__(self, engine: _shoal.Engine, backend: _backend.Processes | _backend.Threads) -> None:
        self.engine = engine
        self.backend = backend
        self.joined = False
        self._lock = threading.Lock()

    def join(self) -> None:
        with self._lock:
            if self.joined:
                return
            self.engine.join()
            self.backend.release()
            self.joined = True
        _stopping.discard(self)


def _python_exit() -> None:
    """At interpreter exit, as ``concurrent.futures`` does: take no new work
    and wait for what was submitted, also for executors shut down without
    waiting (the stdlib's hangs there; this one does not)."""
    global _global_shutdown
    _global_shutdown = True
    for executor in list(_executors):
        if executor._owner == os.getpid():
            executor.shutdown(wait=True)
    for stopper in list(_stopping):
        stopper.join()


def _reap_stopped() -> None:
    """Join engines that have stopped by themselves since."""
    for stopper in list(_stopping):
        if stopper.engine.phase == "stopped":
            stopper.join()


# The stdlib's executors register here, so their hook runs before atexit
# callbacks and a callback that submits is refused, as with them.
try:
    threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - other interpreters, or already exiting
    import atexit

    atexit.register(_python_exit)


def _adapt(exc: BaseException) -> BaseException:
    """The task's exception as ``ProcessPoolExecutor`` gives it: the remote
    traceback as a ``concurrent.futures.process._RemoteTraceback`` cause
    (the job layer attaches ``multiprocessing.pool``'s, as ``Pool`` does),
    and a result the worker could not pickle as the pickling error itself,
    not ``Pool``'s ``MaybeEncodingError`` (the worker sends both)."""
    cause = exc.__cause__
    if type(exc) is MaybeEncodingError:
        original = vars(exc).get("pickling_error")
        if isinstance(original, BaseException):
            original.__cause__ = cause
            exc = original
    if type(cause) is RemoteTraceback:
        # A str, as the stdlib gives it (typeshed says a traceback object).
        exc.__cause__ = _RemoteTraceback(cause.tb)  # type: ignore[arg-type]
    return exc


def _local_cause(exc: BaseException) -> None:
    """Give an error raised here before the task reached a worker (its
    arguments could not be pickled) the cause ``ProcessPoolExecutor`` gives
    it: its traceback, as a ``_RemoteTraceback``."""
    import traceback

    if exc.__cause__ is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.__cause__ = _RemoteTraceback(f'\n"""\n{tb}"""')  # type: ignore[arg-type]


# Held while a future makes its lock (ShoalFuture._lock), so two threads
# never make two.
_MAKING_LOCKS = threading.Lock()

# The states in which a future is done; a frozenset, so a membership test
# is one hash lookup.
_DONE_STATES = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED_STATES = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))
# The states a future never leaves and whose waiters have been told. Not
# CANCELLED: its waiters hear when set_running_or_notify_cancel moves it on.
_FINAL_STATES = frozenset((CANCELLED_AND_NOTIFIED, FINISHED))


class _DoneCondition:
    """The condition of every future in a final state (``_FINAL_STATES``):
    nothing about such a future changes again, so its condition guards
    nothing and has nothing to wait for. One object, with no lock, serves
    them all: ``wait`` and ``as_completed`` take the condition of every
    future they are given (most of them done by then), twice."""

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        return predicate()

    def notify(self, n: int = 1) -> None:
        pass

    def notify_all(self) -> None:
        pass


_DONE_CONDITION = _DoneCondition()


class _NoWaiters:
    """The waiter list of every future in a final state: waiters hear of a
    future when it ends, which it has, so one added now would never be told
    anything (``wait`` and ``as_completed`` add theirs to every future they
    are given, and take them off again): it keeps none."""

    __slots__ = ()

    def append(self, waiter: object) -> None:
        pass

    def remove(self, waiter: object) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_WAITERS = _NoWaiters()


class ShoalFuture(Future[T]):
    """The future :meth:`Executor.submit` returns: a real
    ``concurrent.futures.Future`` whose :meth:`cancel` reaches the engine.

    ``cancel()`` keeps the stdlib's meaning: it succeeds only while no
    worker holds the task. :meth:`Executor.cancel` also stops a running one.
    ``running()`` is True once a worker holds the task (runs it, or has it
    queued behind the task it runs, as the stdlib's call queue does), asked
    of the engine when called. ``await future`` works inside an event loop,
    as ``await asyncio.wrap_future(future)`` does.
    """

    # Completion is lazy. The task's outcome waits in its JobResult (the
    # same Rust object as ``Pool.apply_async``'s) until the future is asked:
    # reading ``_state`` (``done()``, ``result()``, ``wait``, ``as_completed``
    # and ``repr`` all do) takes it then, on the asking thread. A future
    # that something waits on (a condition wait, a waiter of ``wait`` or
    # ``as_completed``, a done callback) asks the engine's callback thread
    # to take it on arrival (``_shoal_arm``), so it completes and wakes them
    # as a stdlib future does. The rest cost the callback thread nothing:
    # 20,000 submits no longer share the GIL with 20,000 completions.
    #
    # Why not ``Future.__init__``: its ``threading.Condition`` (a Python
    # object, an RLock and a deque) cost more than the rest of a submit, and
    # most futures are never waited on. Each future has a C ``RLock``,
    # ``_lock``, made on first use, which guards its state as the stdlib's
    # condition does; the condition is made only when something waits on
    # it, on that same lock. A future has no ``__init__`` at all: calling
    # one cost a submit more than the rest of making the future.
    #
    # A submitted future starts hidden from the cyclic garbage collector
    # (``_shoal.gc_untrack``): 20,000 of them kept until read set off a full
    # collection that walked them all (~15 ms in a program of a few hundred
    # modules). It holds nothing then that can lead back to it (its
    # JobResult, the engine, a set of ints, a C lock). It is tracked again
    # (``_track``) as soon as it can: when it completes or is
    # cancelled, and when it gets waiters, a condition, done callbacks or a
    # waker. The one cycle the collector cannot see: a future nobody ever
    # reads or waits on, which refers to itself through attributes its
    # caller set on it.
    #
    # Invariants: every change of ``_st``, ``_waiters`` and
    # ``_done_callbacks`` happens with ``_lock`` held (in a final state none
    # of the three changes again: its waiters are ``_NO_WAITERS``, callbacks
    # added are called at once); ``_cond`` goes from None to a condition
    # once, with ``_lock`` held, and that condition's lock is ``_lock``
    # (in a final state, with none made yet, it is ``_DONE_CONDITION``,
    # with no lock); a future with a condition, a waiter or a callback
    # is armed before it is seen pending, so the callback thread completes
    # it, taking ``_lock``, and so after a waiter holding the lock has
    # started waiting. No wakeup can be lost. The callback thread calls the
    # waker only once it has let go of the JobResult (see ``result.rs``,
    # ``resolve``), so a thread holding ``_lock`` while it takes the outcome
    # never waits for a thread that waits for ``_lock``.

    # Set before this future asks the engine to cancel its task: the
    # outcome of a chunk that cancel ends (the engine's PoolTerminatedError)
    # may be taken before the caller marks the future cancelled, and must
    # end it cancelled, not failed. A class default, so a submit pays
    # nothing for it.
    _shoal_cancelling = False
    # The stdlib's waiters (wait, as_completed) and done callbacks: made on
    # first use (see _waiters), as most futures get neither.
    _w: list[Any] | None = None
    _cbs: list[Callable[[Future[T]], object]] | None = None
    # The engine, and the task's JobResult until its outcome is taken; None
    # for a future made by hand.
    _shoal_engine: _shoal.Engine | None = None
    _shoal_result: _shoal.JobResult | None = None
    # Whether the callback thread will take the outcome on arrival.
    _shoal_armed = False
    # The executor's jobs that shutdown(cancel_futures=True) cancelled: a
    # future whose job is among them ends cancelled, not failed.
    _shoal_cancelled: set[int] | frozenset[int] = frozenset()
    # The state a future starts in, as class defaults: set per future only
    # when it changes (a submit sets no more than it must).
    _st = PENDING
    _result: Any = None
    _exception: BaseException | None = None
    _cond: threading.Condition | None = None
    _lk: Any = None

    # object's: no Python frame per future (and not Future's, see above).
    __init__ = object.__init__

    @property
    def _lock(self) -> Any:
        """The lock that guards this future's state, made on first use."""
        lock = self._lk
        if lock is None:
            with _MAKING_LOCKS:
                lock = self._lk
                if lock is None:
                    lock = self._lk = _RLock()
        return lock

    @property
    def _state(self) -> str:
        """The stdlib's state, the outcome taken first if it has arrived."""
        st = self._st
        if st == PENDING or st == RUNNING:
            r = self._shoal_result
            lock = self._lk
            # Not taken by a thread that holds the lock: the stdlib's wait
            # and as_completed read the state of futures whose conditions
            # they hold more than once, and count on it not changing until
            # they let go. Such a future is armed (its condition was made),
            # so the callback thread completes it once they have.
            if r is not None and (lock is None or not lock._is_owned()):
                self._shoal_take(r)
                st = self._st
        return st

    @_state.setter
    def _state(self, state: str) -> None:
        self._st = state

    @property
    def _shoal_job(self) -> int | None:
        """The engine's job for the task, while its outcome is not taken."""
        r = self._shoal_result
        return None if r is None else r.job

    # Both lists are made on first use, and used only with ``_lock`` held:
    # the stdlib's wait and as_completed add waiters holding the future's
    # condition (on that lock), and so does add_done_callback its callbacks.
    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        """The stdlib's list of waiters (``wait``, ``as_completed``); for a
        future in a final state that has none, :class:`_NoWaiters`, which
        keeps none (a list then would only cost, and hold its waiters)."""
        w = self._w
        if w is None:
            if self._st in _FINAL_STATES:
                return _NO_WAITERS  # type: ignore[return-value]
            _track(self)
            w = self._w = []
        return w

    @property
    def _done_callbacks(self) -> list[Callable[[Future[T]], object]]:
        """The stdlib's list of done callbacks."""
        if self._cbs is None:
            _track(self)
            self._cbs = []
        return self._cbs

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """The stdlib's condition, made on first use, on ``_lock``; the
        future is armed first, as whoever takes the condition waits.

        A future in a final state, with no condition yet, gives
        :class:`_DoneCondition` instead, which has no lock: ``wait`` and
        ``as_completed`` take the condition of every future they are given,
        most of them done by then, and nothing about such a future can
        change (its waiters are :class:`_NoWaiters`)."""
        cond = self._cond
        if cond is None:
            if self._state in _FINAL_STATES:
                return _DONE_CONDITION  # type: ignore[return-value]
            with self._lock:
                self._shoal_arm()
                cond = self._cond
                if cond is None:
                    _track(self)
                    cond = self._cond = threading.Condition(self._lock)
        return cond

    def _shoal_arm(self) -> None:
        """Have the callback thread take the outcome on arrival (or take it
        now, if it has arrived). Called with ``_lock`` held."""
        r = self._shoal_result
        if self._shoal_armed or r is None:
            return
        _track(self)  # its JobResult will hold its waker
        self._shoal_armed = True
        if not r._wake_on_outcome(self._shoal_woken):
            # Known already, or being taken by another thread, which never
            # waits for this lock while it does (see the invariants).
            self._shoal_armed = False
            self._shoal_woken()

    def _shoal_woken(self) -> None:
        """The outcome is known: take it (from whichever thread knew)."""
        r = self._shoal_result
        if r is not None:
            self._shoal_take(r)

    def _shoal_take(self, r: _shoal.JobResult) -> None:
        """Complete with ``r``'s outcome, if it has arrived."""
        outcome = r._outcome()
        if outcome is None:
            return
        ok, value = outcome
        if ok:
            self._complete(value, None)
        elif type(value) is PoolTerminatedError and (self._shoal_cancelling or r.job in self._shoal_cancelled):
            self._shoal_cancel()
        else:
            self._complete(None, _adapt(value))

    def cancelled(self) -> bool:
        """Whether the future was cancelled."""
        return self._state in _CANCELLED_STATES

    def done(self) -> bool:
        """Whether the future was cancelled or has finished."""
        return self._state in _DONE_STATES

    def running(self) -> bool:
        """Whether a worker holds the task and it is not done yet."""
        self._state  # noqa: B018 - takes the outcome, if it has arrived (not with the lock held)
        engine, job = self._shoal_engine, self._shoal_job
        with self._lock:
            if self._st == PENDING and engine is not None and job is not None and engine.dispatched(job):
                # Asked, not told: the engine does not call back per dispatch,
                # so a program that never asks pays nothing. Once running, it
                # stays so, as with the stdlib.
                self._st = RUNNING
            return self._st == RUNNING

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        """Call ``fn(future)`` once done (now, if it is)."""
        if self._state not in _DONE_STATES:
            with self._lock:
                self._shoal_arm()
                if self._st not in _DONE_STATES:
                    self._done_callbacks.append(fn)
                    return
        try:
            fn(self)
        except Exception:  # noqa: BLE001 - logged, as Future.add_done_callback does
            LOGGER.exception("exception calling callback for %r", self)

    def _wait_done(self, timeout: float | None) -> None:
        """Wait until done or ``timeout``; CancelledError, TimeoutError as
        ``Future.result`` raises them. Called only when not seen done."""
        with self._lock:
            if self._state not in _DONE_STATES:
                self._condition.wait_for(self.done, timeout)
            state = self._st
        if state in _CANCELLED_STATES:
            raise CancelledError
        if state != FINISHED:
            raise TimeoutError

    def result(self, timeout: float | None = None) -> T:
        """The task's result, waiting up to ``timeout``; raises its exception."""
        if self._state != FINISHED:
            self._wait_done(timeout)
        exc = self._exception
        if exc is None:
            return self._result
        # No cycle from the traceback, through this frame, to the future
        # that holds the exception.
        del self
        try:
            raise exc
        finally:
            del exc

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (None if it returned), waiting up to ``timeout``."""
        if self._state != FINISHED:
            self._wait_done(timeout)
        return self._exception

    def set_result(self, result: T) -> None:
        """Complete with ``result``; InvalidStateError if done."""
        if not self._complete(result, None):
            raise InvalidStateError(f"{self._st}: {self!r}")

    def set_exception(self, exception: BaseException | None) -> None:
        """Complete with ``exception``; InvalidStateError if done."""
        if not self._complete(None, exception):
            raise InvalidStateError(f"{self._st}: {self!r}")

    def _complete(self, result: Any, exception: BaseException | None) -> bool:
        """Set the outcome unless done already; whether it was set."""
        with self._lock:
            if self._st in _DONE_STATES:
                return False
            _track(self)
            self._result = result
            self._exception = exception
            self._st = FINISHED
            self._shoal_result = None
            for waiter in self._w or ():
                if exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            if self._cond is not None:
                self._cond.notify_all()
        if self._cbs:
            self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def set_running_or_notify_cancel(self) -> bool:
        """``Future``'s, with this future's lock."""
        with self._lock:
            if self._st == CANCELLED:
                self._st = CANCELLED_AND_NOTIFIED
                for waiter in self._w or ():
                    waiter.add_cancelled(self)
                return False
            if self._st == PENDING:
                self._st = RUNNING
                return True
        LOGGER.critical("Future %s in unexpected state: %s", id(self), self._st)
        raise RuntimeError("Future in unexpected state")

    def __await__(self) -> Generator[Any, None, T]:
        """``await future``: ``asyncio.wrap_future``, whose completion comes
        from the engine's callback thread. Cancelling the awaiting task
        cancels the future (a queued task), as ``wrap_future`` does."""
        import asyncio

        return asyncio.wrap_future(self).__await__()

    def cancel(self) -> bool:
        """Cancel the task if no worker holds it yet; whether it is cancelled."""
        engine, job = self._shoal_engine, self._shoal_job
        if engine is not None and job is not None and self._state not in _DONE_STATES:
            self._shoal_cancelling = True
            if engine.cancel(job, False) == 0:
                self._shoal_cancelling = False
                # A worker holds it (or it has just finished): it runs and
                # delivers, as a running task does with the stdlib.
                return self.cancelled()
        return self._shoal_cancel()

    def _shoal_failed_here(self) -> None:
        """The task failed in ``submit``, before the engine saw it."""
        if self._state == FINISHED and self._exception is not None:
            _local_cause(self._exception)

    def _shoal_cancel(self) -> bool:
        """``Future.cancel``, then what the stdlib's executors do when they
        meet a cancelled future: wake ``wait`` and ``as_completed``, which
        ``Future.cancel`` alone leaves waiting. The engine has ended the
        task cancelled, so a future seen running (killed with its worker)
        is cancelled too."""
        with self._lock:
            state = self._st
            if state == FINISHED:
                return False
            if state == CANCELLED_AND_NOTIFIED:
                return True
            # Future.cancel and set_running_or_notify_cancel in one step,
            # from RUNNING too, which Future.cancel refuses. The outcome the
            # engine still sends is dropped with the JobResult.
            _track(self)
            self._st = CANCELLED_AND_NOTIFIED
            self._shoal_result = None
            for waiter in self._w or ():
                waiter.add_cancelled(self)
            if self._cond is not None:
                self._cond.notify_all()
        if state != CANCELLED and self._cbs:
            self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


class _Gate(Iterator[object]):
    """A lazy map's input, which an executor's shutdown closes: the map then
    reads no more and ends with ``RuntimeError``, as 3.14's does when it
    cannot submit after shutdown."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._it = iter(iterable)
        self.closed = False
        self.cut = False

    def __next__(self) -> Any:
        if self.closed:
            self.cut = True
            raise StopIteration
        return next(self._it)


class MapResults(Iterator[T], AsyncIterator[T]):
    """The iterator :meth:`Executor.map` returns: results in input order.

    Raises a task's exception at its item, ``TimeoutError`` once the map's
    ``timeout`` has passed; either, or :meth:`close`, cancels the tasks no
    worker holds yet, as the stdlib's map does.

    ``async for`` reads it from an event loop without blocking it, with the
    same errors and timeout; cancelling the reading task leaves the map as
    it was (its tasks run on; :meth:`close` stops them).
    """

    def __init__(self, it: IMapIterator[T], end_time: float | None, gate: _Gate | None) -> None:
        self._it: IMapIterator[T] | None = it
        self._end_time = end_time
        self._gate = gate

    def __iter__(self) -> MapResults[T]:
        return self

    def __next__(self) -> T:
        it = self._it
        if it is None:
            raise StopIteration
        try:
            if self._end_time is None:
                return it.next()
            return it.next(max(0.0, self._end_time - time.monotonic()))
        except StopIteration:
            self._it = None
            if self._gate is not None and self._gate.cut:
                raise RuntimeError("cannot schedule new futures after shutdown") from None
            raise
        except multiprocessing.TimeoutError:
            self.close()
            raise TimeoutError from None
        except BaseException as exc:
            self.close()
            adapted = _adapt(exc)
            if adapted is exc:
                raise
            raise adapted from adapted.__cause__

    def __aiter__(self) -> MapResults[T]:
        return self

    async def __anext__(self) -> T:
        """The next result, awaited; ``StopAsyncIteration`` at the end."""
        it = self._it
        if it is None:
            raise StopAsyncIteration
        try:
            timeout = None if self._end_time is None else max(0.0, self._end_time - time.monotonic())
            return await it._anext(timeout)
        except StopAsyncIteration:
            self._it = None
            if self._gate is not None and self._gate.cut:
                raise RuntimeError("cannot schedule new futures after shutdown") from None
            raise
        except multiprocessing.TimeoutError:
            self.close()
            raise TimeoutError from None
        except BaseException as exc:
            if _is_cancel(exc):
                raise
            self.close()
            adapted = _adapt(exc)
            if adapted is exc:
                raise
            raise adapted from adapted.__cause__

    def close(self) -> None:
        """Stop: no more input is read, tasks no worker holds yet are
        cancelled, the rest run, and their results are dropped."""
        it, self._it = self._it, None
        if it is not None:
            lazy = it._lazy
            lazy.cut(lambda _read: RuntimeError("the map was closed"))
            lazy.engine.cancel(lazy.job, False)
            lazy.release()

    def __del__(self) -> None:
        if getattr(self, "_it", None) is not None:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def _is_cancel(exc: BaseException) -> bool:
    """Whether ``exc`` cancels the task that awaits (which leaves a map as
    it was), not a failure of the map."""
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


class _WorkerHandle:
    """What ``Executor._processes`` lists, for code written against the
    stdlib's: a live worker's pid, ``is_alive``, ``terminate``, ``kill``, ``join``."""

    def __init__(self, engine: _shoal.Engine, pid: int) -> None:
        self._engine = engine
        self.pid = pid

    def is_alive(self) -> bool:
        return self._engine.is_alive(self.pid)

    def terminate(self) -> None:
        self._signal(15)

    def kill(self) -> None:
        self._signal(9)

    def _signal(self, sig: int) -> None:
        if self.is_alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def join(self, timeout: float | None = None) -> None:
        import select

        if not self.is_alive():
            return
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<shoal worker pid={self.pid}>"


class Executor(_StdExecutor):
    """A pool of worker processes with the API of
    ``concurrent.futures.ProcessPoolExecutor``.

    ``max_workers`` defaults to the CPUs this process may use;
    ``mp_context`` (a ``multiprocessing`` context) or ``start_method``
    chooses how workers start; ``initializer(*initargs)`` runs once in each
    worker; a worker is replaced after ``max_tasks_per_child`` tasks (with
    every start method, ``fork`` included). With ``task_timeout``, a task
    still running after that many seconds fails with
    :class:`shoal.TaskTimeoutError` (a ``TimeoutError``) and its worker is
    killed and replaced.

    Differences from the stdlib, all towards not breaking: a worker that
    dies fails only its task's future, with :class:`shoal.WorkerLostError`
    (a ``BrokenProcessPool``), and the executor goes on; workers start with
    the executor, not on demand.

    ``start_method="threading"`` makes the workers threads of this process,
    as ``concurrent.futures.ThreadPoolExecutor``'s are, through the same
    engine: nothing is pickled, a task gets the very objects it was given,
    and its future fails with the task's exception itself. A thread cannot
    be killed, so ``task_timeout``, :meth:`schedule`'s ``timeout`` and
    :meth:`cancel` of a running task raise ``ValueError`` saying so;
    ``terminate_workers`` and ``kill_workers`` fail what has not finished
    and leave a task still running to end on its own.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        task_timeout: float | None = None,
    ) -> None:
        self._owner = os.getpid()
        self._shutdown_lock = threading.Lock()
        self._shut = True  # until started, nothing to shut down
        self._stopper: _Stopper | None = None
        if max_workers is None:
            max_workers = _platform.usable_cpus()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if task_timeout is not None and not task_timeout > 0:
            raise ValueError("task_timeout must be None or a positive number of seconds")
        threads = start_method == _backend.THREADING
        if threads and task_timeout is not None:
            raise ValueError(
                "task_timeout needs a worker that can be killed, and start_method='threading' makes the workers "
                "threads, which cannot be (a thread runs its task to the end): leave task_timeout out, or use "
                "worker processes (start_method 'fork', 'forkserver' or 'spawn')"
            )
        _platform.require_supported_kernel()
        _reap_stopped()
        self._max_workers = max_workers
        self._task_timeout = task_timeout
        self._backend = _backend.start(
            mp_context, start_method, max_workers, initializer, initargs, max_tasks_per_child
        )
        self._engine = self._backend.engine
        if mp_context is None and not threads:
            mp_context = multiprocessing.get_context(self._backend.method)
        self._mp_context = mp_context  # None for threads: no multiprocessing context
        # max_tasks_per_child counts tasks; a map's chunk is one, so keep
        # equal chunks there as Pool does with maxtasksperchild.
        self._jobs = Jobs(
            self._engine,
            max_workers,
            self._backend.oob,
            equal_chunks=max_tasks_per_child is not None,
            inherited=self._backend.inherited,
        )
        self._apply_plain = self._jobs.apply_plain
        # The jobs shutdown(cancel_futures=True) cancelled (their futures end
        # cancelled).
        self._cancelled_jobs: set[int] = set()
        # The maps, which that leaves running, each with its gate if it is
        # lazy (its input, which shutdown stops reading).
        self._maps: weakref.WeakKeyDictionary[IMapIterator[Any], _Gate | None] = weakref.WeakKeyDictionary()
        self._shut = False
        _executors.add(self)

    # -- what code written for ProcessPoolExecutor reads ----------------------
    @property
    def _processes(self) -> dict[int, _WorkerHandle] | None:
        """The live workers by pid, like ``ProcessPoolExecutor._processes``."""
        if self._stopper is not None and self._stopper.joined:
            return None
        return {pid: _WorkerHandle(self._engine, pid) for pid in self._engine.worker_pids()}

    def __reduce__(self) -> Any:
        raise NotImplementedError("executor objects cannot be passed between processes or pickled")

    # -- submission ------------------------------------------------------------
    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ShoalFuture[T]:
        """Run ``fn(*args, **kwargs)`` in a worker; returns its future.

        The future fails with the task's exception (its remote traceback as
        ``__cause__``), with :class:`shoal.WorkerLostError` if the worker
        died, or with the pickling error if an argument cannot be pickled.
        """
        caller = _getframe(1)
        if caller.f_code.co_name == "run_in_executor":
            # asyncio's run_in_executor, which would wrap this future in one
            # of its loop's: give it one of those to begin with (_aio.py).
            from shoal import _aio

            loop = _aio.loop_calling(caller)
            if loop is not None:
                future = _aio.LoopFuture(_aio.inbox_of(loop))
                return self._submit(fn, args, kwargs, self._task_timeout, loop_future=future)
        if self._shut or _global_shutdown:
            self._check_open()
        if not kwargs and self._task_timeout is None:
            # The common call, once fn is cached, wholly in Rust, in this
            # frame (a submit storm pays ~1 µs a call; a second frame and
            # the shutdown lock were a third of it). Without the lock, a
            # shutdown between the check above and the engine's call shows
            # as the engine's refusal; one after the engine has the task
            # finds it queued: shutdown closes the engine before it cancels.
            try:
                result = self._apply_plain(fn, args, None)
            except ValueError:
                self._check_open()
                raise
            if result is not None:
                made: Any = ShoalFuture()
                _untrack(made)
                made._shoal_result = result
                made._shoal_engine = self._engine
                made._shoal_cancelled = self._cancelled_jobs
                return made
        return self._submit(fn, args, kwargs, self._task_timeout)

    def schedule(
        self,
        fn: Callable[..., T],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ShoalFuture[T]:
        """pebble's ``schedule``: :meth:`submit` with a deadline of its own.

        Past ``timeout`` seconds (default: the executor's ``task_timeout``),
        the worker running the task is killed (SIGKILL, so C code stops too)
        and replaced, and the future fails with :class:`shoal.TaskTimeoutError`,
        a ``TimeoutError``. A ``timeout=`` on :meth:`submit` would take the
        name from ``fn``'s own keywords, hence a method of its own.
        """
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be None or a positive number of seconds")
        return self._submit(fn, tuple(args), dict(kwargs or {}), self._task_timeout if timeout is None else timeout)

    def _submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        loop_future: Any = None,
    ) -> ShoalFuture[T]:
        """Submit the task: its future holds the task's JobResult and reads
        the outcome from it when asked; ``loop_future`` (an
        ``_aio.LoopFuture``) is told the outcome as it arrives instead."""
        with self._shutdown_lock:
            if self._shut or _global_shutdown:
                self._check_open()
            result = None
            if not kwargs and timeout is None:
                # Wholly in Rust, as in submit. None: not taken.
                result = self._apply_plain(fn, args, loop_future)
            # Failed here, before a worker saw it (an argument that cannot
            # be pickled): only the general path tells.
            failed = False
            if result is None:
                result = self._jobs.apply(
                    fn, args, kwargs, None, None, plain_tried=True, timeout=timeout, settle_on=loop_future
                )
                failed = result.job is None
            future: Any
            if loop_future is None:
                future = ShoalFuture()
                _untrack(future)
                future._shoal_result = result
            else:
                future = loop_future
                future._shoal_job = result.job
            future._shoal_engine = self._engine
            future._shoal_cancelled = self._cancelled_jobs
            if failed:
                future._shoal_failed_here()
        return future

    def _check_open(self) -> None:
        if _global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> MapResults[T]:
        """``fn`` over the items of ``iterables`` (zipped), results in order.

        As in the stdlib, the input is read and submitted now, unless
        ``buffersize`` is given (Python 3.14's lazy map): then the first
        ``buffersize`` chunks are read and submitted now, and the rest of
        the input as results are consumed, with at most ``buffersize`` chunks
        submitted and unfinished, and at most as many finished and not yet
        yielded (3.14 counts both together). With ``chunksize`` left at 1
        and no ``buffersize``, items travel in chunks sized like
        ``multiprocessing.Pool.map``'s (about four per worker), which gives
        the same results much faster than one task per item; a
        ``chunksize`` given is used as given. A failed item raises at its
        place; the items of its chunk around it are still delivered.
        ``timeout`` counts from this call.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        end_time = None if timeout is None else timeout + time.monotonic()
        star = len(iterables) != 1
        items: Iterable[Any] = zip(*iterables, strict=False) if star else iterables[0]
        auto = chunksize == 1 and self._task_timeout is None
        # The input is the caller's code: it is read without the executor's
        # lock, which it may need itself (an iterable that submits would
        # wait for its own map), as the stdlib's map reads outside submit's.
        self._check_open()
        if buffersize is None:
            items = list(items)
            size = chunksize
            if auto and items:
                size = _shoal.map_chunks(len(items), self._max_workers)[0]
            with self._shutdown_lock:
                self._check_open()
                it = self._jobs.imap(fn, items, star, size, True, timeout=self._task_timeout, eager=True)
                self._maps[it] = None
            return MapResults(it, end_time, None)
        gate = _Gate(items)
        try:
            it = self._jobs.imap(
                fn, gate, star, chunksize, True, window=buffersize, timeout=self._task_timeout, prime=True
            )
        except ValueError:
            self._check_open()  # shut down meanwhile: say so, as submit does
            raise
        with self._shutdown_lock:
            if self._shut:
                # Shut down while the first window was read: its gates were
                # closed without this one.
                self._close_gate(it, gate)
            else:
                self._maps[it] = gate
        return MapResults(it, end_time, gate)

    # -- cancelling a running task -----------------------------------------------
    def cancel(self, future: Future[Any], *, kill_running: bool = True) -> bool:
        """Cancel ``future``, even if its task is running: with
        ``kill_running`` (the default), the worker running it is killed
        (SIGKILL, so C code stops too) and replaced, and the future ends
        cancelled at once. Returns whether the future is cancelled.

        ``future.cancel()`` keeps the stdlib's meaning (only a task no
        worker holds yet), and so does ``kill_running=False``. A short task
        queued on a worker behind another one is neither: it runs, and this
        returns False.
        """
        if not isinstance(future, ShoalFuture):
            cancel_running = getattr(future, "_shoal_cancel_running", None)  # run_in_executor's (_aio.py)
            return future.cancel() if cancel_running is None else cancel_running(kill_running)
        engine, job = future._shoal_engine, future._shoal_job
        if engine is None or job is None:
            return future.cancel()
        if future.done():
            return future.cancelled()
        future._shoal_cancelling = True
        if engine.cancel(job, kill_running) == 0:
            future._shoal_cancelling = False
            return future.cancelled()
        # Its chunk ends cancelled in the engine; the future says so now.
        return future._shoal_cancel()

    # -- lifecycle -------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with ``cancel_futures``, cancel what no worker
        holds yet; with ``wait``, return once every task is done and the
        workers have exited. Lazy maps (``buffersize``) read no more input."""
        with self._shutdown_lock:
            first = not self._shut
            self._shut = True
        if self._stopper is None and not first:
            return  # never started
        if first:
            _executors.discard(self)
            self._close_gates()
            self._engine.close()
        if cancel_futures:
            # Every submitted task no worker holds yet, whether or not its
            # future is still held; maps go on. After the engine is closed:
            # submit takes no lock, so a task it gave the engine before that
            # is queued by now, and cancelled here with the rest.
            self._engine.cancel_queued([it._job for it in list(self._maps)], self._cancelled_jobs)
        if first:
            self._stopper = _Stopper(self._engine, self._backend)
            _stopping.add(self._stopper)
        if wait and self._stopper is not None:
            self._stopper.join()

    def terminate_workers(self) -> None:
        """Stop now (Python 3.14's API): tasks no worker holds end
        cancelled, running ones fail with :class:`shoal.PoolTerminatedError`,
        and the workers get SIGTERM, then SIGKILL 0.2 s later."""
        self._force(kill=False)

    def kill_workers(self) -> None:
        """:meth:`terminate_workers`, with SIGKILL at once."""
        self._force(kill=True)

    def _force(self, kill: bool) -> None:
        self.shutdown(wait=False, cancel_futures=True)
        if kill:
            self._engine.kill()
        else:
            self._engine.terminate()

    def _close_gates(self) -> None:
        """Let every lazy map read no more input, so the engine can close:
        what was read runs, then its reader meets ``RuntimeError``."""
        for it, gate in list(self._maps.items()):
            if gate is not None:
                self._close_gate(it, gate)

    @staticmethod
    def _close_gate(it: IMapIterator[Any], gate: _Gate) -> None:
        gate.closed = True
        gate.cut = True
        it._lazy.cut(lambda _read: RuntimeError("cannot schedule new futures after shutdown"))

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __del__(self) -> None:
        if getattr(self, "_owner", None) != os.getpid() or getattr(self, "_shut", True):
            return
        try:
            # As the stdlib's: submitted work still runs; the exit hook joins.
            self.shutdown(wait=False)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
