"""The job layer: where a call becomes a job and its outcomes come back.

Every front door stands on this one layer (``Pool`` today). A call's input
is chunked here, with sizes from the engine's policy
(``crates/shoal-core/src/chunking.rs``), pickled (``_chunks.Chunks``), read
in batches (:func:`_read_batch`) and fed into the engine, all at once for a
call whose input is in memory (:func:`feed`; for a WorkerPool's ``map``, by
its reader between results, :meth:`_Lazy.feed_here`) or as the job's window
has room by a feeder thread for one that reads it lazily (:class:`_Lazy`), and
collected by one of two result objects: ``JobResult``
(``crates/shoal-py/src/result.rs``) for a call that returns once, ``apply``
and ``map``, and :class:`IMapIterator` for one that streams. Both decode
with the one decoder, ``_results.decode``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from multiprocessing import TimeoutError

from shoal import _protocol as P
from shoal import _shoal
from shoal._chunks import Chunks
from shoal._errors import func_name
from shoal._pickling import dumps_func, dumps_one, dumps_oob, loads
from shoal._results import ReadyWaiters, _set_woken, decode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar

    T = TypeVar("T")
else:
    from shoal._generic import Generic, T

# How many functions the layer keeps registered for reuse.
FUNC_CACHE = 64
# Chunk outcomes an iterator moves from the engine to Python at once, and
# chunks a feeder reads and submits at once. Input read is bounded by the
# window plus TAKE_CHUNKS.
TAKE_CHUNKS = 256
FEED_CHUNKS = 256
# Pickles in one batch of _read_batch (a map's, or sub-ranges of a range).
FEED_BYTES = 4 << 20
# Chunks read and submitted at once when the whole input goes in (map): bare
# items are pickled in bulk, and each submission wakes the engine once.
EVERYTHING_BATCH = 4096
# How often a feeder thread that waits in the engine looks at what Python
# code asked of it (an iterator dropped, a join under way). The engine wakes
# it at once for room, the end of its input and termination.
FEED_POLL = 0.05
# How long, about, a feeder reads before it submits what it read: a batch
# (and a chunk without a given size) holds only as many items as the input
# gave in this time in the batch before, so items of a slow input go to the
# workers one by one, and those of a fast one in bulk.
FEED_LATENCY = 0.002
# How soon a reader with nothing running looks again at what the feeder has
# read while it blocks in the iterable (doubling up to FEED_POLL).
FLUSH_WAIT = 0.001


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
        # Lazy jobs whose feeder thread may still run, for close/join/terminate.
        self._lazy: set[_Lazy] = set()
        self._lazy_lock = threading.Lock()

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
        pinned: bool = False,
    ) -> int:
        """A job running ``func``; the function stays registered while it
        runs. Past ``timeout`` seconds a chunk's worker is killed and the
        chunk fails with ``TaskTimeoutError``. ``pinned``: chunk ``i`` runs
        on the worker in slot ``i % workers`` (``WorkerPool``'s ``order_tasks``)."""
        fid, owned = self.func_id(func)
        try:
            return self.engine.new_job(fid, task_bits, ordered, window, timeout, pinned)
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
        settle_on: Any = None,
    ) -> _shoal.JobResult:
        """``func(*args, **kwds)`` as a job of one bare item. ``plain_tried``:
        the caller already tried ``apply_plain`` (a front door that calls it
        first, to keep its own checks off the common path). ``timeout``: the
        task's deadline in seconds (see :meth:`new_job`). ``settle_on``:
        instead of the callbacks, an object told the outcome by its
        ``_shoal_settle(ok, value)``, which never holds the result object
        (the future ``loop.run_in_executor`` gets, ``_aio.LoopFuture``;
        see ``Engine.apply_result``)."""
        if settle_on is not None and (timeout is not None or kwds):
            # Paths that take callbacks only: its own, as bound methods.
            callback, error_callback, settle_on = settle_on._shoal_done, settle_on._shoal_failed, None
        plain = callback is None and error_callback is None and settle_on is None and not kwds and timeout is None
        if plain and not plain_tried:
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
            if settle_on is not None:
                callback, error_callback = settle_on._shoal_done, settle_on._shoal_failed
            return _shoal.JobResult.failed(exc, callback, error_callback)
        try:
            if timeout is None:
                if callback is not None or error_callback is not None or settle_on is not None:
                    # Watched from its creation, in one call (see
                    # Engine.apply_result): what a callback costs the caller.
                    return self.engine.apply_result(
                        fid, bits, chunk, loads, decode, callback, error_callback, settle_on
                    )
                job = self.engine.apply(fid, bits, chunk)
            else:
                # A deadline belongs to a job, which engine.apply's one-call
                # job does not take: the same job in three calls.
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
            feed(self.engine, job, chunks, plan=lens)
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
        eager: bool = False,
        pinned: bool = False,
        unpack: bool = False,
        reader_feeds: bool = False,
        prime: bool = False,
    ) -> IMapIterator[Any]:
        """``func`` over every item, yielded as results arrive. ``window``:
        chunks in flight (default: the engine's for the pool's size);
        ``timeout``: each chunk's deadline; ``eager``: read and submit the
        whole input now (``Executor.map`` without ``buffersize``);
        ``pinned``: chunk ``i`` runs on worker ``i % workers`` (see :meth:`new_job`);
        ``unpack``: each item is called by MPIRE's rule (``UNPACK``), not as ``star`` says;
        ``reader_feeds`` (with ``eager``): the caller reads every result at
        once (a WorkerPool's ``map``), so the thread that reads feeds the
        input too, and no feeder thread starts; as it keeps every result,
        its job has no window, as :meth:`map`'s has none. ``eager`` without
        a ``chunksize``: chunks as :meth:`map` plans them. ``prime``: the
        caller reads and submits the first window before the feeder thread
        takes over (``Executor.map`` with ``buffersize``, which submits that
        many tasks before it returns, as 3.14's does)."""
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if chunksize is None and self.equal_chunks:
            # A lifespan counted in chunks: one item each, as multiprocessing's
            # imap does, or a worker would run thousands of items a life.
            chunksize = 1
        cls = IMapIterator if ordered else IMapUnorderedIterator
        plan = None
        if eager:
            # Room for the whole input at once: it is all read now.
            n = len(iterable)  # type: ignore[arg-type]
            if chunksize is None:
                plan = _shoal.map_chunks(n, self.workers, None, self.equal_chunks)
            window = max(1, len(plan) if plan is not None else -(-n // (chunksize or 1)))
        here = eager and reader_feeds
        it: IMapIterator[Any] = cls(
            self,
            func,
            iterable,
            chunksize,
            star,
            window=window,
            timeout=timeout,
            pinned=pinned,
            unpack=unpack,
            plan=plan,
            unbounded=here,
        )
        self.start_lazy(it._lazy, here=here, prime=prime)
        return it

    def start_lazy(self, lazy: _Lazy, *, here: bool = False, prime: bool = False) -> None:
        """Start ``lazy``'s feeder thread, and keep it for close/join/terminate.
        ``here``: its reader feeds it instead (``reader_feeds``); ``prime``:
        this thread feeds its first window, then the feeder thread the rest."""
        with self._lazy_lock:
            self._lazy = {z for z in self._lazy if z.feeding()}
            self._lazy.add(lazy)
        if here or prime:
            # Fed on this thread (so Ctrl-C is raised here, at once), then,
            # when priming, by the feeder thread.
            lazy.here = True
            try:
                lazy.feed_here()
            finally:
                lazy.here = here
            if here:
                return
        try:
            lazy.start_feeder()
        except BaseException:
            lazy.cut(lambda _: RuntimeError("no thread could be started to read the input"))
            self.engine.abandon(lazy.job)
            raise

    def lazy(self) -> list[_Lazy]:
        """The lazy jobs whose feeder thread may still run."""
        with self._lazy_lock:
            return list(self._lazy)

    def finish_lazy(self) -> None:
        """``join`` after ``close``: return once every lazy job's input has
        ended, so that the engine can finish. An input nobody has read
        results of runs to its end, as ``multiprocessing`` runs everything
        submitted (results wait for a later read). An input whose reader
        is this thread (blocked here) or has exited ends where it is: its
        reader was done with it, and it may be endless. One that another
        live thread is reading is read on as that thread takes results."""
        me = threading.current_thread()
        while True:
            pending = [z for z in self.lazy() if not z.ended.is_set()]
            if not pending:
                return
            for lazy in pending:
                reader = lazy.reader
                if lazy.feeder is me:
                    # join() called from inside the input: it reads no more.
                    lazy.cut(_unread_error)
                elif reader is None:
                    lazy.drain = True
                elif reader is me or not reader.is_alive():
                    lazy.cut(_unread_error)
            # Slices, to see a reader thread exit.
            pending[0].ended.wait(FEED_POLL)

    def stop_lazy(self) -> None:
        """``terminate``: end every lazy job's input where it is. A reader
        meets ``PoolTerminatedError`` after the items read so far."""
        for lazy in self.lazy():
            lazy.cut(_terminated_error)

    def join_feeders(self) -> None:
        """Wait for the feeder threads of ended inputs. One inside the
        caller's iterable (a generator that blocks) is not waited for: it
        ends when the iterable next yields, without reading more."""
        me = threading.current_thread()
        for lazy in self.lazy():
            feeder = lazy.feeder
            if lazy.ended.is_set() and not lazy.reading and feeder is not me and lazy.feeding():
                feeder.join()  # type: ignore[union-attr]


def _bits(single: bool, star: bool, unpack: bool = False) -> int:
    """A job's task bits: ``SINGLE`` when its chunks are bare items."""
    return (P.STAR if star else 0) | (P.SINGLE if single else 0) | (P.UNPACK if unpack else 0)


def _read_batch(
    engine: _shoal.Engine,
    job: int,
    chunks: Chunks,
    want: int,
    *,
    plan: list[int] | None = None,
    planned: int = 0,
    adaptive: bool = False,
    max_size: int | None = None,
    eager: bool = False,
) -> tuple[list[bytes], list[int]]:
    """Read and pickle up to ``want`` chunks of ``chunks``, and at most
    about FEED_BYTES of pickles; their payloads and item counts. Chunk sizes
    come from ``plan`` (a map's lengths, from index ``planned``), from the
    engine (``adaptive``, at most ``max_size``), or stay ``chunks.size``.
    Stops early when the input ends or fails (``chunks.error``). ``eager``:
    a chunk of several items is returned as soon as it is pickled."""
    payloads: list[bytes] = []
    lens: list[int] = []
    size = 0
    while len(payloads) < want and size < FEED_BYTES:
        # One chunk per read when sizes vary or chunks are large, so a
        # batch never holds more than FEED_BYTES of pickles; bare items
        # are pickled in bulk.
        n = 1
        if plan is not None:
            left = len(plan) - planned - len(payloads)
            if left == 0:
                chunks.exhausted = True
                break
            if chunks.single:
                n = min(want - len(payloads), left)
            else:
                chunks.size = plan[planned + len(payloads)]
        elif adaptive:
            hint = engine.chunk_hint(job)
            chunks.size = hint if max_size is None else min(hint, max_size)
        elif chunks.single:
            n = want - len(payloads)
        more, more_lens = chunks.read(n)
        payloads += more
        lens += more_lens
        size += sum(map(len, more))
        if chunks.exhausted or not more:
            break
        if eager and n == 1:
            # A map's chunk goes to the workers as soon as it is pickled:
            # its large buffers sit in shared memory, whose writer waits
            # for blocks to be freed past a soft limit, and only workers
            # that have the chunk free them.
            break
    return payloads, lens


def feed(engine: _shoal.Engine, job: int, chunks: Chunks, *, plan: list[int]) -> None:
    """Read, pickle and submit all of ``chunks`` (a map's input, in memory),
    chunk sizes from ``plan``. Stops early when pickling fails
    (``chunks.error``)."""
    planned = 0
    while not chunks.exhausted:
        payloads, lens = _read_batch(engine, job, chunks, EVERYTHING_BATCH, plan=plan, planned=planned, eager=True)
        if not payloads:
            return
        engine.submit(job, payloads, lens)
        planned += len(payloads)


def _unread_error(items: int) -> BaseException:
    return ValueError(
        f"Pool not running: join() ended this imap's input after {items:n} items, as nobody was reading "
        "its results (the thread that read them was the one calling join(), or had exited), and an input "
        "may be endless. Items read before then ran and are delivered; the rest of the input was not read. "
        "To run all of it, read the results to the end before join(), or from another thread while join() waits."
    )


def _terminated_error(items: int) -> BaseException:
    from shoal._errors import PoolTerminatedError

    return PoolTerminatedError(
        f"the pool was terminated after this imap's input was read up to {items:n} items; the rest was not read"
    )


# What _Lazy.next returns when the results it waited for went to its list.
_TAKEN = object()


class _Raise:
    """Stands in an iterator's queue for an item that failed."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Lazy:
    """One lazy job (``imap``): its input, read by a feeder thread of its
    own, and its outcomes, moved into ``items`` by whoever reads them.

    The feeder reads only while the job's window has room, so input is read
    as workers need it, and the user's iterable runs where it cannot block
    a caller: ``imap()``, ``next(timeout)``, ``close()`` or ``terminate()``.
    It waits in the engine without the GIL. It holds no reference to the
    iterator, so an iterator nobody holds is collected (``dropped``). An
    input in memory that its one caller reads to the end (``here``, a
    WorkerPool's ``map``) is read by that caller instead, between results.

    Invariants: chunks are submitted only under ``feed_lock`` while
    ``ended`` is unset; ``ended`` is set once, under ``feed_lock``, after
    the engine has been told that the input is complete (the engine refuses
    chunks after that), and ``input_error`` then says why it ended early.
    Outcomes are taken only under ``take_lock``.
    """

    def __init__(
        self,
        engine: _shoal.Engine,
        job: int,
        chunks: Chunks,
        adaptive: bool,
        window: int,
        plan: list[int] | None = None,
    ) -> None:
        self.engine = engine
        self.job = job
        self.chunks: Chunks | None = chunks
        self.adaptive = adaptive
        # Each chunk's length, in order, for an input in memory (see Jobs.map).
        self.plan = plan
        self.window = window
        # Items in each chunk of several, by index, when there is no plan;
        # recorded before the chunk is submitted, as a reader may take its
        # outcome at once.
        self.chunk_lens: dict[int, int] = {}
        self.submitted = 0  # chunks
        self.taken = 0  # chunks whose outcomes a reader took
        self.items_read = 0
        # Seconds per item the last batch took to read; None before the first.
        self.item_secs: float | None = None
        self.items: deque[Any] = deque()  # values, and _Raise for failed items
        self.take_lock = threading.Lock()
        # Reentrant: a collector may terminate a pool (Pool.__del__, so
        # cut()) on a thread that holds it.
        self.feed_lock = threading.RLock()
        self.ended = threading.Event()
        self.input_error: BaseException | None = None
        # The thread that last waited for a result; None until one asks.
        self.reader: threading.Thread | None = None
        # The iterator was collected.
        self.dropped = False
        # Some chunk had failed items (_Raise in items): results are then
        # taken one by one, so the first failure raises where it stands.
        self.raised = False
        # Nobody takes results as they come, yet the whole input must run
        # (join): the feeder takes them, to make room.
        self.drain = False
        # The feeder is inside the user's iterable.
        self.reading = False
        self.done = False
        # Fed by its reader, not the feeder thread (see feed_here).
        self.here = False
        # The feeder thread, made when started: a map fed by its reader never
        # starts one, and making a Thread cost each such map ~0.06 ms.
        self.feeder: threading.Thread | None = None

    def start_feeder(self) -> None:
        """Start the thread that reads the input (see :meth:`_feed`)."""
        self.feeder = threading.Thread(target=self._feed, name=f"shoal-feeder-{self.job}", daemon=True)
        self.feeder.start()

    def feeding(self) -> bool:
        """Whether the feeder thread runs."""
        feeder = self.feeder
        return feeder is not None and feeder.is_alive()

    # -- the feeder thread -----------------------------------------------------
    def _feed(self) -> None:
        engine, job = self.engine, self.job
        # Room the feeder waits for: a batch's worth, not a wake-up per
        # result taken. A reader that waits takes every outcome in flight,
        # so the room it leaves always grows back to this.
        batch = min(FEED_CHUNKS, max(1, self.window // 4))
        fed = False
        try:
            while not self.ended.is_set():
                if self.dropped and self.reader is not None:
                    # Left by its reader (a break): the rest stays unread.
                    self._abandon()
                    break
                room = engine.room(job)
                # An adaptive batch is one chunk: once awake, fill the room.
                # With nothing in flight, no outcome can make more room than
                # there is (a window gives less before its first result), so
                # whatever there is is used, as the engine's wait_room does.
                if room >= batch or (room > 0 and (fed or self.submitted == self.taken)):
                    # The first chunk goes alone (its result comes first);
                    # the room it leaves is filled at once, not a batch's
                    # worth later, which a window gives only once a result is
                    # back: every worker gets work before any finishes, as a
                    # task that waits for the others (a Barrier) needs.
                    alone = self.item_secs is None
                    self._feed_batch(room)
                    fed = self.adaptive or alone
                    continue
                fed = False
                if self.drain or (self.dropped and self.reader is None):
                    # Results nobody will take as they come: take them here.
                    if not self._drain() and not self.ended.is_set():
                        if engine.finished(job):
                            # Its input was ended in the engine (a cancel).
                            raise RuntimeError(f"job {job} takes no more input")
                        engine.wait_ready(job, FEED_POLL)
                else:
                    # Raises once the job takes no more input (a cancel,
                    # the engine terminating), as a submit would.
                    engine.wait_room(job, batch, FEED_POLL)
        except BaseException as exc:  # noqa: BLE001 - an engine error ends the input, for the reader to see
            with self.feed_lock:
                if not self.ended.is_set():
                    self._end(exc)
        finally:
            if self.dropped:
                engine.abandon(job)
                self.items.clear()

    def feed_here(self) -> None:
        """Read and submit input on the calling thread while the window has
        room: the reader's part when it feeds the input (``here``), at the
        start and whenever it has taken results; and the caller's first
        window when it primes a lazy map (``Jobs.start_lazy``). A reader
        feeds an input in memory that it reads to the end (a WorkerPool's
        ``map``), where a feeder thread's start cost each map ~0.1 ms, and
        1.5 ms while the workers the map has just forked take the CPUs. An
        error ends the input, as in :meth:`_feed`; Ctrl-C is raised here
        too, at once (the results before it may wait for something that
        only it ends)."""
        try:
            while not self.ended.is_set():
                room = self.engine.room(self.job)
                if room <= 0:
                    return
                self._feed_batch(room)
        except BaseException as exc:  # the reader meets it after the results before it
            with self.feed_lock:
                if not self.ended.is_set():
                    self._end(exc)
            if isinstance(exc, KeyboardInterrupt):
                raise

    def _feed_batch(self, room: int) -> None:
        """Read up to ``room`` chunks (the user's code, without a lock) and submit them."""
        if self.plan is not None:
            self._feed_planned(room)
            return
        chunks = self.chunks
        with self.feed_lock:
            if self.ended.is_set() or chunks is None:
                return
            self.reading = True
        # As many chunks as the input gave in FEED_LATENCY last time.
        want, max_size = min(room, FEED_CHUNKS), None
        if self.item_secs is None:
            want = 1  # the first item goes alone: its result comes first
        elif self.item_secs > 0:
            max_size = max(1, int(FEED_LATENCY / self.item_secs))
            want = max(1, min(want, max_size // (1 if chunks.single else chunks.size)))
        if self.adaptive and self.submitted < self.window:
            # A first window of single items, whatever the engine has
            # learnt meanwhile: a short input runs one item a task (a crash
            # fails only its item), and the engine times items before it
            # groups them.
            max_size = 1
        payloads: list[bytes] = []
        lens: list[int] = []
        error: BaseException | None = None
        began = time.monotonic()
        try:
            if chunks.sliced:  # sub-ranges: no user code, nothing pending
                payloads, lens = _read_batch(
                    self.engine, self.job, chunks, want, adaptive=self.adaptive, max_size=max_size
                )
            else:
                if self.adaptive:
                    hint = self.engine.chunk_hint(self.job)
                    want, chunks.size = 1, hint if max_size is None else min(hint, max_size)
                chunks.fill(want)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and the like from the iterable surface at its position
            error = exc
        with self.feed_lock:
            self.reading = False
            if self.ended.is_set():
                return  # cut while reading: the error set then says where
            if self.dropped and self.reader is not None:
                self._abandon()
                return
            if not chunks.sliced:
                payloads, lens = chunks.pack(done=True)
            self.item_secs = (time.monotonic() - began) / max(1, sum(lens))
            self._submit(payloads, lens)
            if error is not None or chunks.exhausted:
                self._end(error if error is not None and not chunks.pickling_failed else chunks.error)
        if self.here and isinstance(error, KeyboardInterrupt):
            raise error  # on the reader's thread: see feed_here

    def _feed_planned(self, room: int) -> None:
        """``_feed_batch`` for an input in memory (``plan``): up to ``room``
        chunks, read as map's ``feed`` reads them, each submitted as soon as
        it is pickled (see ``_read_batch``'s ``eager``), all in one call: a
        return to the caller's loop per chunk (the engine's room asked again,
        the read timed) cost a WorkerPool's map ~10 µs a chunk over
        ``Pool.map``."""
        chunks, plan = self.chunks, self.plan
        assert plan is not None
        with self.feed_lock:
            if self.ended.is_set() or chunks is None:
                return
            self.reading = True
        error: BaseException | None = None
        began, read = time.monotonic(), 0
        try:
            while room > 0:
                payloads: list[bytes] = []
                lens: list[int] = []
                try:
                    payloads, lens = _read_batch(
                        self.engine, self.job, chunks, room, plan=plan, planned=self.submitted, eager=True
                    )
                    if self.submitted + len(lens) >= len(plan):
                        chunks.exhausted = True  # ends the input with its last chunk
                except BaseException as exc:  # noqa: BLE001 - surfaces at its position, as in _feed_batch
                    error = exc
                with self.feed_lock:
                    if self.ended.is_set():
                        return  # cut while reading: the error set then says where
                    if self.dropped and self.reader is not None:
                        self._abandon()
                        return
                    self._submit(payloads, lens)
                    if error is not None or chunks.exhausted:
                        self._end(error if error is not None and not chunks.pickling_failed else chunks.error)
                        break
                if not lens:
                    break
                room -= len(lens)
                read += sum(lens) if not chunks.single else len(lens)
        finally:
            with self.feed_lock:
                self.reading = False
                self.item_secs = (time.monotonic() - began) / max(1, read)
        if self.here and isinstance(error, KeyboardInterrupt):
            raise error  # on the reader's thread: see feed_here

    def _submit(self, payloads: list[bytes], lens: list[int]) -> None:
        """Submit chunks (under ``feed_lock``, input not ended)."""
        if not payloads:
            return
        chunks = self.chunks
        assert chunks is not None
        first = self.submitted
        if not chunks.single and self.plan is None:  # a plan has every chunk's length
            self.chunk_lens.update(zip(range(first, first + len(lens)), lens, strict=True))
        self.submitted += len(lens)
        self.items_read += len(lens) if chunks.single else sum(lens)
        try:
            self.engine.submit(self.job, payloads, lens)
        except RuntimeError:
            if self.ended.is_set():
                return  # ended on this thread meanwhile (see feed_lock)
            raise

    def _flush(self) -> None:
        """Submit the items the feeder has read while it waits inside the
        iterable for the next: their results may be what the iterable waits
        for (a generator fed from the results). A reader calls it when it has
        nothing else to wait for."""
        with self.feed_lock:
            chunks = self.chunks
            if self.ended.is_set() or chunks is None or not self.reading or self.plan is not None:
                return  # a planned input is in memory: its reads never block
            payloads, lens = chunks.pack(done=False)
            self._submit(payloads, lens)
            if chunks.pickling_failed:
                self._end(chunks.error)

    def _drain(self) -> bool:
        """Take outcomes nobody is waiting for (kept for a later read, or
        dropped with the iterator); whether any came."""
        if not self.take_lock.acquire(timeout=FEED_POLL):
            return True  # a reader is taking them
        try:
            got = self._absorb()
            if self.dropped:
                self.items.clear()
            return got
        finally:
            self.take_lock.release()

    def _end(self, error: BaseException | None) -> None:
        """The input has ended (under ``feed_lock``), early with ``error``."""
        self.input_error = error
        self.chunks = None  # let go of the iterable
        try:
            self.engine.finish_input(self.job)
        except RuntimeError:
            pass  # cancelled and forgotten in the engine: complete already
        finally:
            self.ended.set()

    def _abandon(self) -> None:
        with self.feed_lock:
            if not self.ended.is_set():
                self.chunks = None
                self.engine.abandon(self.job)  # its input is complete, too
                self.ended.set()

    def cut(self, error: Callable[[int], BaseException]) -> None:
        """End the input where it is, from another thread: what was read
        runs, and the reader meets ``error(items read)`` after it."""
        with self.feed_lock:
            if not self.ended.is_set():
                self._end(error(self.items_read))

    # -- the reader --------------------------------------------------------------
    def _absorb(self, into: list[Any] | None = None) -> bool:
        """Move finished outcomes from the engine into ``items``; whether any
        came. ``into``: a list that takes them instead, in order, while none
        failed and ``items`` is empty (``take_into``): one copy fewer per
        result; from a failed item on, they go to ``items``."""
        lens, plan = self.chunk_lens, self.plan
        # Chunks the engine's side decodes (packed ones) leave lens there.
        kept = lens if plan is None else None
        items = self.items
        target: list[Any] | deque[Any] = items if into is None or items or self.raised else into
        if target is into:
            # Straight into the caller's list: no second list of the values.
            _, chunks, rest = self.engine.take_values(self.job, TAKE_CHUNKS, loads, kept, into)
        else:
            values, chunks, rest = self.engine.take_values(self.job, TAKE_CHUNKS, loads, kept)
            target.extend(values)
        self.taken += chunks + len(rest)
        for index, status, single, payload in rest:
            decoded, errors = decode(status, single, payload, lens.pop(index, 1) if plan is None else plan[index])
            if errors is None:
                target.extend(decoded)
            else:
                self.raised = True
                target = items
                items.extend(_Raise(errors[k]) if k in errors else v for k, v in enumerate(decoded))
        return bool(chunks or rest)

    def next(self, timeout: float | None, into: list[Any] | None = None) -> Any:
        """The next result, waiting for it (the iterator's slow path).
        ``into``: a list the results that arrive go to, straight from the
        engine, when none are waiting in ``items`` (``take_into``); then
        returns ``_TAKEN`` once they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        flush_wait = FLUSH_WAIT
        with self.take_lock:
            self.reader = threading.current_thread()
            while True:
                if self.items:
                    value = self.items.popleft()
                    if type(value) is _Raise:
                        raise value.exc
                    return value
                if self.done:
                    raise StopIteration
                before = 0 if into is None else len(into)
                if self._absorb(into):
                    if self.here:
                        self.feed_here()  # room the results left
                    if into is not None and len(into) > before:
                        return _TAKEN
                    continue
                if self.ended.is_set() and self.engine.finished(self.job):
                    # Outcomes may have arrived between the take above and
                    # this check; only an empty take after "finished" means
                    # everything was handed over.
                    if self._absorb():
                        continue
                    self.done = True
                    self.engine.abandon(self.job)
                    if self.input_error is not None:
                        error, self.input_error = self.input_error, None
                        raise error
                    continue
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self.taken == self.submitted and self.reading:
                    # Nothing runs: only the feeder, inside the iterable, can
                    # give this reader a result. Submit what it has read, and
                    # look again soon, as it may read more and block again.
                    self._flush()
                    if self.taken == self.submitted:
                        left = flush_wait if left is None else min(left, flush_wait)
                        flush_wait = min(2 * flush_wait, FEED_POLL)
                if not self.engine.wait_ready(self.job, left) and deadline is not None:
                    if time.monotonic() >= deadline:
                        raise TimeoutError

    def release(self) -> None:
        """The iterator was collected: results nobody can read are dropped.
        Input a reader left stays unread; input nobody read runs on."""
        self.dropped = True
        if self.ended.is_set():
            # No feeder submits any more; one still running drops outcomes too.
            self.engine.abandon(self.job)


class IMapIterator(Iterator[T], AsyncIterator[T], Generic[T]):
    """The iterator ``imap`` returns: results in input order, as they arrive.

    Input is read by a feeder thread, only while the job's window has room,
    so a generator is consumed as workers need it, never blocks the thread
    that iterates, and a consumer that stops early (a ``break``) leaves the
    rest unread. ``close(); join()`` runs the whole input of an iterator
    nobody has read yet, as ``multiprocessing`` does.

    ``async for`` reads it from an event loop without blocking it: the
    engine's callback thread wakes the loop when results arrive. Cancelling
    the task that reads leaves the iterator as it was (no result is lost;
    the next read goes on from there).
    """

    _ordered = True
    # The event loops waiting for this job, made on the first async read.
    _waiters: ReadyWaiters | None = None

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
        pinned: bool = False,
        unpack: bool = False,
        plan: list[int] | None = None,
        unbounded: bool = False,
    ) -> None:
        # No chunksize: chunk lengths from ``plan`` (an eager map's), else
        # the engine suggests one per chunk (adaptive).
        adaptive = chunksize is None and plan is None
        chunks = Chunks(iterable, chunksize or (plan[0] if plan else 1), single=chunksize == 1, oob=jobs.oob)
        if window is None:
            window = _shoal.window_chunks(jobs.workers, adaptive)
        # Unbounded: the engine's job has no window (all of it may be in
        # flight at once), though the feeder's batches are sized by ``window``.
        job_window = None if unbounded else window
        job = jobs.new_job(func, _bits(chunks.single, star, unpack), self._ordered, job_window, timeout, pinned)
        self._lazy = lazy = _Lazy(jobs.engine, job, chunks, adaptive, window, plan)
        self._job = job  # the engine's id of the job, for a front door to cancel it
        self._items = lazy.items

    def __iter__(self) -> IMapIterator[T]:
        return self

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
        return self._lazy.next(timeout)

    __next__ = next

    def take_into(self, out: list[T]) -> bool:
        """Append the next result to ``out``, waiting for it, and every
        result that has arrived after it, whole chunks at a time, with no
        Python step per result (a front door's ``map`` that collects a
        list, or a generator that yields a batch at a time). False once
        there are no more; a failed item raises its error as :meth:`next`
        does, with the results before it in ``out``."""
        lazy = self._lazy
        try:
            if self._items:
                out.append(self.next())
            else:
                # Waits, and moves what arrives straight into out, not
                # through items (a few percent of a 1M-int map's time).
                value = lazy.next(None, out)
                if value is not _TAKEN:
                    out.append(value)
        except StopIteration:
            return False
        with lazy.take_lock:
            if not lazy.raised:
                items = self._items
                # Only the reader (this thread) and holders of take_lock
                # touch items: nothing is added or taken between the two.
                out.extend(items)
                items.clear()
                # Straight into out, while nothing has failed.
                lazy._absorb(out)
                if not lazy.raised:
                    return True
            else:
                lazy._absorb()
        # A failure among them: one by one, so it raises at its place.
        while self._items:
            out.append(self.next())
        return True

    def __aiter__(self) -> IMapIterator[T]:
        return self

    async def __anext__(self) -> T:
        """The next result, awaited; ``StopAsyncIteration`` at the end."""
        # Fast path, as in next(): what has arrived, in one coroutine.
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
        return await self._anext(None)

    async def _anext(self, timeout: float | None) -> T:
        """The next result, waited for on the running event loop;
        ``multiprocessing.TimeoutError`` after ``timeout`` seconds."""
        from asyncio import get_running_loop

        loop = get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        lazy = self._lazy
        flush_wait = FLUSH_WAIT
        while True:
            try:
                return self.next(0)  # what has arrived, without waiting
            except StopIteration:
                raise StopAsyncIteration from None
            except TimeoutError as exc:
                if exc.__cause__ is not None or exc.args:
                    raise  # a task's own multiprocessing.TimeoutError
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = ReadyWaiters(lazy.engine, lazy.job)
            woken = loop.create_future()
            if not waiters.add(loop, woken):
                continue  # something arrived meanwhile
            # Look again by then even without news: at the deadline, and
            # soon while only the feeder, blocked in the iterable, can give
            # a result (next() submits what it has read; see _Lazy.next).
            delay = None if deadline is None else max(0.0, deadline - loop.time())
            if lazy.taken == lazy.submitted and lazy.reading:
                delay = flush_wait if delay is None else min(delay, flush_wait)
                flush_wait = min(2 * flush_wait, FEED_POLL)
            timer = None if delay is None else loop.call_later(delay, _set_woken, woken)
            try:
                await woken
            finally:
                if timer is not None:
                    timer.cancel()
                waiters.discard(woken)

    def __del__(self) -> None:
        lazy = getattr(self, "_lazy", None)
        if lazy is not None and not lazy.done:
            try:
                lazy.release()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class IMapUnorderedIterator(IMapIterator[T]):
    """The iterator ``imap_unordered`` returns: results as they complete."""

    _ordered = False
