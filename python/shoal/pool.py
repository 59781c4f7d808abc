"""``shoal.Pool``: a drop-in for ``multiprocessing.Pool`` on shoal's engine."""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping

from shoal import _backend, _platform, _progress, _shm, _shoal
from shoal._jobs import IMapIterator, IMapUnorderedIterator, Jobs
from shoal._results import AsyncResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")
    _Iterator = TypeVar("_Iterator", bound="IMapIterator[Any]")

# The states multiprocessing.pool uses, with the same values.
INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


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

    Beyond the standard library, the map family takes
    ``progress_bar=True`` (with ``progress_bar_options`` and
    ``progress_bar_style``, as ``shoal.WorkerPool`` does): a tqdm bar drawn
    in this process from the engine's counters, at no cost per task.
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
        # None only until the backend has started; every method but those
        # that clean up (which check) runs on a pool that has its engine.
        self._engine: _shoal.Engine = None  # type: ignore[assignment]
        self._backend: _backend.Processes | _backend.Threads | None = None
        if processes is None:
            processes = _platform.usable_cpus()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        _platform.require_supported_kernel()
        self._backend = _backend.start(context, start_method, processes, initializer, initargs, maxtasksperchild)
        self._engine = self._backend.engine
        self._start_method = self._backend.method
        self._oob = self._backend.oob
        self._maxtasksperchild = maxtasksperchild
        # maxtasksperchild counts chunks: keep multiprocessing's chunk counts,
        # so a worker is replaced as often as it would be there.
        self._jobs = Jobs(
            self._engine,
            processes,
            self._oob,
            equal_chunks=maxtasksperchild is not None,
            inherited=self._backend.inherited,
        )
        self._apply_plain = self._jobs.apply_plain
        # Bars of maps under way, closed by terminate().
        self._bars: weakref.WeakSet[_progress.Progress] = weakref.WeakSet()
        self._state = RUN
        _live_pools.add(self)

    # -- helpers -------------------------------------------------------------
    def _check_running(self) -> None:
        # A forked child's copy also reads RUN; the engine refuses it with a
        # clear error on the first call, without a getpid() here per task.
        if self._state != RUN:
            raise ValueError("Pool not running")

    @property
    def _pool(self) -> list[_WorkerHandle]:
        """The live workers, like ``multiprocessing.Pool._pool``."""
        if self._engine is None:
            return []
        return [_WorkerHandle(self._engine, pid) for pid in self._engine.worker_pids()]

    @property
    def _buffers(self) -> _shm.PoolBuffers | None:
        """The shared-memory arenas of a process pool."""
        return None if self._backend is None else self._backend.buffers

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
            # The common call, once func is cached, wholly in Rust
            # (crates/shoal-py/src/plain_apply.rs). None: not taken.
            result = self._apply_plain(func, args)
            if result is not None:
                return result
            return self._jobs.apply(func, args, kwds, callback, error_callback, plain_tried=True)
        self._check_running()
        return self._jobs.apply(func, args, kwds, callback, error_callback)

    def map(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress_bar: bool = False,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
    ) -> list[T]:
        """Apply ``func`` to every item; return the results in order.
        ``progress_bar``: show a tqdm bar (``progress_bar_options``: tqdm's
        keyword arguments; ``progress_bar_style``: ``"std"``, ``"rich"``,
        ``"notebook"`` or ``"dashboard"``), as ``shoal.WorkerPool`` does."""
        self._check_running()
        if not progress_bar and progress_bar_options is None and progress_bar_style is None:
            return self._jobs.map(func, iterable, False, chunksize).get()
        return self._map_with_bar(
            func, iterable, False, chunksize, progress_bar, progress_bar_options, progress_bar_style
        )

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress_bar: bool = False,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
    ) -> list[T]:
        """Like :meth:`map`, calling ``func(*item)``."""
        self._check_running()
        if not progress_bar and progress_bar_options is None and progress_bar_style is None:
            return self._jobs.map(func, iterable, True, chunksize).get()
        return self._map_with_bar(
            func, iterable, True, chunksize, progress_bar, progress_bar_options, progress_bar_style
        )

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress_bar: bool = False,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
    ) -> AsyncResult[list[T]]:
        """Asynchronous :meth:`map`; returns an ``AsyncResult``. With
        ``progress_bar``, the bar closes by itself when the map ends."""
        self._check_running()
        if not progress_bar and progress_bar_options is None and progress_bar_style is None:
            return self._jobs.map(func, iterable, False, chunksize, callback, error_callback)
        return self._map_async_with_bar(
            func,
            iterable,
            False,
            chunksize,
            callback,
            error_callback,
            progress_bar,
            progress_bar_options,
            progress_bar_style,
        )[0]

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress_bar: bool = False,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
    ) -> AsyncResult[list[T]]:
        """Asynchronous :meth:`starmap`; returns an ``AsyncResult``."""
        self._check_running()
        if not progress_bar and progress_bar_options is None and progress_bar_style is None:
            return self._jobs.map(func, iterable, True, chunksize, callback, error_callback)
        return self._map_async_with_bar(
            func,
            iterable,
            True,
            chunksize,
            callback,
            error_callback,
            progress_bar,
            progress_bar_options,
            progress_bar_style,
        )[0]

    def _map_async_with_bar(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        progress_bar: bool,
        options: dict[str, Any] | None,
        style: str | None,
    ) -> tuple[Any, _progress.Progress | None, int]:
        """A map job, with its bar following it if there is one; the bar
        and the number of tasks too."""
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        total = len(iterable)  # type: ignore[arg-type]
        progress = self._progress(progress_bar, options, style, total)
        result = self._jobs.map(func, iterable, star, chunksize, callback, error_callback)
        job = result.job
        if progress is not None:
            if job is None:  # failed before it ran (pickling the function)
                progress.finish(_progress.FAILED, 0)
            else:
                engine = self._engine

                def outcome() -> str | None:
                    if engine.job_stats(job) is not None or not result.ready():
                        return _progress.RUNNING
                    return None if result.successful() else _progress.FAILED

                progress.start(_progress.job_counter(engine, job), lambda: total, outcome)
        return result, progress, total

    def _map_with_bar(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        progress_bar: bool,
        options: dict[str, Any] | None,
        style: str | None,
    ) -> list[Any]:
        result, progress, total = self._map_async_with_bar(
            func, iterable, star, chunksize, None, None, progress_bar, options, style
        )
        if progress is None:
            values: list[Any] = result.get()
            return values
        try:
            values = result.get()
        except KeyboardInterrupt:
            progress.finish(_progress.INTERRUPTED, self._count(result.job))
            raise
        except BaseException:
            progress.finish(_progress.FAILED, self._count(result.job))
            raise
        progress.finish(None, total=total)
        return values

    def _progress(
        self, progress_bar: bool, options: dict[str, Any] | None, style: str | None, total: int | None
    ) -> _progress.Progress | None:
        """A call's bar (not drawn yet), its options checked; None without one."""
        checked = _progress.check_options(progress_bar, options, style, total)
        if not progress_bar:
            return None
        progress = _progress.Progress(checked, style)
        self._bars.add(progress)
        return progress

    def _count(self, job: int | None) -> int | None:
        """Tasks of ``job`` that ran, if the engine still knows it."""
        if job is None or self._engine is None:
            return None
        try:
            return _progress.finished_items(self._engine.job_stats(job))
        except RuntimeError:
            return None

    def _imap_with_bar(
        self,
        make: Callable[[], _Iterator],
        iterable: Iterable[Any],
        progress_bar: bool,
        options: dict[str, Any] | None,
        style: str | None,
    ) -> _Iterator:
        """The iterator ``make()`` returns, its options checked first and
        its bar following it, closing once it has ended."""
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        progress = self._progress(progress_bar, options, style, total)
        it = make()
        if progress is None:
            return it
        engine, job, lazy = self._engine, it._job, it._lazy  # the job layer's, read only

        def known_total() -> int | None:
            if total is not None:
                return total
            return lazy.items_read if lazy.ended.is_set() else None

        def outcome() -> str | None:
            if lazy.done:  # read to its end
                return None
            stats = engine.job_stats(job)
            if stats is None:  # let go of (the iterator was dropped)
                return _progress.LEFT
            if stats["tally"]["cancelled"][1]:
                return _progress.TERMINATED
            return _progress.RUNNING

        progress.start(_progress.job_counter(engine, job), known_total, outcome)
        return it

    def imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress_bar: bool = False,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
    ) -> IMapIterator[T]:
        """Like :meth:`map`, but yields results in order as they arrive,
        reading ``iterable`` only as workers need it, on a thread of its own:
        a slow or blocking generator never blocks this call, ``next(timeout)``
        or :meth:`close`. With no ``chunksize``, chunks start at one item and
        grow with the measured time per item, so the first result comes as
        soon as one task is done. :meth:`join` after :meth:`close` runs the
        whole input of an iterator nobody has read from yet, as
        ``multiprocessing`` does; one its reader left (read from on the
        thread that joins, or by a thread that has exited) stops where it is,
        and reading it on raises ``ValueError`` there."""
        self._check_running()
        if not progress_bar and progress_bar_options is None and progress_bar_style is None:
            return self._jobs.imap(func, iterable, False, chunksize, ordered=True)
        return self._imap_with_bar(
            lambda: self._jobs.imap(func, iterable, False, chunksize, ordered=True),
            iterable,
            progress_bar,
            progress_bar_options,
            progress_bar_style,
        )

    def imap_unordered(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress_bar: bool = False,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
    ) -> IMapUnorderedIterator[T]:
        """Like :meth:`imap`, but yields results as they complete."""
        self._check_running()

        def make() -> IMapUnorderedIterator[T]:
            return self._jobs.imap(func, iterable, False, chunksize, ordered=False)  # type: ignore[return-value]

        if not progress_bar and progress_bar_options is None and progress_bar_style is None:
            return make()
        return self._imap_with_bar(make, iterable, progress_bar, progress_bar_options, progress_bar_style)

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
        """Wait for the workers to exit. Call :meth:`close` or :meth:`terminate` first.

        After :meth:`close`, it first waits for the input of every ``imap``
        still being read (see :meth:`imap`)."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        if self._engine is None:
            return
        if self._state == CLOSE:
            # imap inputs still being read: the engine finishes once they
            # end (Jobs.finish_lazy says which run on and which stop).
            self._jobs.finish_lazy()
        self._engine.join()
        self._jobs.join_feeders()
        for progress in list(self._bars):
            # Every job has ended: a bar its reader left closes where it is.
            progress.end(_progress.LEFT)
        self._release_backend()

    def _shutdown(self, collected: bool = False) -> None:
        """Terminate and reap everything; safe to call more than once.
        ``collected``: from ``__del__``, which may run on any thread, even
        one inside an imap's locks, so it does not wait for feeder threads
        (they end on their own, reading no more)."""
        _live_pools.discard(self)
        if self._engine is None or os.getpid() != self._owner:
            return
        for progress in list(getattr(self, "_bars", ())):
            progress.end(_progress.TERMINATED)
        jobs = getattr(self, "_jobs", None)
        if jobs is not None:
            # First, so no feeder submits to a terminating engine and each
            # imap's reader learns where its input stopped.
            jobs.stop_lazy()
        self._engine.terminate()
        self._engine.join()
        if jobs is not None and not collected:
            jobs.join_feeders()
        self._release_backend()

    def _release_backend(self) -> None:
        if self._backend is not None:
            self._backend.release()

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
                self._shutdown(collected=True)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
