"""The one decoder of chunk outcomes, and the result types users see.

Outcomes wait in the engine, as bytes, until a caller (or the callback
thread) asks for them; they are decoded on the thread that asks, by
``JobResult`` (crates/shoal-py/src/result.rs) or the imap iterators
(``_jobs.py``), each of which handles a one-item success itself and hands
everything else to :func:`decode`.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

# WorkerLostError and TaskTimeoutError are read through _errors when a
# worker is lost: they are made on first use, as making them imports
# concurrent.futures (and logging), which a pool's start-up need not pay.
from shoal import _errors, _shoal
from shoal import _protocol as P
from shoal._errors import PoolTerminatedError, RemoteUnpicklingError, rebuild
from shoal._pickling import loads, loads_chunk, loads_one

T = TypeVar("T")


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
    ``multiprocessing.pool.AsyncResult``."""

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
