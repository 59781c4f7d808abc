"""Result objects: ``AsyncResult``, ``MapResult`` and the imap iterators.

They hold no threads and no scheduling logic. Outcomes wait in the engine,
as bytes, until a caller (or the callback thread) asks for them; they are
unpickled on the thread that asks.
"""

from __future__ import annotations

import abc
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import TimeoutError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shoal import _protocol as P
from shoal import _shoal
from shoal._chunks import Chunks, task_flags
from shoal._errors import PoolTerminatedError, RemoteUnpicklingError, WorkerLostError, rebuild
from shoal._pickling import loads, loads_chunk, loads_one

if TYPE_CHECKING:
    from shoal.pool import Pool

T = TypeVar("T")

# Chunk outcomes an iterator moves from the engine to Python at once, and
# chunks it reads and submits at once. Input in flight is bounded by the
# window plus TAKE_CHUNKS.
TAKE_CHUNKS = 256
FEED_CHUNKS = 256
FEED_BYTES = 4 << 20


def decode(flags: int, payload: bytes, n_items: int) -> tuple[list[Any], dict[int, BaseException] | None]:
    """Turn one chunk's outcome into its values and the errors of the items
    that failed (``None`` when none did)."""
    if flags == P.OK | P.SINGLE_VALUE:
        try:
            return [loads_one(payload)], None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a result that cannot be rebuilt fails its task
            return [None], {0: _unpickling_failed(exc)}
    if flags in (P.OK, P.ITEM_ERRORS):
        try:
            loaded = loads_chunk(payload) if flags == P.OK else loads(payload)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a result that cannot be rebuilt fails its task
            return [None] * n_items, dict.fromkeys(range(n_items), _unpickling_failed(exc))
        if flags == P.OK:
            return loaded, None
        values, errors = loaded
        return values, {k: rebuild((blob, tb, rep)) for k, blob, tb, rep in errors}
    # A name of its own: `exc` is bound by the `except` clauses above.
    failure: BaseException
    if flags == P.CHUNK_FAILED:
        try:
            failure = rebuild(loads(payload))
        except Exception as e:  # noqa: BLE001
            failure = e
    elif flags == P.WORKER_LOST:
        failure = WorkerLostError.from_engine(payload)
    elif flags == P.CANCELLED:
        failure = PoolTerminatedError(payload.decode("utf-8", "replace"))
    else:
        failure = RuntimeError(f"unknown result flags {flags}")
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


class _Unraisable:
    """The argument ``sys.unraisablehook`` expects."""

    def __init__(self, exc: BaseException, message: str, obj: object) -> None:
        # Typed as sys.UnraisableHookArgs declares them.
        self.exc_type = type(exc)
        self.exc_value: BaseException | None = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg: str | None = message
        self.object = obj


def decode_one(flags: int, payload: bytes) -> tuple[bool, Any]:
    """One task's outcome as ``(succeeded, value or exception)``."""
    decoded, errors = decode(flags, payload, 1)
    if errors:
        return False, errors[0]
    return True, decoded[0]


class AsyncResult(abc.ABC, Generic[T]):
    """What ``apply_async`` returns: an :class:`ApplyResult`, or, when no
    callbacks are given, the engine's own ``PendingResult`` (the same four
    methods, made in Rust, because one is made per task)."""

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> T: ...

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> None: ...

    @abc.abstractmethod
    def ready(self) -> bool: ...

    @abc.abstractmethod
    def successful(self) -> bool: ...


# ApplyResult is registered as an AsyncResult (below) rather than derived
# from it. Type checkers do not follow registration, so for them it derives.
if TYPE_CHECKING:
    _Registered = AsyncResult
else:
    _Registered = Generic


