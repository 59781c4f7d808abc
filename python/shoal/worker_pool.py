"""``shoal.WorkerPool``: MPIRE's ``WorkerPool`` on shoal's engine.

A program written for MPIRE runs unchanged once ``from mpire import
WorkerPool`` reads ``from shoal import WorkerPool`` (and ``mpire.utils``
reads ``shoal.utils``). Every call goes through the one job layer
(``_jobs.py``): a map is ``Jobs.imap`` of the user's function with the
task bit ``UNPACK``, by which the worker calls it on each task's arguments
as MPIRE does (a tuple unpacked, a dict as keywords), or, when extra
arguments come first (worker id, shared objects, state) or ``worker_init``
may fail every task, wrapped in ``_wp_worker.MapCall``, which adds them;
``map`` and ``map_unordered`` collect that route's results into a list in
batches (``IMapIterator.take_into``). ``apply_async`` is ``Jobs.apply``.
The worker side (state, ``worker_init``, ``worker_exit``) is
``_wp_worker.py``. Forked workers inherit the pool's settings (shared
objects included) instead of unpickling them (``_backend.inherited_init``).

What shoal does differently from MPIRE, on purpose:

* a worker that dies fails only the task it was running, with
  :class:`shoal.WorkerLostError` (a ``RuntimeError``); it is replaced and
  the pool stays usable;
* ``task_timeout`` kills the worker at the deadline, even inside C code: the
  task fails with :class:`shoal.TaskTimeoutError` (a builtin
  ``TimeoutError``), its worker is replaced; ``worker_init_timeout`` and
  ``worker_exit_timeout`` kill a worker stuck in its hook the same way (the
  engine's deadlines, crates/shoal-core/src/engine.rs ``State::step``);
* ``worker_init`` runs when each worker starts and ``worker_exit`` when it
  stops, whether or not it ran a task (MPIRE skips workers that got none);
* ``n_jobs=None`` counts the CPUs this process may use (its affinity, as
  ``shoal.Pool`` does), not the machine's.
"""

from __future__ import annotations

import atexit
import itertools
import math
import multiprocessing
import os
import warnings
import weakref
from collections.abc import Callable, Generator, Iterable, Sized

from shoal import _backend, _errors, _insights, _platform, _progress, _shm, _shoal, _spawning, _start, _wp_worker
from shoal._errors import func_name, rebuild
from shoal._jobs import IMapIterator, Jobs
from shoal._pickling import dumps_func, loads
from shoal._results import AsyncResult
from shoal.utils import chunk_tasks, is_ndarray, task_count

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


START_METHODS = ("fork", "forkserver", "spawn", "threading")
PROGRESS_BAR_STYLES = _progress.STYLES
# How long a worker told to exit may run worker_exit before it is killed,
# when the map gives no worker_exit_timeout: as long as it needs, within reason.
EXIT_GRACE = 24 * 3600.0
# MPIRE's default when neither chunk_size nor n_splits is given: 64 chunks
# per worker. A map of an input in memory without insights takes Pool.map's
# plan instead (see _run).
CHUNKS_PER_WORKER = 64
# MPIRE's default number of row blocks per worker for a numpy array.
NUMPY_SPLITS_PER_WORKER = 4
# Tasks per chunk MPIRE uses for an input of unknown length; shoal uses it
# only where max_tasks_active needs a known chunk size (else the engine
# sizes chunks by measured task time).
UNKNOWN_LENGTH_CHUNK = 4

_live: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _terminate_live() -> None:
    for pool in list(_live):
        pool.terminate()


def _not_implemented(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"shoal.WorkerPool does not implement {what} yet (shoal issue 14); "
        "leave it at its default to run this program on shoal"
    )


def check_number(
    var: Any, var_name: str, allowed_types: tuple[type[float], ...], none_allowed: bool, min_: float | None = None
) -> None:
    """Validate a parameter with MPIRE's errors: ``TypeError`` for a wrong
    type, ``ValueError`` below ``min_``."""
    if none_allowed and var is None:
        return
    if not isinstance(var, allowed_types):
        raise TypeError(f"{var_name} should be of type {allowed_types}")
    number: float = var  # every allowed type here is a number
    if min_ is not None and number < min_:
        raise ValueError(f"{var_name} should be >= {min_}")


def check_cpu_ids(cpu_ids: list[int | list[int]] | None, n_jobs: int) -> list[list[int]]:
    """``cpu_ids`` as one list of CPUs per worker, validated as MPIRE does:
    one entry for all workers or one per worker, each an int or a list of
    ints, every id within ``0..cpu_count()-1``."""
    converted: list[list[int]] = []
    if cpu_ids:
        if len(cpu_ids) != 1 and len(cpu_ids) != n_jobs:
            raise ValueError(f"Number of CPU IDs ({len(cpu_ids)}) does not match number of jobs ({n_jobs})")
        max_id = min_id = 0
        for cpu_id in cpu_ids:
            if isinstance(cpu_id, list):
                ids = cpu_id
            elif isinstance(cpu_id, int):
                ids = [cpu_id]
            else:
                raise TypeError("CPU ID(s) must be either a list or a single integer")
            converted.append(ids)
            max_id = max(max_id, *ids)
            min_id = min(min_id, *ids)
        n_cpus = multiprocessing.cpu_count()
        if max_id >= n_cpus:
            raise ValueError(f"CPU ID {max_id} exceeds the maximum CPU ID available on your system: {n_cpus - 1}")
        if min_id < 0:
            raise ValueError("CPU IDs cannot be negative")
    if len(converted) == 1:
        converted = converted * n_jobs
    return converted


