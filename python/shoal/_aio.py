"""The future ``loop.run_in_executor`` gets from a ``shoal.Executor``: the
loop's own kind of future, settled inside the loop in batches.

With any other executor, ``run_in_executor`` wraps the executor's
``concurrent.futures.Future`` in an asyncio future (``asyncio.wrap_future``):
two futures per call, two callbacks chained between them, and one
``call_soon_threadsafe`` per completion, each a write to the loop's
self-pipe and a wake of the loop. That costs more than the rest of the call
(~25 µs of ~40 on this machine's 2 cores). ``wrap_future`` returns a future
it is given as it is, so when ``Executor.submit`` is called by
``run_in_executor`` on the thread running that loop, it makes a
:class:`LoopFuture` instead, which the caller never sees as anything but
what ``run_in_executor`` returns. The engine's callback thread puts each
outcome in the loop's :class:`Inbox`; one ``call_soon_threadsafe`` settles
everything put there before the loop next runs.

Imported only from a running loop (so asyncio is imported already): a
program that never uses asyncio never imports it through shoal.
"""

from __future__ import annotations

import asyncio
import threading
from asyncio import events
from typing import Any

from shoal._errors import PoolTerminatedError
from shoal.executor import _adapt, _local_cause

_RUN_IN_EXECUTOR = asyncio.base_events.BaseEventLoop.run_in_executor.__code__


def loop_calling(frame: Any) -> asyncio.AbstractEventLoop | None:
    """The loop whose ``run_in_executor`` is ``frame``, if that loop runs on
    this thread; else None (another loop class, or a call from another
    thread, which gets the stdlib's ``wrap_future``)."""
    if frame.f_code is not _RUN_IN_EXECUTOR:
        return None
    loop = events._get_running_loop()
    if loop is None or frame.f_locals.get("self") is not loop:
        return None
    return loop


class Inbox:
    """Outcomes on their way into one loop, put from any thread and settled
    in the loop by one callback per batch: the first outcome put arms that
    callback, later ones ride along until it runs."""

    __slots__ = ("_armed", "_items", "_lock", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[LoopFuture, bool, Any]] = []
        self._armed = False

    def put(self, future: LoopFuture, ok: bool, value: Any) -> None:
        with self._lock:
            self._items.append((future, ok, value))
            if self._armed:
                return
            self._armed = True
        try:
            self.loop.call_soon_threadsafe(self._settle)
        except RuntimeError:
            # The loop is closed: nobody can await these any more.
            with self._lock:
                self._items.clear()
                self._armed = False

    def _settle(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._armed = False
        for future, ok, value in items:
            future._shoal_arrive(ok, value)


# The inbox of the last loop seen. A program mostly runs one loop; with
# several taking turns, each future still keeps the inbox it was made with,
# so only the batching suffers.
_last: Inbox | None = None


def inbox_of(loop: asyncio.AbstractEventLoop) -> Inbox:
    """``loop``'s inbox."""
    global _last
    last = _last
    if last is None or last.loop is not loop:
        last = _last = Inbox(loop)
    return last


class LoopFuture(asyncio.Future):
    """An asyncio future for a task on a ``shoal.Executor``, made by
    ``Executor.submit`` when ``loop.run_in_executor`` calls it.

    It has asyncio's semantics, as the future ``wrap_future`` would have
    made: ``cancel()`` ends the wait at once, and cancels the task itself
    only if no worker holds it yet (a running one runs on, its outcome
    dropped). ``Executor.cancel(future)`` also stops a running task, by
    killing its worker. Used, as every asyncio future, on its loop's thread;
    only the engine's outcome arrives from another, through the inbox."""

    _shoal_engine: Any = None
    _shoal_job: int | None = None
    _shoal_cancelling = False
    # The executor's jobs that shutdown(cancel_futures=True) cancelled.
    _shoal_cancelled: set[int] | frozenset[int] = frozenset()
    _shoal_error: BaseException | None = None

    def __init__(self, inbox: Inbox) -> None:
        super().__init__(loop=inbox.loop)
        self._shoal_inbox = inbox

    # -- outcomes, from the engine's callback thread (or at once, for a task
    # whose arguments could not be pickled) ---------------------------------
    def _shoal_settle(self, ok: bool, value: Any) -> None:
        self._shoal_inbox.put(self, ok, value)

    def _shoal_done(self, value: Any) -> None:
        self._shoal_inbox.put(self, True, value)

    def _shoal_failed(self, exc: BaseException) -> None:
        self._shoal_error = exc
        self._shoal_inbox.put(self, False, exc)

    def _shoal_failed_here(self) -> None:
        """The task failed in ``submit``, before the engine saw it."""
        if self._shoal_error is not None:
            _local_cause(self._shoal_error)

    def _shoal_arrive(self, ok: bool, value: Any) -> None:
        """Settle with the engine's outcome, in the loop."""
        self._shoal_error = None
        if self.done():
            return  # cancelled by its awaiter meanwhile
        if ok:
            self.set_result(value)
        elif type(value) is PoolTerminatedError and (
            self._shoal_cancelling or self._shoal_job in self._shoal_cancelled
        ):
            super().cancel()
        else:
            exc = _adapt(value)
            if isinstance(exc, StopIteration):
                # asyncio refuses it (it would end a generator); wrap it as
                # asyncio's tasks do.
                err = RuntimeError("the task raised StopIteration")
                err.__cause__ = exc
                exc = err
            self.set_exception(exc)

    # -- cancelling ------------------------------------------------------------
    def cancel(self, msg: Any = None) -> bool:
        """asyncio's cancel; the task too, if no worker holds it yet."""
        if not super().cancel(msg=msg):
            return False
        engine, job = self._shoal_engine, self._shoal_job
        if engine is not None and job is not None:
            engine.cancel(job, False)
        return True

    def _shoal_cancel_running(self, kill_running: bool) -> bool:
        """``Executor.cancel``, on the loop's thread."""
        if self.done():
            return self.cancelled()
        engine, job = self._shoal_engine, self._shoal_job
        if engine is None or job is None:
            return self.cancel()
        self._shoal_cancelling = True
        if engine.cancel(job, kill_running) == 0:
            self._shoal_cancelling = False
            return False
        return super().cancel()