class ApplyResult(_Registered[T]):
    """The result of ``apply_async`` with callbacks (the engine notifies it),
    or of a call that failed before it was sent; also the base of
    ``MapResult``. Without callbacks ``apply_async`` returns the engine's
    ``PendingResult`` (crates/shoal-py/src/pending.rs)."""

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool: Pool | None = pool  # None once resolved (_finish)
        self._engine = pool._engine
        # None until _start, and for good if the call never reached the
        # engine (_fail_now), which makes the result done at once. The job is
        # read only while the result is not done, or after a None check.
        self._job: int = None  # type: ignore[assignment]
        self._callback = callback
        self._error_callback = error_callback
        # Resolving takes the lock; `_done` is set once the value and the
        # callbacks are through, so a reader that sees it needs no lock.
        self._lock = threading.Lock()
        self._done = False
        self._success = False
        self._value: Any = None

    # -- engine side -------------------------------------------------------
    def _start(self, job: int) -> None:
        self._job = job
        if self._callback is not None or self._error_callback is not None:
            self._engine.watch(job, self._on_done)

    def _on_done(self, _job: int) -> None:
        self._resolve()

    def _collect(self) -> tuple[bool, Any]:
        """Take the finished job's outcome from the engine, and release the job."""
        return self._decode_one(*self._engine.take_release(self._job, loads))

    @staticmethod
    def _decode_one(values: list[Any], rest: list[tuple[int, int, bytes]]) -> tuple[bool, Any]:
        if values:
            return True, values[0]
        _index, flags, payload = rest[0]
        return decode_one(flags, payload)

    def _resolve(self) -> None:
        """Fetch the outcome from the engine, set the value, run callbacks."""
        with self._lock:
            if self._done:
                return
            self._finish(*self._collect())

    def _finish(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        callback = self._callback if success else self._error_callback
        try:
            if callback is not None:
                callback(value)
        except Exception as exc:  # noqa: BLE001
            # A failing callback must not stop result delivery; report it the
            # way Python reports errors it cannot raise anywhere.
            sys.unraisablehook(_Unraisable(exc, f"Exception in shoal callback {callback!r}", self))
        finally:
            self._done = True
            self._pool = None

    def _fail_now(self, exc: BaseException) -> None:
        """The task never reached the engine (its arguments could not be pickled)."""
        with self._lock:
            self._finish(False, exc)

    # -- public API ----------------------------------------------------------
    def ready(self) -> bool:
        """Whether the call has completed."""
        if self._done:
            return True
        if self._job is not None and self._engine.finished(self._job):
            self._resolve()
            return True
        return False

    def successful(self) -> bool:
        """Whether the call completed without raising. ValueError if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        if self._done:
            return
        if self._engine.wait(self._job, True, timeout):
            self._resolve()

    def get(self, timeout: float | None = None) -> T:
        """Return the result when it arrives; re-raise the task's exception.
        Raises ``multiprocessing.TimeoutError`` after ``timeout`` seconds."""
        if not self._done:
            self.wait(timeout)
            if not self._done:
                raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def __del__(self) -> None:
        # Nobody will read the outcome: let the engine drop it on arrival.
        # The task itself still runs, as with multiprocessing.
        job, engine = getattr(self, "_job", None), getattr(self, "_engine", None)
        if job is not None and engine is not None and not self._done:
            try:
                engine.release(job)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


AsyncResult.register(ApplyResult)
AsyncResult.register(_shoal.PendingResult)


class MapResult(ApplyResult[list[T]]):
    """The result of ``map_async`` and ``starmap_async``.

    Waiting on it takes each chunk's outcome as it arrives and unpickles it
    then, while the workers are still busy with the rest.
    """

    def __init__(self, pool: Pool, chunk_lens: list[int], callback: Any, error_callback: Any) -> None:
        super().__init__(pool, callback, error_callback)
        self._chunk_lens = chunk_lens
        self._out: list[Any] = []
        self._taken = 0
        self._first_error: BaseException | None = None
        if not chunk_lens:
            self._finish(True, [])

    def _absorb(self) -> None:
        """Decode the chunks that have arrived, in order (call with the lock)."""
        for index, flags, payload in self._engine.take(self._job, 1 << 30):
            values, errors = decode(flags, payload, self._chunk_lens[index])
            if errors and self._first_error is None:
                self._first_error = errors[min(errors)]
            self._out.extend(values)
            self._taken += 1

    def _collect(self) -> tuple[bool, Any]:
        self._absorb()
        self._engine.release(self._job)
        if self._first_error is not None:
            return False, self._first_error
        out, self._out = self._out, []
        return True, out

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            if self._callback is None and self._error_callback is None:
                with self._lock:
                    if self._done:
                        return
                    self._absorb()
                    if self._taken == len(self._chunk_lens):
                        self._finish(*self._collect())
                        return
            elif self._engine.finished(self._job):
                self._resolve()
                return
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._engine.wait(self._job, False, left) or (left is not None and left <= 0):
                return


class _Raise:
    """Stands in an iterator's queue for an item that failed."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class IMapIterator(Iterator[T]):
    """The iterator ``imap`` returns: results in input order, as they arrive.

    Input is read only while the job's window has room, on the thread that
    iterates, so a generator is consumed as workers need it and a consumer
    that stops early leaves the rest unread.
    """

    _ordered = True

    def __init__(self, pool: Pool, func: int, iterable: Iterable[Any], chunksize: int | None, flags: int) -> None:
        self._pool = pool
        self._engine = pool._engine
        # No chunksize: the engine suggests one per chunk (adaptive).
        self._adaptive = chunksize is None
        self._chunks: Chunks | None = Chunks(iterable, chunksize or 1, single=chunksize == 1, oob=pool._oob)
        self._job: int = self._engine.new_job(
            func, task_flags(self._chunks.single, flags), self._ordered, pool._window_chunks(self._adaptive)
        )
        self._chunk_lens: dict[int, int] = {}
        self._items: deque[Any] = deque()  # values, and _Raise for failed items
        self._input_error: BaseException | None = None
        self._done = False
        self._lock = threading.Lock()
        pool._iterators.add(self)
        self._feed()

    def _feed(self, everything: bool = False) -> None:
        """Read input while the window has room (all of it if ``everything``)."""
        chunks = self._chunks
        if chunks is None:
            return
        engine, job = self._engine, self._job
        room = engine.room(job)
        while everything or room > 0:
            want = FEED_CHUNKS if everything else min(room, FEED_CHUNKS)
            payloads: list[bytes] = []
            lens: list[int] = []
            size = 0
            # One chunk at a time when chunks are large or adaptive, so a
            # batch never holds more than FEED_BYTES of pickles.
            step = 1 if self._adaptive or chunks.size > 1 else want
            while len(payloads) < want and size < FEED_BYTES:
                if self._adaptive:
                    chunks.size = engine.chunk_hint(job)
                more, more_lens = chunks.read(min(step, want - len(payloads)))
                payloads += more
                lens += more_lens
                size += sum(map(len, more))
                if chunks.exhausted or not more:
                    break
            if payloads:
                first = engine.submit(job, payloads, lens)
                if not chunks.single:
                    self._chunk_lens.update(zip(range(first, first + len(lens)), lens, strict=True))
                room = engine.room(job)
            if chunks.exhausted:
                self._input_error = chunks.error
                self._chunks = None
                engine.finish_input(job)
                return
            if not payloads:
                return

    def _absorb(self) -> bool:
        """Move finished outcomes from the engine into ``_items``; whether any came."""
        values, rest = self._engine.take_values(self._job, TAKE_CHUNKS, loads)
        items = self._items
        items.extend(values)
        lens = self._chunk_lens
        for index, flags, payload in rest:
            decoded, errors = decode(flags, payload, lens.pop(index) if lens else 1)
            if errors is None:
                items.extend(decoded)
            else:
                items.extend(_Raise(errors[k]) if k in errors else v for k, v in enumerate(decoded))
        return bool(values or rest)

    def __iter__(self) -> IMapIterator[T]:
        return self

    def _pop(self) -> T:
        value = self._items.popleft()
        if type(value) is _Raise:
            raise value.exc
        return value

    def next(self, timeout: float | None = None) -> T:
        """The next result; ``multiprocessing.TimeoutError`` after ``timeout`` seconds."""
        # Fast path, without the lock: deque.popleft is atomic. Inline, as
        # it runs once per result.
        items = self._items
        if items:
            try:
                value = items.popleft()
            except IndexError:
                pass  # another thread took the last one
            else:
                if type(value) is _Raise:
                    raise value.exc
                return value
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._items:
                    return self._pop()
                if self._done:
                    raise StopIteration
                if self._absorb():
                    self._feed()
                    continue
                if self._chunks is None and self._engine.finished(self._job):
                    # Outcomes may have arrived between the take above and
                    # this check; only an empty take after "finished" means
                    # everything was handed over.
                    if self._absorb():
                        continue
                    self._finish()
                    if self._input_error is not None:
                        error, self._input_error = self._input_error, None
                        raise error
                    continue
                self._feed()
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._engine.wait(self._job, False, left) and left is not None:
                    raise TimeoutError

    __next__ = next

    def _finish(self) -> None:
        self._done = True
        self._engine.release(self._job)
        self._pool._iterators.discard(self)

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and not getattr(self, "_done", True):
            try:
                engine.release(self._job)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class IMapUnorderedIterator(IMapIterator[T]):
    """The iterator ``imap_unordered`` returns: results as they complete."""

    _ordered = False