class WorkerPool:
    """A pool of worker processes with the API of MPIRE's ``WorkerPool``.

    Workers start at the first map or apply, not here. ``n_jobs``: number
    of workers (``None`` or 0: the CPUs this process may use). ``cpu_ids``:
    CPUs to pin the workers to, one list for all or one per worker.
    ``shared_objects``: passed to the task, ``worker_init`` and
    ``worker_exit`` functions when not ``None``; it may hold
    ``multiprocessing`` locks, values, barriers and queues (see below).
    ``pass_worker_id`` and ``use_worker_state`` pass the worker's
    id (0..n_jobs-1) and a per-worker ``dict``; the extra arguments come in
    the order worker id, shared objects, worker state, then the task's.
    ``start_method``: ``fork``, ``forkserver`` or ``spawn`` (``None``:
    shoal's default, see ``shoal._start``), or ``threading``: workers are
    threads of this process, through the same route, and nothing is pickled
    (tasks get the very objects given). A thread cannot be killed, so under
    ``threading`` a ``task_timeout`` raises ``ValueError`` saying so, and
    ``terminate`` leaves a task that is still running to finish on its own. ``keep_alive``: keep the workers
    (and their state) from one map to the next instead of starting and
    stopping them for each. ``daemon``: whether tasks are refused to start
    processes of their own, as ``multiprocessing`` refuses daemons.
    ``use_dill`` is accepted and changes nothing: shoal already sends
    lambdas, closures and a script's functions under every start method.
    ``order_tasks``: chunk ``i`` of each map goes to worker ``i % n_jobs``
    (and waits for it), instead of to whichever worker is free.
    ``enable_insights``: keep the timings :meth:`get_insights` and
    :meth:`print_insights` report (the engine counts them anyway; this
    only says whether to report them).

    Shared objects reach the workers as ``multiprocessing`` passes a
    process's arguments: forked workers inherit them; others get them
    pickled as ``multiprocessing`` pickles for a process it spawns, so
    locks, values, arrays, events, barriers and queues made by ``pool.ctx``
    (or a context of the pool's start method) work under every method. One
    made for ``fork`` (by ``multiprocessing`` itself where its default is
    fork) reaches forked workers only; under ``spawn`` or ``forkserver``
    the first map raises ``RuntimeError`` saying so.
    """

    def __init__(
        self,
        n_jobs: int | None = None,
        daemon: bool = True,
        cpu_ids: list[int | list[int]] | None = None,
        shared_objects: Any = None,
        pass_worker_id: bool = False,
        use_worker_state: bool = False,
        start_method: str | None = None,
        keep_alive: bool = False,
        use_dill: bool = False,
        enable_insights: bool = False,
        order_tasks: bool = False,
    ) -> None:
        self._owner = os.getpid()
        self._backend: _backend.Processes | _backend.Threads | None = None
        self._jobs: Jobs | None = None
        # apply_async's common call (Jobs.apply_plain), while the running
        # workers call a task's function itself: no extra arguments and no
        # worker_init. None: take the full path.
        self._apply_plain: Callable[[Callable[..., Any], tuple[Any, ...]], _shoal.JobResult | None] | None = None
        check_number(n_jobs, "n_jobs", (int,), True, 0)
        self._n_jobs: int = n_jobs or _platform.usable_cpus()
        if start_method is not None and start_method not in START_METHODS:
            raise ValueError(f"start_method should be one of {START_METHODS}, not {start_method!r}")
        self._start_method = start_method
        self._order_tasks = bool(order_tasks)
        self._cpu_ids = check_cpu_ids(cpu_ids, self._n_jobs)
        self._daemon = bool(daemon)
        self._shared_objects = shared_objects
        self._pass_worker_id = bool(pass_worker_id)
        self._use_worker_state = bool(use_worker_state)
        self._keep_alive = bool(keep_alive)
        self._use_dill = bool(use_dill)
        self._insights_enabled = bool(enable_insights)
        # The engine's counters as the last workers left them, for insights
        # read after they stopped (Engine.stats; see _insights.py).
        self._last_stats: dict[str, Any] | None = None
        # The bar of the map under way, so terminate() can close it.
        self._progress: _progress.Progress | None = None
        # Set when a setter changed what running workers were started with.
        self._params_changed = False
        # What the running workers were started with.
        self._worker_init: Callable[..., Any] | None = None
        self._worker_exit: Callable[..., Any] | None = None
        self._lifespan: int | None = None
        self._exit_results: list[Any] = []
        self._exit_errors: list[BaseException] = []
        self._map_running = False
        # The imap job under way, so stop and terminate can end it.
        self._current: IMapIterator[Any] | None = None
        # Bumped by terminate() and stop_and_join(): an imap generator made
        # before then raises RuntimeError instead of going on.
        self._generation = 0
        _live.add(self)

    # -- settings --------------------------------------------------------------
    @property
    def ctx(self) -> Any:
        """The ``multiprocessing`` context of the start method the workers
        use, for making shared objects (``pool.ctx.Value``, ``.Barrier``,
        ``.Lock``, ``.Event``, ``.Array``, ``.Queue``) that reach the workers
        under that method: ``multiprocessing.dummy`` under ``threading``, as
        in MPIRE."""
        if self._start_method == _backend.THREADING:
            from multiprocessing import dummy

            return dummy
        method = _start.resolve(None, self._start_method)
        if method is None:
            # As the pool will settle it when it starts its workers.
            method = "fork" if _platform.single_threaded() else "forkserver"
        return multiprocessing.get_context(method)

    def pass_on_worker_id(self, pass_on: bool = True) -> None:
        """Whether to pass the worker id (0..n_jobs-1) first to the task,
        ``worker_init`` and ``worker_exit`` functions. Running workers are
        restarted at the next map if this changes."""
        if pass_on != self._pass_worker_id:
            self._params_changed = True
        self._pass_worker_id = pass_on
        self._apply_plain = None

    def set_shared_objects(self, shared_objects: Any = None) -> None:
        """Objects to pass to the task, ``worker_init`` and ``worker_exit``
        functions, after the worker id. Running workers are restarted at the
        next map if these are other objects."""
        if shared_objects is not self._shared_objects:
            self._params_changed = True
        self._shared_objects = shared_objects
        self._apply_plain = None

    def set_use_worker_state(self, use_worker_state: bool = True) -> None:
        """Whether each worker passes its own state ``dict`` to the task,
        ``worker_init`` and ``worker_exit`` functions, after the shared
        objects. Running workers are restarted at the next map if this changes."""
        if use_worker_state != self._use_worker_state:
            self._params_changed = True
        self._use_worker_state = use_worker_state
        self._apply_plain = None

    def set_keep_alive(self, keep_alive: bool = True) -> None:
        """Whether workers live on from one map to the next."""
        self._keep_alive = keep_alive

    def set_order_tasks(self, order_tasks: bool = True) -> None:
        """Whether chunk ``i`` of each map goes to worker ``i % n_jobs``
        (MPIRE's strict round-robin), starting at worker 0 in every map,
        rather than to whichever worker is free. A chunk whose worker died
        runs on that worker's replacement. From the next map on; running
        workers stay."""
        self._order_tasks = bool(order_tasks)

    # -- workers ---------------------------------------------------------------
    def _start_workers(
        self,
        worker_init: Callable[..., Any] | None,
        worker_exit: Callable[..., Any] | None,
        lifespan: int | None,
        init_timeout: float | None = None,
        exit_timeout: float | None = None,
    ) -> Jobs:
        """The running workers' job layer, starting workers first if none
        run, or if the running ones were started with other settings; with
        the hook timeouts of this call in force."""
        jobs = self._workers(worker_init, worker_exit, lifespan)
        assert self._backend is not None, "workers were started above"
        # A limit for a hook the workers do not run would only count their
        # start-up (init) or let a worker with nothing to do be reported.
        self._backend.engine.set_hook_timeouts(
            init_timeout if self._worker_init is not None else None,
            exit_timeout if self._worker_exit is not None else None,
        )
        return jobs

    def _workers(
        self, worker_init: Callable[..., Any] | None, worker_exit: Callable[..., Any] | None, lifespan: int | None
    ) -> Jobs:
        """The job layer of :meth:`_start_workers`, without the timeouts."""
        if self._backend is not None and self._jobs is not None:
            if not self._params_changed and lifespan == self._lifespan:
                if worker_init is not self._worker_init or worker_exit is not self._worker_exit:
                    warnings.warn(
                        "You're changing either the worker_init and/or worker_exit function while keep_alive is "
                        "enabled. Be aware this can have undesired side-effects as worker_init functions are only "
                        "executed when a worker is started and worker_exit functions when a worker is terminated.",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                return self._jobs
            # Imported here: logging cost every program's first WorkerPool ~3 ms.
            import logging

            logging.getLogger(__name__).warning(
                "WorkerPool parameters changed while keep_alive=True. Restarting workers."
            )
            self._stop()
        if multiprocessing.current_process().daemon:
            # Inside a worker of a daemon=True pool, as multiprocessing says it.
            raise AssertionError("daemonic processes are not allowed to have children")
        _platform.require_supported_kernel()
        settings = {
            "cpu_ids": self._cpu_ids,
            "daemon": self._daemon,
            "pass_worker_id": self._pass_worker_id,
            "shared_objects": self._shared_objects,
            "use_worker_state": self._use_worker_state,
            "worker_init": worker_init,
            "worker_exit": worker_exit,
        }
        threads = self._start_method == _backend.THREADING
        method = _backend.THREADING if threads else _start.resolve(None, self._start_method)

        def dumps_settings(obj: Any) -> bytes:
            # Workers that fork inherit the settings (_backend.inherited_init),
            # and thread workers take them by reference: nothing is pickled,
            # so shared objects may be anything that survives a fork. Others
            # get them pickled as multiprocessing pickles a spawned process's
            # arguments, the one time its locks and values may be.
            try:
                return _spawning.dumps(obj)
            except Exception as exc:
                raise _unsendable(method or "forkserver", exc) from exc

        backend = _backend.start(
            None,
            method,
            self._n_jobs,
            _wp_worker.setup,
            (settings,),
            None,
            lifespan_items=lifespan,
            exit_grace=EXIT_GRACE,
            dumps_init=dumps_settings,
        )
        self._backend = backend
        self._jobs = Jobs(backend.engine, self._n_jobs, backend.oob, inherited=backend.inherited)
        self._params_changed = False
        self._worker_init, self._worker_exit, self._lifespan = worker_init, worker_exit, lifespan
        plain = not self._extra_arguments() and worker_init is None
        self._apply_plain = self._jobs.apply_plain if plain else None
        self._exit_results = []
        self._exit_errors = []
        return self._jobs

    def _take_exit_results(self) -> None:
        """Move the exit results the engine holds into ``_exit_results``
        (and failures into ``_exit_errors``)."""
        if self._backend is None:
            return
        for _slot, payload, timed_out in self._backend.engine.take_exit_results():
            if payload is None:
                self._exit_errors.append(TimeoutError(f"worker_exit timed out (worker_exit_timeout): {timed_out}"))
                continue
            try:
                got = loads(payload)
            except Exception as exc:  # noqa: BLE001 - reported by stop_and_join
                self._exit_errors.append(exc)
                continue
            if len(got) == 2:  # (True, value)
                self._exit_results.append(got[1])
            else:  # a failure, as _worker._chunk_failed describes it
                self._exit_errors.append(rebuild(got))

    def _end_current(self) -> None:
        """Cancel the input and queued chunks of an imap under way, so the
        engine can stop."""
        it, self._current = self._current, None
        if it is not None and self._backend is not None:
            try:
                # The job layer's id of the iterator's job (read-only use).
                self._backend.engine.cancel(it._job)
            except RuntimeError:
                pass  # already finished and forgotten

    def _stop(self) -> None:
        """Let the workers finish what they hold, run ``worker_exit`` and
        exit; collect the exit results. Raises the first ``worker_exit``
        failure."""
        backend = self._backend
        if backend is None:
            return
        self._end_current()
        engine = backend.engine
        try:
            if os.getpid() == self._owner:
                engine.close()
                engine.join()
                self._take_exit_results()
                self._keep_stats(engine)
        except BaseException:
            self._halt()
            raise
        self._backend = self._jobs = self._apply_plain = None
        backend.release()
        self._raise_exit_error()

    def _raise_exit_error(self) -> None:
        """Raise the first ``worker_exit`` failure (or time-out) collected
        so far, if any, forgetting the others."""
        self._take_exit_results()
        if self._exit_errors:
            error = self._exit_errors[0]
            self._exit_errors.clear()
            raise error

    def _halt(self) -> None:
        """Kill the workers now; their tasks and exit hooks do not finish."""
        backend, self._backend, self._jobs = self._backend, None, None
        self._current = self._apply_plain = None
        if backend is None or os.getpid() != self._owner:
            return
        backend.engine.terminate()
        backend.engine.join()
        self._keep_stats(backend.engine)
        backend.release()

    def _keep_stats(self, engine: _shoal.Engine) -> None:
        """Keep the counters of workers that have stopped, for insights."""
        if self._insights_enabled:
            try:
                self._last_stats = engine.stats()
            except RuntimeError:
                pass  # an engine already released: the last counters stay

    def _stats(self) -> dict[str, Any] | None:
        """The running workers' counters, or the last ones' once stopped."""
        backend = self._backend
        if backend is not None and os.getpid() == self._owner:
            try:
                return backend.engine.stats()
            except RuntimeError:
                pass  # stopping meanwhile: the last counters are kept
        return self._last_stats

    def get_insights(self) -> dict[str, Any]:
        """Timings of the workers, as MPIRE reports them: per worker
        (``n_completed_tasks``, ``start_up_time``, ``init_time``,
        ``waiting_time``, ``working_time``, ``exit_time``), their totals
        (``total_..._time``, ``total_time``), means, standard deviations and
        ratios (``..._time_mean``, ``..._time_std``, ``..._ratio``), and the
        five longest tasks (``top_5_max_task_durations``,
        ``top_5_max_task_args``). Times are strings such as
        ``'0:00:01.142'``. Readable during an imap; after the workers stop,
        the last workers' timings. Empty unless ``enable_insights=True`` and
        workers have started. Chunks are what workers time: see
        ``shoal._insights`` for what that means for the top five."""
        if not self._insights_enabled:
            return {}
        stats = self._stats()
        return {} if stats is None else _insights.insights(stats)

    def print_insights(self) -> None:
        """Print :meth:`get_insights` as a table."""
        print(_insights.table(self.get_insights()))

    def stop_and_join(self, keep_alive: bool = False) -> None:
        """Stop the workers once they have finished their tasks, running
        ``worker_exit`` in each, and collect its results
        (:meth:`get_exit_results`). Raises what a ``worker_exit`` raised.
        With ``keep_alive=True`` the workers stay (there is nothing to
        flush). ``join`` is the same method."""
        if keep_alive:
            return
        self._generation += 1
        self._map_running = False
        self._stop()

    join = stop_and_join

    def terminate(self) -> None:
        """Kill the workers now. Unfinished tasks fail with
        ``shoal.PoolTerminatedError``; an unfinished imap generator raises
        ``RuntimeError`` when used. The pool can start workers again."""
        self._generation += 1
        self._map_running = False
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.finish(_progress.TERMINATED)
        self._end_current()
        self._halt()

    def get_exit_results(self) -> list[Any]:
        """What ``worker_exit`` returned in each worker that exited since
        the workers were started, replacements included (after
        :meth:`stop_and_join` with ``keep_alive``)."""
        self._take_exit_results()
        return list(self._exit_results)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.terminate()

    def __del__(self) -> None:
        if getattr(self, "_backend", None) is not None and getattr(self, "_owner", None) == os.getpid():
            try:
                self._halt()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __reduce__(self) -> Any:
        raise NotImplementedError("WorkerPool objects cannot be passed between processes or pickled")

    # -- maps ------------------------------------------------------------------
    def map(
        self,
        func: Callable[..., Any],
        iterable_of_args: Iterable[Any],
        iterable_len: int | None = None,
        max_tasks_active: int | None = None,
        chunk_size: float | None = None,
        n_splits: int | None = None,
        worker_lifespan: int | None = None,
        progress_bar: bool = False,
        concatenate_numpy_output: bool = True,
        worker_init: Callable[..., Any] | None = None,
        worker_exit: Callable[..., Any] | None = None,
        task_timeout: float | None = None,
        worker_init_timeout: float | None = None,
        worker_exit_timeout: float | None = None,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
        *,
        enable_insights: bool | None = None,
    ) -> Any:
        """``func`` over every task, as a list in input order (or one numpy
        array: results that are arrays are concatenated unless
        ``concatenate_numpy_output=False``; large ones without a copy, the
        array lying over the shared memory they came back in).

        Each task is a tuple (unpacked into positional arguments), a dict
        (keyword arguments), or one argument; a numpy array is split into
        blocks of rows, each passed whole. ``iterable_len``: the number of
        tasks, for a generator (it also caps the input). ``chunk_size``
        (``n_splits``: the number of chunks instead): tasks sent to a worker
        at once; by default 64 chunks per worker. ``max_tasks_active``:
        tasks in flight at most. ``worker_lifespan``: tasks after which a
        worker is replaced (checked between chunks). ``worker_init`` and
        ``worker_exit`` run once in each worker, as it starts and as it
        stops. ``task_timeout``: seconds a task may run before its worker is
        killed and the task fails with ``TimeoutError``.
        ``worker_init_timeout`` and ``worker_exit_timeout``: seconds
        ``worker_init`` and ``worker_exit`` may run before their worker is
        killed (even inside C code) and the map raises ``TimeoutError``
        naming the hook; a worker stuck in ``worker_init`` fails the tasks
        waiting for a worker, and the pool's workers are then stopped (the
        next map starts others). The first task that fails raises its own
        exception, with the worker's traceback as its cause, and the rest of
        the map is cancelled. ``progress_bar``: draw a tqdm bar in this
        process, fed from the engine's counters (no cost per task);
        ``progress_bar_options``: tqdm's keyword arguments, over MPIRE's
        defaults; ``progress_bar_style``: ``"std"``, ``"rich"``,
        ``"notebook"`` or ``"dashboard"`` (draws nothing). The bar shows a
        failure, a terminate or a Ctrl-C when the map ends so.
        ``enable_insights`` (keyword only): turn insights on or off from
        this map on (see :meth:`get_insights`).
        """
        results = self._collect(
            True,
            func,
            iterable_of_args,
            iterable_len,
            max_tasks_active,
            chunk_size,
            n_splits,
            worker_lifespan,
            progress_bar,
            worker_init,
            worker_exit,
            task_timeout,
            worker_init_timeout,
            worker_exit_timeout,
            progress_bar_options,
            progress_bar_style,
            enable_insights,
        )
        if concatenate_numpy_output and results and is_ndarray(results[0]):
            import numpy as np

            joined = _shm.joined(results)
            return np.concatenate(results) if joined is None else joined
        return results

    def map_unordered(
        self,
        func: Callable[..., Any],
        iterable_of_args: Iterable[Any],
        iterable_len: int | None = None,
        max_tasks_active: int | None = None,
        chunk_size: float | None = None,
        n_splits: int | None = None,
        worker_lifespan: int | None = None,
        progress_bar: bool = False,
        worker_init: Callable[..., Any] | None = None,
        worker_exit: Callable[..., Any] | None = None,
        task_timeout: float | None = None,
        worker_init_timeout: float | None = None,
        worker_exit_timeout: float | None = None,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
        *,
        enable_insights: bool | None = None,
    ) -> list[Any]:
        """Like :meth:`map`, as a list in the order tasks finish."""
        return self._collect(
            False,
            func,
            iterable_of_args,
            iterable_len,
            max_tasks_active,
            chunk_size,
            n_splits,
            worker_lifespan,
            progress_bar,
            worker_init,
            worker_exit,
            task_timeout,
            worker_init_timeout,
            worker_exit_timeout,
            progress_bar_options,
            progress_bar_style,
            enable_insights,
        )

    def _collect(
        self,
        ordered: bool,
        func: Callable[..., Any],
        iterable_of_args: Iterable[Any],
        iterable_len: int | None,
        max_tasks_active: int | None,
        chunk_size: float | None,
        n_splits: int | None,
        worker_lifespan: int | None,
        progress_bar: bool,
        worker_init: Callable[..., Any] | None,
        worker_exit: Callable[..., Any] | None,
        task_timeout: float | None,
        worker_init_timeout: float | None,
        worker_exit_timeout: float | None,
        progress_bar_options: dict[str, Any] | None,
        progress_bar_style: str | None,
        enable_insights: bool | None,
    ) -> list[Any]:
        """``map`` and ``map_unordered``: the ``imap`` route (the same
        checks, job and ending), with the results collected into a list."""
        plan = self._plan(
            iterable_of_args,
            iterable_len,
            max_tasks_active,
            chunk_size,
            n_splits,
            worker_lifespan,
            progress_bar,
            task_timeout,
            worker_init_timeout,
            worker_exit_timeout,
            progress_bar_options,
            progress_bar_style,
        )
        self._enable_insights(enable_insights)
        results: list[Any] = []
        for _ in self._run(func, plan, ordered, worker_init, worker_exit, self._generation, results):
            pass  # nothing is yielded when collecting
        return results

    def imap(
        self,
        func: Callable[..., Any],
        iterable_of_args: Iterable[Any],
        iterable_len: int | None = None,
        max_tasks_active: int | None = None,
        chunk_size: float | None = None,
        n_splits: int | None = None,
        worker_lifespan: int | None = None,
        progress_bar: bool = False,
        worker_init: Callable[..., Any] | None = None,
        worker_exit: Callable[..., Any] | None = None,
        task_timeout: float | None = None,
        worker_init_timeout: float | None = None,
        worker_exit_timeout: float | None = None,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
        *,
        enable_insights: bool | None = None,
    ) -> Generator[Any, None, None]:
        """Like :meth:`map`, as a generator of results in input order. Input
        is read as workers need it; nothing starts until the first result is
        asked for. Parameters are checked here, at the call."""
        plan = self._plan(
            iterable_of_args,
            iterable_len,
            max_tasks_active,
            chunk_size,
            n_splits,
            worker_lifespan,
            progress_bar,
            task_timeout,
            worker_init_timeout,
            worker_exit_timeout,
            progress_bar_options,
            progress_bar_style,
        )
        self._enable_insights(enable_insights)
        return self._run(func, plan, True, worker_init, worker_exit, self._generation)

    def imap_unordered(
        self,
        func: Callable[..., Any],
        iterable_of_args: Iterable[Any],
        iterable_len: int | None = None,
        max_tasks_active: int | None = None,
        chunk_size: float | None = None,
        n_splits: int | None = None,
        worker_lifespan: int | None = None,
        progress_bar: bool = False,
        worker_init: Callable[..., Any] | None = None,
        worker_exit: Callable[..., Any] | None = None,
        task_timeout: float | None = None,
        worker_init_timeout: float | None = None,
        worker_exit_timeout: float | None = None,
        progress_bar_options: dict[str, Any] | None = None,
        progress_bar_style: str | None = None,
        *,
        enable_insights: bool | None = None,
    ) -> Generator[Any, None, None]:
        """Like :meth:`imap`, yielding results in the order tasks finish."""
        plan = self._plan(
            iterable_of_args,
            iterable_len,
            max_tasks_active,
            chunk_size,
            n_splits,
            worker_lifespan,
            progress_bar,
            task_timeout,
            worker_init_timeout,
            worker_exit_timeout,
            progress_bar_options,
            progress_bar_style,
        )
        self._enable_insights(enable_insights)
        return self._run(func, plan, False, worker_init, worker_exit, self._generation)

    def _enable_insights(self, enable_insights: bool | None) -> None:
        """A map's ``enable_insights`` (older MPIRE took it there): turns
        insights on or off for the pool from this map on."""
        if enable_insights is not None:
            self._insights_enabled = bool(enable_insights)

    def _plan(
        self,
        iterable_of_args: Iterable[Any],
        iterable_len: int | None,
        max_tasks_active: int | None,
        chunk_size: float | None,
        n_splits: int | None,
        worker_lifespan: int | None,
        progress_bar: bool,
        task_timeout: float | None,
        worker_init_timeout: float | None,
        worker_exit_timeout: float | None,
        progress_bar_options: dict[str, Any] | None,
        progress_bar_style: str | None,
    ) -> _Plan:
        """Check a map's parameters as MPIRE does and work out its input,
        chunk size and window."""
        if progress_bar_options is not None and not isinstance(progress_bar_options, dict):
            raise TypeError("progress_bar_options should be a dictionary")
        _check_timeouts(task_timeout, worker_init_timeout, worker_exit_timeout)
        check_number(iterable_len, "iterable_len", (int,), True, 0)
        check_number(chunk_size, "chunk_size", (int, float), True, 1)
        check_number(n_splits, "n_splits", (int,), True, 1)
        check_number(max_tasks_active, "max_tasks_active", (int,), True, 1)
        check_number(worker_lifespan, "worker_lifespan", (int,), True, 1)
        items: Iterable[Any] = iterable_of_args
        if is_ndarray(iterable_of_args):
            # Blocks of rows, each one task, as MPIRE slices them.
            array: Any = iterable_of_args
            if iterable_len is not None:
                array = array[:iterable_len]
            splits = n_splits or self._n_jobs * NUMPY_SPLITS_PER_WORKER
            items = chunk_tasks(array, len(array), chunk_size, splits)
            n_tasks: int | None = None
            chunk_size, n_splits = 1, None
        else:
            n_tasks = task_count(iterable_of_args, iterable_len)
            if iterable_len is not None and not (isinstance(items, Sized) and len(items) <= iterable_len):
                items = itertools.islice(items, iterable_len)
        size: int | None
        default_size = False
        if task_timeout is not None:
            size = 1  # each task gets its own deadline
        elif chunk_size is not None:
            size = math.ceil(chunk_size)
        elif n_tasks is not None:
            per = n_tasks / n_splits if n_splits is not None else n_tasks / (self._n_jobs * CHUNKS_PER_WORKER)
            size = max(1, math.ceil(per))
            default_size = n_splits is None
        elif max_tasks_active is not None:
            size = UNKNOWN_LENGTH_CHUNK
        else:
            size = None  # the engine sizes chunks by measured task time
        window = None if max_tasks_active is None else max(1, max_tasks_active // (size or 1))
        plan = _Plan(items, size, window, task_timeout, worker_lifespan, worker_init_timeout, worker_exit_timeout)
        plan.default_size = default_size
        # The bar's total: the number of tasks, or of row blocks.
        total = n_tasks if n_tasks is not None or not isinstance(items, Sized) else len(items)
        plan.progress = _check_progress_bar(progress_bar, progress_bar_options, progress_bar_style, total)
        plan.total = total
        return plan

    def _run(
        self,
        func: Callable[..., Any],
        plan: _Plan,
        ordered: bool,
        worker_init: Callable[..., Any] | None,
        worker_exit: Callable[..., Any] | None,
        generation: int,
        collect: list[Any] | None = None,
    ) -> Generator[Any, None, None]:
        """The generator every map is: starts the workers (if needed) and
        the job at the first ``next``, yields results (or, with ``collect``,
        appends them all to it and yields none), and ends the job.
        ``generation``: the pool's when the map was asked for; once
        terminate() or stop_and_join() have changed it, the map is over."""
        if generation != self._generation:
            raise RuntimeError("the WorkerPool was terminated (or its with block left) before this map started")
        if self._map_running:
            raise RuntimeError("Cannot call 'map' while another 'map' is running")
        finished = False
        # worker_init timed out: the workers cannot get through it, so they
        # are stopped even with keep_alive, as MPIRE stops its pool.
        init_stuck = False
        self._map_running = True
        # How the bar ends if the map does not finish: as failed, unless
        # said otherwise below.
        stopped = _progress.FAILED
        it: IMapIterator[Any] | None = None
        try:
            jobs = self._start_workers(worker_init, worker_exit, plan.lifespan, plan.init_timeout, plan.exit_timeout)
            # The workers' own settings now (a change restarted them above).
            # Without extra arguments or an init that may fail every task,
            # the worker calls func itself, by MPIRE's rule (UNPACK); else
            # MapCall adds them.
            unpack = not self._extra_arguments() and self._worker_init is None
            call: Callable[..., Any] = func
            if not unpack:
                call = _wp_worker.MapCall(dumps_func(func, jobs.inherited)[0], func_name(func))
            # map and map_unordered keep every result anyway: an input in
            # memory is submitted whole at once, as Pool.map does, not
            # through a window of a few chunks, which left the workers
            # waiting between small chunks (a map of 1M ints took 15% longer),
            # and by this thread, which reads the results right away. Its
            # chunks, unless the caller sized them, are Pool.map's (None
            # here), which shrink towards the end so the workers finish
            # together: a third as many as MPIRE's 64 per worker, which cost
            # a small map 15% more. Not with insights on: they report the
            # slowest chunks' arguments, which MPIRE's users read per task.
            eager = (
                collect is not None
                and plan.window is None
                and plan.chunk_size is not None
                and isinstance(plan.items, Sized)
            )
            it = jobs.imap(
                call,
                plan.items,
                False,
                None if eager and plan.default_size and not self._insights_enabled else plan.chunk_size,
                ordered,
                window=plan.window,
                timeout=plan.timeout,
                eager=eager,
                pinned=self._order_tasks,
                unpack=unpack,
                reader_feeds=eager,
            )
            self._current = it
            if plan.progress is not None:
                # Drawn once the workers run, so no thread of the bar's is
                # alive when they fork.
                self._progress = plan.progress
                plan.progress.start(*_progress_sources(jobs.engine, it, plan.total))
            try:
                if collect is not None:
                    # map: results go to the list in whole batches, with no
                    # step of this generator per result.
                    while it.take_into(collect):
                        if self._generation != generation:
                            raise RuntimeError(_TERMINATED_DURING)
                else:
                    # Results come in batches too (take_into), so a result
                    # costs a step of this loop, not also one of the
                    # iterator's; each is still yielded, and the pool's
                    # generation checked, one at a time.
                    batch: list[Any] = []
                    more = True
                    while more:
                        failure: BaseException | None = None
                        try:
                            more = it.take_into(batch)
                        except BaseException as exc:  # noqa: BLE001 - raised below, after the results before it
                            failure, more = exc, False
                        for value in batch:
                            yield value
                            if self._generation != generation:
                                raise RuntimeError(_TERMINATED_DURING)
                        batch.clear()
                        if failure is not None:
                            raise failure
            except TimeoutError as exc:
                init_stuck = _name_init_hook(exc)
                raise
            finished = True
        except KeyboardInterrupt:
            stopped = _progress.INTERRUPTED
            raise
        except GeneratorExit:
            stopped = _progress.LEFT  # the caller stopped reading: the bar stays where it is
            raise
        finally:
            if plan.progress is not None:
                if self._progress is plan.progress:
                    self._progress = None
                if finished:
                    plan.progress.finish(None, total=_items_read(it))
                else:
                    plan.progress.finish(stopped, n=_count_of(it))
            # After terminate() the pool is no longer this map's: leave it be.
            if self._generation == generation:
                self._map_running = False
                if not finished:
                    # Failed, or left early: the rest of it is cancelled.
                    self._end_current()
                    if not self._keep_alive or init_stuck:
                        self._halt()
                self._current = None
        if not self._keep_alive:
            self._stop()
        else:
            # Workers replaced during the map (worker_lifespan) ran
            # worker_exit: its failure or time-out fails the map, as in MPIRE.
            self._raise_exit_error()

    def _extra_arguments(self) -> bool:
        """Whether tasks get extra arguments before their own (worker id,
        shared objects, worker state)."""
        return self._pass_worker_id or self._shared_objects is not None or self._use_worker_state

    # -- apply -----------------------------------------------------------------
    def apply(
        self,
        func: Callable[..., T],
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        worker_init: Callable[..., Any] | None = None,
        worker_exit: Callable[..., Any] | None = None,
        task_timeout: float | None = None,
        worker_init_timeout: float | None = None,
        worker_exit_timeout: float | None = None,
    ) -> T:
        """``func(*args, **kwargs)`` in a worker; waits for the value."""
        return self.apply_async(
            func,
            args,
            kwargs,
            callback,
            error_callback,
            worker_init,
            worker_exit,
            task_timeout,
            worker_init_timeout,
            worker_exit_timeout,
        ).get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        worker_init: Callable[..., Any] | None = None,
        worker_exit: Callable[..., Any] | None = None,
        task_timeout: float | None = None,
        worker_init_timeout: float | None = None,
        worker_exit_timeout: float | None = None,
    ) -> AsyncResult[T]:
        """``func(*args, **kwargs)`` in a worker, with the extra arguments
        first; returns a :class:`shoal.AsyncResult`, whose ``get`` raises
        the builtin ``TimeoutError`` (as MPIRE's does) when its timeout
        passes. ``args`` that is not an
        iterable (or is a ``str``, ``bytes`` or numpy array) is the one
        argument. The first call starts the workers, with its
        ``worker_init`` and ``worker_exit`` and their timeouts (see
        :meth:`map`); later ones cannot change them. ``callback`` and
        ``error_callback`` run in the parent."""
        plain = self._apply_plain
        if (
            plain is not None
            and type(args) is tuple
            and not kwargs
            and callback is None
            and error_callback is None
            and task_timeout is None
            and worker_init_timeout is None
            and worker_exit_timeout is None
        ):
            # The common call, once func is cached, wholly in Rust (as
            # Pool.apply_async takes it). None: not taken.
            result = plain(func, args)
            if result is not None:
                return result
            plain_tried = True
        else:
            plain_tried = False
        if task_timeout is not None or worker_init_timeout is not None or worker_exit_timeout is not None:
            _check_timeouts(task_timeout, worker_init_timeout, worker_exit_timeout)
        jobs = self._jobs
        if jobs is None:
            jobs = self._start_workers(worker_init, worker_exit, None, worker_init_timeout, worker_exit_timeout)
        if type(args) is not tuple and (
            isinstance(args, (str, bytes)) or is_ndarray(args) or not isinstance(args, Iterable)
        ):
            args = (args,)
        target: Callable[..., Any] = func
        if self._extra_arguments() or self._worker_init is not None:
            target = _wp_worker.ApplyCall(dumps_func(func, jobs.inherited)[0], func_name(func))
        return jobs.apply(
            target, args, kwargs or {}, callback, error_callback, timeout=task_timeout, plain_tried=plain_tried
        )


class _Plan:
    """A map's input, chunk size, window, deadline, worker lifespan, the
    limits on its workers' ``worker_init`` and ``worker_exit``, and its
    progress bar (``None``: none) and number of tasks if known."""

    __slots__ = (
        "chunk_size",
        "default_size",
        "exit_timeout",
        "init_timeout",
        "items",
        "lifespan",
        "progress",
        "timeout",
        "total",
        "window",
    )

    def __init__(
        self,
        items: Iterable[Any],
        chunk_size: int | None,
        window: int | None,
        timeout: float | None,
        lifespan: int | None,
        init_timeout: float | None = None,
        exit_timeout: float | None = None,
    ) -> None:
        self.items = items
        self.chunk_size = chunk_size
        self.window = window
        self.timeout = timeout
        self.lifespan = lifespan
        self.init_timeout = init_timeout
        self.exit_timeout = exit_timeout
        self.progress: _progress.Progress | None = None
        self.total: int | None = None
        # chunk_size is MPIRE's default (neither chunk_size nor n_splits
        # given), which a map that collects every result may replace.
        self.default_size = False


def _check_timeouts(task: float | None, init: float | None, exit: float | None) -> None:
    for value, name in ((task, "task_timeout"), (init, "worker_init_timeout"), (exit, "worker_exit_timeout")):
        check_number(value, name, (int, float), True, 1e-8)


_TERMINATED_DURING = "the WorkerPool was terminated (or its with block left) while this map was unfinished"

# How the engine's message for an initializer killed at its deadline begins
# (crates/shoal-core/src/supervise.rs, `init_timed_out`).
_INIT_TIMED_OUT = "the initializer of worker "


def _name_init_hook(exc: BaseException) -> bool:
    """Say in a task's ``TaskTimeoutError`` that ``worker_init`` timed
    out, when that is what failed it (the engine's message says "the
    initializer", as ``multiprocessing`` names it); whether it was."""
    if isinstance(exc, _errors.TaskTimeoutError) and str(exc).startswith(_INIT_TIMED_OUT):
        exc.args = (f"worker_init timed out (worker_init_timeout): {exc.args[0]}", *exc.args[1:])
        return True
    return False


def _unsendable(method: str, exc: Exception) -> RuntimeError:
    """The error for settings (shared objects, worker_init, worker_exit)
    that cannot reach workers started by ``method``."""
    return RuntimeError(
        f"this WorkerPool's shared_objects, worker_init or worker_exit cannot be sent to its {method} workers: "
        f"{exc}. multiprocessing objects (Lock, Value, Barrier, ...) made for fork, as multiprocessing.Lock() is "
        "where fork is its default, reach forked workers only: make them with pool.ctx (pool.ctx.Lock(), "
        "pool.ctx.Value('i', 0)), or use start_method='fork'"
    )


def _check_progress_bar(
    progress_bar: bool, progress_bar_options: dict[str, Any] | None, progress_bar_style: str | None, total: int | None
) -> _progress.Progress | None:
    """The map's bar (not drawn yet), or ``None`` without one; its options
    checked as MPIRE checks them (see ``_progress.check_options``)."""
    options = _progress.check_options(progress_bar, progress_bar_options, progress_bar_style, total)
    return _progress.Progress(options, progress_bar_style) if progress_bar else None


def _progress_sources(
    engine: _shoal.Engine, it: IMapIterator[Any], total: int | None
) -> tuple[Callable[[], int | None], Callable[[], int | None]]:
    """What a map's bar follows: the tasks of its job that have finished
    (from the engine's counters), and how many tasks there are (known at
    the call, or once the input has been read to its end)."""
    lazy = it._lazy  # the job layer's, read only

    def known_total() -> int | None:
        if total is not None:
            return total
        return lazy.items_read if lazy.ended.is_set() else None

    return _progress.job_counter(engine, it._job), known_total


def _items_read(it: IMapIterator[Any] | None) -> int | None:
    """The tasks a finished map ran: every one it read."""
    return None if it is None else it._lazy.items_read


def _count_of(it: IMapIterator[Any] | None) -> int | None:
    """The tasks of an unfinished map that ran, if the engine still knows."""
    if it is None:
        return None
    try:
        return _progress.finished_items(it._lazy.engine.job_stats(it._job))
    except RuntimeError:
        return None  # the engine has stopped
