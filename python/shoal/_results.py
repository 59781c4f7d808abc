"""The one decoder of chunk outcomes, and the result types users see.

Outcomes wait in the engine, as bytes, until a caller (or the callback
thread) asks for them; they are decoded on the thread that asks, by
``JobResult`` (crates/shoal-py/src/result.rs) or the imap iterators
(``_jobs.py``), each of which handles a one-item success itself and hands
everything else to :func:`decode`.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Generator
from functools import partial

# WorkerLostError and TaskTimeoutError are read through _errors when a
# worker is lost: they are made on first use, as making them imports
# concurrent.futures (and logging), which a pool's start-up need not pay.
from shoal import _errors, _shoal
from shoal import _protocol as P
from shoal._errors import PoolTerminatedError, RemoteUnpicklingError, rebuild
from shoal._pickling import loads, loads_chunk, loads_one

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any, Generic, TypeVar

    T = TypeVar("T")
else:
    from shoal._generic import Generic, T


def decode(
    status: int, single: bool, payload: bytes, n_items: int
) -> tuple[list[Any], dict[int, BaseException] | None]:
    """Turn one chunk's outcome into its values and the errors of the items
    that failed (``None`` when none did). ``single``: the chunk was one bare
    item, so an ``OK`` payload is one value."""
    if status == P.OK and single:
        try:
            return [loads_one(payload)], None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a result that cannot be rebuilt fails its task
            return [None], {0: _unpickling_failed(exc)}
    if status in (P.OK, P.ITEM_ERRORS):
        try:
            loaded = loads_chunk(payload) if status == P.OK else loads(payload)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a result that cannot be rebuilt fails its task
            return [None] * n_items, dict.fromkeys(range(n_items), _unpickling_failed(exc))
        if status == P.OK:
            return loaded, None
        values, errors = loaded
        return values, {k: rebuild((blob, tb, rep)) for k, blob, tb, rep in errors}
    if status == P.CHUNK_FAILED:
        try:
            failure = rebuild(loads(payload))
        except Exception as e:  # noqa: BLE001
            failure = e
    elif status == P.WORKER_LOST:
        failure = _errors.WorkerLostError.from_engine(payload, single)
    elif status == P.TIMED_OUT:
        failure = _errors.TaskTimeoutError.from_engine(payload, single)
    elif status == P.CANCELLED:
        failure = PoolTerminatedError(payload.decode("utf-8", "replace"))
    else:
        failure = RuntimeError(f"unknown chunk status {status}")
    # One exception object per item, so each raise gets its own traceback.
    return [None] * n_items, {k: _clone(failure) if k else failure for k in range(n_items)}


def _unpickling_failed(exc: BaseException) -> BaseException:
    """The error for a result that reached the parent but could not be
    unpickled. Ordinary exceptions are kept as they are; ``SystemExit`` and
    the like become an ordinary exception, so ``get()`` cannot exit the program."""
    if isinstance(exc, Exception):
        return exc
    err = RemoteUnpicklingError(f"unpickling the result in the parent raised {exc!r}")
    err.__cause__ = exc
    return err


def _clone(exc: BaseException) -> BaseException:
    import copy

    try:
        twin = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an exception that cannot be copied is shared
        return exc
    twin.__cause__ = exc.__cause__
    return twin


class AsyncResult(abc.ABC, Generic[T]):
    """What ``apply_async`` and ``map_async`` return: the engine's
    ``JobResult`` (crates/shoal-py/src/result.rs), with the four methods of
    ``multiprocessing.pool.AsyncResult``, and awaitable: ``await result``
    gives the value (or raises the task's exception) without blocking the
    event loop. Cancelling the awaiting task (``asyncio.wait_for`` timing
    out, say) leaves the pool's task running and the result readable."""

    @abc.abstractmethod
    def __await__(self) -> Generator[Any, None, T]: ...

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> T: ...

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> None: ...

    @abc.abstractmethod
    def ready(self) -> bool: ...

    @abc.abstractmethod
    def successful(self) -> bool: ...


AsyncResult.register(_shoal.JobResult)

# multiprocessing.pool's names for the two shapes of result; here one class
# serves both.
ApplyResult = MapResult = _shoal.JobResult


# -- asyncio ---------------------------------------------------------------------
# Completion reaches an event loop through the engine's callback thread (or
# whichever thread learns of it first), which calls a waker that schedules
# the loop's future with call_soon_threadsafe: no thread waits per result.
# asyncio is imported only by code that runs inside a loop already.


def _set_woken(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # cancelled meanwhile
        fut.set_result(None)


def _wake_threadsafe(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    """Wake ``fut``'s awaiter from any thread."""
    try:
        loop.call_soon_threadsafe(_set_woken, fut)
    except RuntimeError:
        pass  # the loop is closed: nobody awaits any more


async def _await_result(result: Any) -> Any:
    """``await result`` for a ``JobResult``: its value, or its exception raised.

    Cancelling the awaiting task detaches it: the task in the pool runs on,
    and the result can still be awaited or read with ``get()``, as a pool's
    result may be awaited by several tasks (and ``multiprocessing`` results
    have no cancel).
    """
    from asyncio import get_running_loop

    loop = get_running_loop()
    while not result.ready():
        woken: asyncio.Future[None] = loop.create_future()
        waker = partial(_wake_threadsafe, loop, woken)
        if not result._wake_on_outcome(waker):
            continue  # known meanwhile, or another caller is decoding it
        try:
            await woken
        except BaseException:
            result._forget_waker(waker)
            raise
    return result.get()


class ReadyWaiters:
    """The event-loop futures waiting for a streaming job's next outcome,
    woken together by one notification from the engine
    (``Engine.notify_ready``), which is re-armed whenever someone waits
    again. It holds no reference to the iterator, so an iterator nobody
    holds is still collected while a notification is armed."""

    __slots__ = ("_armed", "_engine", "_job", "_lock", "_waiters")

    def __init__(self, engine: _shoal.Engine, job: int) -> None:
        self._engine = engine
        self._job = job
        self._lock = threading.Lock()
        self._armed = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> bool:
        """Wake ``fut`` once the job has something to take or has finished;
        False if it has now (``fut`` is not kept: look again)."""
        with self._lock:
            if not self._armed:
                if not self._engine.notify_ready(self._job, self._fire):
                    return False
                self._armed = True
            self._waiters.append((loop, fut))
            return True

    def discard(self, fut: asyncio.Future[None]) -> None:
        """Forget ``fut`` (its task was cancelled, or it woke otherwise)."""
        with self._lock:
            self._waiters = [w for w in self._waiters if w[1] is not fut]

    def _fire(self, _job: int) -> None:
        # On the engine's callback thread.
        with self._lock:
            self._armed = False
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            _wake_threadsafe(loop, fut)
