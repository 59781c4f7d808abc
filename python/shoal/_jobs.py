"""The job layer: where a call becomes a job and its outcomes come back.

Every front door stands on this one layer (``Pool`` today). A call's input
is chunked here, with sizes from the engine's policy
(``crates/shoal-core/src/chunking.rs``), pickled (``_chunks.Chunks``), fed
into the engine's window by one loop (:func:`feed`), and collected by one of
two result objects: ``JobResult`` (``crates/shoal-py/src/result.rs``) for a
call that returns once, ``apply`` and ``map``, and :class:`IMapIterator` for
one that streams. Both decode with the one decoder, ``_results.decode``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing import TimeoutError
from typing import Any, Generic, TypeVar

from shoal import _protocol as P
from shoal import _shoal
from shoal._chunks import Chunks
from shoal._errors import func_name
from shoal._pickling import dumps_func, dumps_one, dumps_oob, loads
from shoal._results import decode

T = TypeVar("T")

# How many functions the layer keeps registered for reuse.
FUNC_CACHE = 64
# Chunk outcomes an iterator moves from the engine to Python at once, and
# chunks the feed reads and submits at once. Input in flight is bounded by
# the window plus TAKE_CHUNKS.
TAKE_CHUNKS = 256
FEED_CHUNKS = 256
FEED_BYTES = 4 << 20
# Chunks read and submitted at once when the whole input goes in (map): bare
# items are pickled in bulk, and each submission wakes the engine once.
EVERYTHING_BATCH = 4096


class Jobs:
    """The job layer of one engine: functions, chunking, feeding, results.

    ``equal_chunks``: without a chunk size, ``map`` keeps
    ``multiprocessing``'s equal chunks (a lifespan counted in chunks, such as
    ``maxtasksperchild``, then replaces workers as often as it would there).
    ``inherited``: the script's functions and classes as the workers
    inherited them by fork (``_pickling.main_snapshot``), if they did.
    """

    def __init__(
        self,
        engine: _shoal.Engine,
        workers: int,
        oob: Any,
        equal_chunks: bool = False,
        inherited: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.inherited = inherited
        self.workers = workers
        self.oob = oob
        self.equal_chunks = equal_chunks
        # Functions registered with the engine, by identity, for reuse; shared
        # with the Rust fast path of apply (crates/shoal-py/src/plain_apply.rs).
        self.funcs: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._funcs_lock = threading.Lock()
        # apply_async's common call, wholly in Rust once its function is cached.
        self.apply_plain = _shoal.PlainApply(engine, self.funcs, dumps_one, oob, loads, decode)
        # Lazy jobs still reading input, for join.
        self.iterators: weakref.WeakSet[IMapIterator[Any]] = weakref.WeakSet()

    def func_id(self, func: Callable[..., Any]) -> tuple[int, bool]:
        """The engine's id for ``func``, and whether the caller must release
        it once its job holds it. Callables whose pickle may be reused (see
        ``dumps_func``) are kept for later calls, so workers receive them
        once; any other (a partial, a callable object, a bound method) is
        pickled afresh per call, so it runs with its state as it is then."""
        hit = self.funcs.get(id(func))  # a dict read is atomic; no lock needed
        if hit is not None and hit[0] is func:
            return hit[1], False
        payload, reusable = dumps_func(func, self.inherited)
        fid = self.engine.register_func(payload, func_name(func))
        if not reusable:
            return fid, True
        with self._funcs_lock:
            self.funcs[id(func)] = (func, fid)
            if len(self.funcs) > FUNC_CACHE:  # oldest first out
                _, (_, old) = self.funcs.popitem(last=False)
                self.engine.release_func(old)
        return fid, False

    def new_job(
        self,
        func: Callable[..., Any],
        task_bits: int,
        ordered: bool,
        window: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """A job running ``func``; the function stays registered while it
        runs. Past ``timeout`` seconds a chunk's worker is killed and the
        chunk fails with ``TaskTimeoutError``."""
        fid, owned = self.func_id(func)
        try:
            return self.engine.new_job(fid, task_bits, ordered, window, timeout)
        finally:
            if owned:
                self.engine.release_func(fid)

    # -- calls that return once ------------------------------------------------
    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any],
        kwds: Mapping[str, Any],
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        *,
        plain_tried: bool = False,
        timeout: float | None = None,
    ) -> _shoal.JobResult:
        """``func(*args, **kwds)`` as a job of one bare item. ``plain_tried``:
        the caller already tried ``apply_plain`` (a front door that calls it
        first, to keep its own checks off the common path). ``timeout``: as
        in :meth:`new_job`."""
        if timeout is None and not plain_tried and callback is None and error_callback is None and not kwds:
            # The common call, once func is cached. None: not taken.
            result = self.apply_plain(func, args)
            if result is not None:
                return result
        try:
            if type(args) is not tuple:
                args = tuple(args)
            # Without keywords the call travels as func(*args): a smaller
            # pickle (or none: plain numbers travel packed), and no dict to
            # build and unpack.
            if kwds:
                bits, chunk = P.APPLY | P.SINGLE, dumps_oob((args, dict(kwds)), self.oob)
            else:
                bits, chunk = P.STAR | P.SINGLE, dumps_one(args, self.oob)
            fid, owned = self.func_id(func)
        except Exception as exc:  # noqa: BLE001 - delivered through the result, as the stdlib does
            return _shoal.JobResult.failed(exc, callback, error_callback)
        try:
            if timeout is None:
                job = self.engine.apply(fid, bits, chunk)
            else:
                # A deadline needs a job of its own (engine.apply has none).
                job = self.engine.new_job(fid, bits, True, None, timeout)
                self.engine.submit(job, [chunk])
                self.engine.finish_input(job)
        finally:
            if owned:
                self.engine.release_func(fid)
        return self.engine.result(job, None, loads, decode, callback, error_callback)

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> _shoal.JobResult:
        """``func`` over every item, as one list."""
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        lens = _shoal.map_chunks(len(iterable), self.workers, chunksize, self.equal_chunks)  # type: ignore[arg-type]
        chunks = Chunks(iterable, lens[0] if lens else 1, oob=self.oob)
        try:
            job = self.new_job(func, _bits(chunks.single, star), True)
        except Exception as exc:  # noqa: BLE001 - delivered through the result, as the stdlib does
            return _shoal.JobResult.failed(exc, callback, error_callback)
        # Submitted as chunks are pickled, so workers start on the first
        # while the rest are pickled.
        try:
            feed(self.engine, job, chunks, plan=lens, everything=True)
        except BaseException:
            # Ctrl-C while pickling: no result will own the job, so close
            # and let go of it here, or close() and join() would wait for it.
            self.engine.finish_input(job)
            self.engine.abandon(job)
            raise
        self.engine.finish_input(job)
        if chunks.error is not None:
            # Chunks already sent still run; the call fails with the error.
            self.engine.abandon(job)
            return _shoal.JobResult.failed(chunks.error, callback, error_callback)
        return self.engine.result(job, lens, loads, decode, callback, error_callback)

    # -- calls that stream -----------------------------------------------------
    def imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        ordered: bool,
        *,
        window: int | None = None,
        timeout: float | None = None,
    ) -> IMapIterator[Any]:
        """``func`` over every item, yielded as results arrive. ``window``:
        chunks in flight (the engine's default if None); ``timeout``: as in
        :meth:`new_job`."""
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if chunksize is None and self.equal_chunks:
            # A lifespan counted in chunks: one item each, as multiprocessing's
            # imap does, or a worker would run thousands of items a life.
            chunksize = 1
        cls = IMapIterator if ordered else IMapUnorderedIterator
        return cls(self, func, iterable, chunksize, star, window=window, timeout=timeout)

    def feed_everything(self) -> None:
        """Read the rest of every lazy job's input (``close``, then ``join``)."""
        for it in list(self.iterators):
            it._feed(everything=True)


def _bits(single: bool, star: bool) -> int:
    """A job's task bits: ``SINGLE`` when its chunks are bare items."""
    return (P.STAR if star else 0) | (P.SINGLE if single else 0)


def feed(
    engine: _shoal.Engine,
    job: int,
    chunks: Chunks,
    *,
    plan: list[int] | None = None,
    adaptive: bool = False,
    everything: bool = False,
    chunk_lens: dict[int, int] | None = None,
) -> None:
    """Read, pickle and submit ``chunks`` while ``job``'s window has room,
    or all of them if ``everything``. Chunk sizes come from ``plan`` (a
    map's lengths, in order), from the engine (``adaptive``), or stay
    ``chunks.size``. With ``chunk_lens``, records each chunk's item count by
    index. Stops early when the input ends or fails (``chunks.error``)."""
    planned = 0
    room = EVERYTHING_BATCH if everything else engine.room(job)
    while room > 0 and not chunks.exhausted:
        want = min(room, EVERYTHING_BATCH if everything else FEED_CHUNKS)
        payloads: list[bytes] = []
        lens: list[int] = []
        size = 0
        while len(payloads) < want and size < FEED_BYTES:
            # One chunk per read when sizes vary or chunks are large, so a
            # batch never holds more than FEED_BYTES of pickles; bare items
            # are pickled in bulk.
            n = 1
            if plan is not None:
                left = len(plan) - planned
                if left == 0:
                    chunks.exhausted = True
                    break
                if chunks.single:
                    n = min(want - len(payloads), left)
                else:
                    chunks.size = plan[planned]
            elif adaptive:
                chunks.size = engine.chunk_hint(job)
            elif chunks.single:
                n = want - len(payloads)
            more, more_lens = chunks.read(n)
            payloads += more
            lens += more_lens
            planned += len(more)
            size += sum(map(len, more))
            if chunks.exhausted or not more:
                break
            if everything and n == 1:
                # A map's chunk goes to the workers as soon as it is pickled:
                # its large buffers sit in shared memory, whose writer waits
                # for blocks to be freed past a soft limit, and only workers
                # that have the chunk free them.
                break
        if payloads:
            first = engine.submit(job, payloads, lens)
            if chunk_lens is not None and not chunks.single:
                chunk_lens.update(zip(range(first, first + len(lens)), lens, strict=True))
        elif not chunks.exhausted:
            return
        room = EVERYTHING_BATCH if everything else engine.room(job)


class _Raise:
    """Stands in an iterator's queue for an item that failed."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class IMapIterator(Iterator[T], Generic[T]):
    """The iterator ``imap`` returns: results in input order, as they arrive.

    Input is read only while the job's window has room, on the thread that
    iterates, so a generator is consumed as workers need it and a consumer
    that stops early leaves the rest unread.
    """

    _ordered = True

    def __init__(
        self,
        jobs: Jobs,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        *,
        window: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self._jobs = jobs
        self._engine = jobs.engine
        # No chunksize: the engine suggests one per chunk (adaptive).
        self._adaptive = chunksize is None
        self._chunks: Chunks | None = Chunks(iterable, chunksize or 1, single=chunksize == 1, oob=jobs.oob)
        if window is None:
            window = _shoal.window_chunks(jobs.workers, self._adaptive)
        self._job: int = jobs.new_job(func, _bits(self._chunks.single, star), self._ordered, window, timeout)
        self._chunk_lens: dict[int, int] = {}
        self._items: deque[Any] = deque()  # values, and _Raise for failed items
        self._input_error: BaseException | None = None
        self._done = False
        self._lock = threading.Lock()
        jobs.iterators.add(self)
        self._feed()

    def _feed(self, everything: bool = False) -> None:
        """Read input while the window has room (all of it if ``everything``)."""
        chunks = self._chunks
        if chunks is None:
            return
        feed(
            self._engine,
            self._job,
            chunks,
            adaptive=self._adaptive,
            everything=everything,
            chunk_lens=self._chunk_lens,
        )
        if chunks.exhausted:
            self._input_error = chunks.error
            self._chunks = None
            self._engine.finish_input(self._job)

    def _absorb(self) -> bool:
        """Move finished outcomes from the engine into ``_items``; whether any came."""
        values, rest = self._engine.take_values(self._job, TAKE_CHUNKS, loads)
        items = self._items
        items.extend(values)
        lens = self._chunk_lens
        for index, status, single, payload in rest:
            decoded, errors = decode(status, single, payload, lens.pop(index) if lens else 1)
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
        self._engine.abandon(self._job)
        self._jobs.iterators.discard(self)

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and not getattr(self, "_done", True):
            try:
                engine.abandon(self._job)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class IMapUnorderedIterator(IMapIterator[T]):
    """The iterator ``imap_unordered`` returns: results as they complete."""

    _ordered = False
