"""``shoal.Pool``: a drop-in for ``multiprocessing.Pool`` on shoal's engine."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from shoal import _protocol as P
from shoal import _shm, _shoal, _start
from shoal._chunks import Chunks, task_flags
from shoal._pickling import dumps, dumps_func, dumps_one, dumps_oob, loads
from shoal._results import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult, decode_one

T = TypeVar("T")
_Iterator = TypeVar("_Iterator", bound="IMapIterator[Any]")

# The states multiprocessing.pool uses, with the same values.
INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()

# How many functions a pool keeps registered for reuse.
_FUNC_CACHE = 64
# Result arenas beyond one per worker: a process a task forked keeps its
# worker's arena locked after the worker is gone.
_SPARE_RESULT_ARENAS = 2


@atexit.register
def _terminate_live_pools() -> None:
    for pool in list(_live_pools):
        pool._shutdown()


class _WorkerHandle:
    """What ``Pool._pool`` lists: a worker's pid and whether it is alive."""

    def __init__(self, engine: _shoal.Engine, pid: int) -> None:
        self._engine = engine
        self.pid = pid

    def is_alive(self) -> bool:
        return self._engine.is_alive(self.pid)

    def __repr__(self) -> str:
        return f"<shoal worker pid={self.pid}>"


class Pool:
    """A pool of worker processes, with the API of ``multiprocessing.Pool``.

    Differences from the standard library are all in the direction of not
    hanging: a worker that dies fails only the task it was running (with
    :class:`shoal.WorkerLostError`), results of a terminated pool raise
    instead of never arriving, and ``imap`` reads its input lazily.
    ``start_method`` chooses how workers start (see ``shoal._start``).
    """

    _wrap_exception = True

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        start_method: str | None = None,
    ) -> None:
        self._state = INIT
        self._owner = os.getpid()
        # None only until start_engine returns; every method but those that
        # clean up (which check) runs on a pool that has its engine.
        self._engine: _shoal.Engine = None  # type: ignore[assignment]
        self._zygote: _start.Zygote | None = None
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._start_method = _start.resolve(context, start_method)
        # Two layers: the worker must set sys.path before it can unpickle an
        # initializer that lives in a module only the parent's path finds.
        # Created before the workers, so that forked ones inherit them mapped.
        self._buffers = _shm.PoolBuffers(processes + _SPARE_RESULT_ARENAS)
        self._oob = self._buffers.outbound
        init = {
            "sys_path": list(sys.path),
            "initializer": dumps((initializer, tuple(initargs))),
            "shm": self._buffers.settings(),
        }
        self._engine, self._zygote = _start.start_engine(self._start_method, processes, dumps(init), maxtasksperchild)
        self._maxtasksperchild = maxtasksperchild
        self._iterators: weakref.WeakSet[IMapIterator[Any]] = weakref.WeakSet()
        # Functions already registered with the engine, by identity.
        self._funcs: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._funcs_lock = threading.Lock()
        # apply_async's common call, wholly in Rust (crates/shoal-py/src/plain_apply.rs).
        self._apply_plain = _shoal.PlainApply(self._engine, self._funcs, dumps_one, self._oob, loads, decode_one)
        self._state = RUN
        _live_pools.add(self)

    # -- helpers -------------------------------------------------------------
    def _check_running(self) -> None:
        # A forked child's copy also reads RUN; the engine refuses it with a
        # clear error on the first call, without a getpid() here per task.
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _func_id(self, func: Callable[..., Any]) -> tuple[int, bool]:
        """The engine's id for ``func``, and whether the caller must release
        it once its job holds it. Functions that pickle by reference are
        kept for later calls, so workers receive them once."""
        hit = self._funcs.get(id(func))  # a dict read is atomic; no lock needed
        if hit is not None and hit[0] is func:
            return hit[1], False
        payload, by_reference = dumps_func(func)
        fid = self._engine.register_func(payload)
        if not by_reference:
            return fid, True
        with self._funcs_lock:
            self._funcs[id(func)] = (func, fid)
            if len(self._funcs) > _FUNC_CACHE:  # oldest first out
                _, (_, old) = self._funcs.popitem(last=False)
                self._engine.release_func(old)
        return fid, False

    def _window_chunks(self, adaptive: bool = False) -> int:
        if adaptive:
            # Each chunk is already ~2 ms of work: a few per worker keep them
            # busy, and input read ahead stays small.
            return 4 * self._processes + 4
        # Room for every worker to hold a deep queue of tiny chunks; large
        # chunks are held back by the engine's byte budget instead.
        return max(1024, 64 * self._processes)

    @property
    def _pool(self) -> list[_WorkerHandle]:
        """The live workers, like ``multiprocessing.Pool._pool``."""
        if self._engine is None:
            return []
        return [_WorkerHandle(self._engine, pid) for pid in self._engine.worker_pids()]

    def _repopulate_pool(self) -> None:
        """Kept for compatibility: the engine replaces workers by itself."""

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} state={self._state} pool_size={self._processes}>"

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    # -- submission ----------------------------------------------------------
    def apply(self, func: Callable[..., T], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {}) -> T:
        """Call ``func(*args, **kwds)`` in a worker and return the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[T]:
        """Call ``func(*args, **kwds)`` in a worker; returns an ``AsyncResult``."""
        if callback is None and error_callback is None and not kwds and self._state == RUN:
            # The common call, once func is cached. None: not taken.
            pending = self._apply_plain(func, args)
            if pending is not None:
                return pending
        self._check_running()
        try:
            if type(args) is not tuple:
                args = tuple(args)
            # Without keywords the call travels as func(*args): a smaller
            # pickle (or none: plain numbers travel packed), and no dict to
            # build and unpack.
            if kwds:
                flags, chunk = P.APPLY | P.SINGLE, dumps_oob((args, dict(kwds)), self._oob)
            else:
                flags, chunk = P.STAR | P.SINGLE, dumps_one(args, self._oob)
            fid, owned = self._func_id(func)
        except Exception as exc:  # noqa: BLE001 - delivered through the result, as the stdlib does
            failed: ApplyResult[T] = ApplyResult(self, callback, error_callback)
            failed._fail_now(exc)
            return failed
        try:
            if callback is None and error_callback is None:
                # The common case: a result object made in Rust (see
                # crates/shoal-py/src/pending.rs).
                return self._engine.apply_pending(fid, flags, chunk, loads, decode_one)
            result: ApplyResult[T] = ApplyResult(self, callback, error_callback)
            result._start(self._engine.apply(fid, flags, chunk))
            return result
        finally:
            if owned:
                self._engine.release_func(fid)

    def map(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None) -> list[T]:
        """Apply ``func`` to every item; return the results in order."""
        return self._map_async(func, iterable, 0, chunksize).get()

    def starmap(
        self, func: Callable[..., T], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[T]:
        """Like :meth:`map`, calling ``func(*item)``."""
        return self._map_async(func, iterable, P.STAR, chunksize).get()

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[T]:
        """Asynchronous :meth:`map`; returns a ``MapResult``."""
        return self._map_async(func, iterable, 0, chunksize, callback, error_callback)

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[T]:
        """Asynchronous :meth:`starmap`; returns a ``MapResult``."""
        return self._map_async(func, iterable, P.STAR, chunksize, callback, error_callback)

    def _map_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        flags: int,
        chunksize: int | None,
        callback: Any = None,
        error_callback: Any = None,
    ) -> MapResult[T]:
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        # Sized by the hasattr test above, which mypy does not narrow on.
        n = len(iterable)  # type: ignore[arg-type]
        if chunksize is None and self._maxtasksperchild is None:
            # Chunks that shrink towards the end, so the workers finish together.
            lens = _shoal.guided_map_chunks(n, self._processes)
        else:
            if chunksize is None:
                # maxtasksperchild counts chunks: keep multiprocessing's, so a
                # worker is replaced as often as it would be there.
                chunksize = _shoal.default_map_chunksize(n, self._processes)
            elif chunksize < 1:
                raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
            size = chunksize or 1
            lens = [size] * (n // size) + ([n % size] if n % size else [])
        result: MapResult[T] = MapResult(self, lens, callback, error_callback)
        if not lens:
            return result
        chunks = Chunks(iterable, lens[0], oob=self._oob)
        try:
            fid, owned = self._func_id(func)
        except Exception as exc:  # noqa: BLE001 - delivered through the result, as the stdlib does
            result._fail_now(exc)
            return result
        try:
            job = self._engine.new_job(fid, task_flags(chunks.single, flags), True, None)
        finally:
            if owned:
                self._engine.release_func(fid)
        result._start(job)
        # Submit as chunks are pickled, so workers start on the first while
        # the parent pickles the rest.
        sent = 0
        while sent < len(lens) and not chunks.exhausted:
            if chunks.single:
                payloads, got = chunks.read(min(len(lens) - sent, 4096))
            else:
                chunks.size = lens[sent]
                payloads, got = chunks.read(1)
            if payloads:
                self._engine.submit(job, payloads, got)
                sent += len(payloads)
            if chunks.error is not None:
                # Chunks already sent still run; the call fails with the error.
                self._engine.finish_input(job)
                self._engine.release(job)
                result._fail_now(chunks.error)
                return result
            if not payloads:
                break
        self._engine.finish_input(job)
        return result

    def imap(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None) -> IMapIterator[T]:
        """Like :meth:`map`, but yields results in order as they arrive,
        reading ``iterable`` only as workers need it. With no ``chunksize``,
        chunks start at one item and grow with the measured time per item,
        so the first result comes as soon as one task is done."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapUnorderedIterator[T]:
        """Like :meth:`imap`, but yields results as they complete."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(
        self, cls: type[_Iterator], func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None
    ) -> _Iterator:
        self._check_running()
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        fid, owned = self._func_id(func)
        try:
            return cls(self, fid, iterable, chunksize, 0)
        finally:
            if owned:
                self._engine.release_func(fid)

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        """Accept no more tasks; workers exit once queued work is done."""
        if self._state == RUN:
            self._state = CLOSE
            self._engine.close()

    def terminate(self) -> None:
        """Stop the workers now; unfinished tasks fail with ``PoolTerminatedError``."""
        self._state = TERMINATE
        self._shutdown()

    def join(self) -> None:
        """Wait for the workers to exit. Call :meth:`close` or :meth:`terminate` first."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        if self._engine is None:
            return
        # Lazy iterators still reading input: the stdlib would have queued
        # all of it already, so read it now and let it run.
        if self._state == CLOSE:
            for it in list(self._iterators):
                it._feed(everything=True)
        self._engine.join()
        self._close_zygote()
        self._buffers.close()

    def _shutdown(self) -> None:
        """Terminate and reap everything; safe to call more than once."""
        _live_pools.discard(self)
        if self._engine is None or os.getpid() != self._owner:
            return
        self._engine.terminate()
        self._engine.join()
        self._close_zygote()
        self._buffers.close()

    def _close_zygote(self) -> None:
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None

    def __enter__(self) -> Pool:
        if self._state != RUN:
            raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_owner", None) != os.getpid():
            return  # a forked child's copy: the pool is the parent's to close
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
        if getattr(self, "_engine", None) is not None:
            try:
                self._shutdown()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
