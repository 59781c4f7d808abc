"""``shoal.WorkerPool``: MPIRE's ``WorkerPool`` on shoal's engine.

A program written for MPIRE runs unchanged once ``from mpire import
WorkerPool`` reads ``from shoal import WorkerPool`` (and ``mpire.utils``
reads ``shoal.utils``). Every call goes through the one job layer
(``_jobs.py``): a map is ``Jobs.imap`` with the user's function wrapped in
``_wp_worker.MapCall``, which adds MPIRE's extra arguments and unpacks each
task's arguments in the worker; ``apply_async`` is ``Jobs.apply``. The
worker side (state, ``worker_init``, ``worker_exit``) is ``_wp_worker.py``.

What shoal does differently from MPIRE, on purpose:

* a worker that dies fails only the task it was running, with
  :class:`shoal.WorkerLostError` (a ``RuntimeError``); it is replaced and
  the pool stays usable;
* ``task_timeout`` kills the worker at the deadline, even inside C code: the
  task fails with :class:`shoal.TaskTimeoutError` (a builtin
  ``TimeoutError``), its worker is replaced;
* ``worker_init`` runs when each worker starts and ``worker_exit`` when it
  stops, whether or not it ran a task (MPIRE skips workers that got none);
* ``n_jobs=None`` counts the CPUs this process may use (its affinity, as
  ``shoal.Pool`` does), not the machine's.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import multiprocessing
import os
import warnings
import weakref
from collections.abc import Callable, Generator, Iterable, Sized
from typing import Any, Generic, TypeVar

from shoal import _backend, _platform, _shoal, _start, _wp_worker
from shoal._errors import func_name, rebuild
from shoal._jobs import IMapIterator, Jobs
from shoal._pickling import dumps, dumps_func, loads
from shoal.utils import chunk_tasks, is_ndarray, task_count

T = TypeVar("T")

logger = logging.getLogger(__name__)

START_METHODS = ("fork", "forkserver", "spawn", "threading")
PROGRESS_BAR_STYLES = (None, "std", "rich", "notebook", "dashboard")
# How long a worker told to exit may run worker_exit before it is killed:
# as long as it needs, within reason, until worker_exit_timeout exists.
EXIT_GRACE = 24 * 3600.0
# MPIRE's default when neither chunk_size nor n_splits is given: 64 chunks
# per worker.
CHUNKS_PER_WORKER = 64
# MPIRE's default number of row blocks per worker for a numpy array.
NUMPY_SPLITS_PER_WORKER = 4
# Tasks per chunk MPIRE uses for an input of unknown length; shoal uses it
# only where max_tasks_active needs a known chunk size (else the engine
# sizes chunks by measured task time).
UNKNOWN_LENGTH_CHUNK = 4

_tokens = itertools.count(1)
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


class AsyncResult(Generic[T]):
    """What :meth:`WorkerPool.apply_async` returns, as in MPIRE: ``get``
    waits for the value and raises the builtin ``TimeoutError`` if it is not
    there in time, or the task's own exception."""

    __slots__ = ("_result",)

    def __init__(self, result: _shoal.JobResult) -> None:
        self._result = result

    def ready(self) -> bool:
        """Whether the task has finished."""
        return self._result.ready()

    def successful(self) -> bool:
        """Whether the task finished without raising; ``ValueError`` if it
        has not finished."""
        return self._result.successful()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the task has finished, at most ``timeout`` seconds."""
        self._result.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        """The task's value; its exception if it raised; ``TimeoutError``
        if it has not finished within ``timeout`` seconds."""
        if timeout is not None:
            self._result.wait(timeout)
            if not self._result.ready():
                raise TimeoutError
        value: T = self._result.get()
        return value


class WorkerPool:
    """A pool of worker processes with the API of MPIRE's ``WorkerPool``.

    Workers start at the first map or apply, not here. ``n_jobs``: number
    of workers (``None`` or 0: the CPUs this process may use). ``cpu_ids``:
    CPUs to pin the workers to, one list for all or one per worker.
    ``shared_objects``: passed to the task, ``worker_init`` and
    ``worker_exit`` functions when not ``None``; under ``fork`` the
    workers inherit it, so it may hold ``multiprocessing`` locks, values and
    barriers. ``pass_worker_id`` and ``use_worker_state`` pass the worker's
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
    ``enable_insights`` and ``order_tasks`` raise ``NotImplementedError``
    for now.
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
        check_number(n_jobs, "n_jobs", (int,), True, 0)
        self._n_jobs: int = n_jobs or _platform.usable_cpus()
        if start_method is not None and start_method not in START_METHODS:
            raise ValueError(f"start_method should be one of {START_METHODS}, not {start_method!r}")
        if enable_insights:
            raise _not_implemented("enable_insights (get_insights, print_insights)")
        if order_tasks:
            raise _not_implemented("order_tasks")
        self._start_method = start_method
        self._cpu_ids = check_cpu_ids(cpu_ids, self._n_jobs)
        self._daemon = bool(daemon)
        self._shared_objects = shared_objects
        self._pass_worker_id = bool(pass_worker_id)
        self._use_worker_state = bool(use_worker_state)
        self._keep_alive = bool(keep_alive)
        self._use_dill = bool(use_dill)
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
        use, for making shared objects (``pool.ctx.Value``, ``.Barrier``):
        ``multiprocessing.dummy`` under ``threading``, as in MPIRE."""
        if self._start_method == _backend.THREADING:
            from multiprocessing import dummy

            return dummy
        method = _start.resolve(None, self._start_method)
        if method is None:
            # As the pool will settle it when it starts its workers.
            method = "fork" if _start.single_threaded() else "forkserver"
        return multiprocessing.get_context(method)

    def pass_on_worker_id(self, pass_on: bool = True) -> None:
        """Whether to pass the worker id (0..n_jobs-1) first to the task,
        ``worker_init`` and ``worker_exit`` functions. Running workers are
        restarted at the next map if this changes."""
        if pass_on != self._pass_worker_id:
            self._params_changed = True
        self._pass_worker_id = pass_on

    def set_shared_objects(self, shared_objects: Any = None) -> None:
        """Objects to pass to the task, ``worker_init`` and ``worker_exit``
        functions, after the worker id. Running workers are restarted at the
        next map if these are other objects."""
        if shared_objects is not self._shared_objects:
            self._params_changed = True
        self._shared_objects = shared_objects

    def set_use_worker_state(self, use_worker_state: bool = True) -> None:
        """Whether each worker passes its own state ``dict`` to the task,
        ``worker_init`` and ``worker_exit`` functions, after the shared
        objects. Running workers are restarted at the next map if this changes."""
        if use_worker_state != self._use_worker_state:
            self._params_changed = True
        self._use_worker_state = use_worker_state

    def set_keep_alive(self, keep_alive: bool = True) -> None:
        """Whether workers live on from one map to the next."""
        self._keep_alive = keep_alive

    def set_order_tasks(self, order_tasks: bool = True) -> None:
        """``order_tasks=True`` is not implemented yet: it raises
        ``NotImplementedError``."""
        if order_tasks:
            raise _not_implemented("order_tasks")

    # -- workers ---------------------------------------------------------------
    def _start_workers(
        self, worker_init: Callable[..., Any] | None, worker_exit: Callable[..., Any] | None, lifespan: int | None
    ) -> Jobs:
        """The running workers' job layer, starting workers first if none
        run, or if the running ones were started with other settings."""
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
            logger.warning("WorkerPool parameters changed while keep_alive=True. Restarting workers.")
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
        token = next(_tokens)
        threads = self._start_method == _backend.THREADING
        method = _backend.THREADING if threads else _start.resolve(None, self._start_method)
        # Forked workers inherit the settings: nothing is pickled, so shared
        # objects may be anything that survives a fork. With no method set,
        # whether the workers fork is settled at the fork (see _start), so
        # the settings are also sent pickled, if they can be.
        if method in (None, "fork"):
            _wp_worker.inherited[token] = settings
        initargs: tuple[Any, ...]
        if threads:
            initargs = (token, settings)  # by reference: nothing is pickled
        else:
            initargs = (token, None if method == "fork" or not _picklable(settings) else settings)
        try:
            backend = _backend.start(
                None,
                method,
                self._n_jobs,
                _wp_worker.setup,
                initargs,
                None,
                lifespan_items=lifespan,
                exit_grace=EXIT_GRACE,
            )
        finally:
            # The zygote forked from this process holds its copy now.
            _wp_worker.inherited.pop(token, None)
        self._backend = backend
        self._jobs = Jobs(backend.engine, self._n_jobs, backend.oob, inherited=backend.inherited)
        self._params_changed = False
        self._worker_init, self._worker_exit, self._lifespan = worker_init, worker_exit, lifespan
        self._exit_results = []
        self._exit_errors = []
        return self._jobs

    def _take_exit_results(self) -> None:
        """Move the exit results the engine holds into ``_exit_results``
        (and failures into ``_exit_errors``)."""
        if self._backend is None:
            return
        for _slot, payload in self._backend.engine.take_exit_results():
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
        except BaseException:
            self._halt()
            raise
        self._backend = self._jobs = None
        backend.release()
        if self._exit_errors:
            error = self._exit_errors[0]
            self._exit_errors.clear()
            raise error

    def _halt(self) -> None:
        """Kill the workers now; their tasks and exit hooks do not finish."""
        backend, self._backend, self._jobs = self._backend, None, None
        self._current = None
        if backend is None or os.getpid() != self._owner:
            return
        backend.engine.terminate()
        backend.engine.join()
        backend.release()

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
    ) -> Any:
        """``func`` over every task, as a list in input order (or one numpy
        array: results that are arrays are concatenated unless
        ``concatenate_numpy_output=False``).

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
        killed and the task fails with ``TimeoutError``. The first task that
        fails raises its own exception, with the worker's traceback as its
        cause, and the rest of the map is cancelled.
        """
        items = self.imap(
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
        )
        results = list(items)
        if concatenate_numpy_output and results and is_ndarray(results[0]):
            import numpy as np

            return np.concatenate(results)
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
    ) -> list[Any]:
        """Like :meth:`map`, as a list in the order tasks finish."""
        return list(
            self.imap_unordered(
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
            )
        )

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
        return self._run(func, plan, False, worker_init, worker_exit, self._generation)

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
        _check_progress_bar(progress_bar, progress_bar_options, progress_bar_style)
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
        if task_timeout is not None:
            size = 1  # each task gets its own deadline
        elif chunk_size is not None:
            size = math.ceil(chunk_size)
        elif n_tasks is not None:
            per = n_tasks / n_splits if n_splits is not None else n_tasks / (self._n_jobs * CHUNKS_PER_WORKER)
            size = max(1, math.ceil(per))
        elif max_tasks_active is not None:
            size = UNKNOWN_LENGTH_CHUNK
        else:
            size = None  # the engine sizes chunks by measured task time
        window = None if max_tasks_active is None else max(1, max_tasks_active // (size or 1))
        return _Plan(items, size, window, task_timeout, worker_lifespan)

    def _run(
        self,
        func: Callable[..., Any],
        plan: _Plan,
        ordered: bool,
        worker_init: Callable[..., Any] | None,
        worker_exit: Callable[..., Any] | None,
        generation: int,
    ) -> Generator[Any, None, None]:
        """The generator every map is: starts the workers (if needed) and
        the job at the first ``next``, yields results, and ends the job.
        ``generation``: the pool's when the map was asked for; once
        terminate() or stop_and_join() have changed it, the map is over."""
        if generation != self._generation:
            raise RuntimeError("the WorkerPool was terminated (or its with block left) before this map started")
        if self._map_running:
            raise RuntimeError("Cannot call 'map' while another 'map' is running")
        finished = False
        self._map_running = True
        try:
            jobs = self._start_workers(worker_init, worker_exit, plan.lifespan)
            call = _wp_worker.MapCall(dumps_func(func, jobs.inherited)[0], func_name(func))
            it = jobs.imap(call, plan.items, False, plan.chunk_size, ordered, window=plan.window, timeout=plan.timeout)
            self._current = it
            for value in it:
                yield value
                if self._generation != generation:
                    raise RuntimeError(
                        "the WorkerPool was terminated (or its with block left) while this map was unfinished"
                    )
            finished = True
        finally:
            # After terminate() the pool is no longer this map's: leave it be.
            if self._generation == generation:
                self._map_running = False
                if not finished:
                    # Failed, or left early: the rest of it is cancelled.
                    self._end_current()
                    if not self._keep_alive:
                        self._halt()
                self._current = None
        if not self._keep_alive:
            self._stop()

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
        first; returns an :class:`AsyncResult`. ``args`` that is not an
        iterable (or is a ``str``, ``bytes`` or numpy array) is the one
        argument. The first call starts the workers, with its
        ``worker_init`` and ``worker_exit``; later ones cannot change them.
        ``callback`` and ``error_callback`` run in the parent."""
        _check_timeouts(task_timeout, worker_init_timeout, worker_exit_timeout)
        jobs = self._jobs
        if jobs is None:
            jobs = self._start_workers(worker_init, worker_exit, None)
        if isinstance(args, (str, bytes)) or is_ndarray(args) or not isinstance(args, Iterable):
            args = (args,)
        extra = self._pass_worker_id or self._shared_objects is not None or self._use_worker_state
        target: Callable[..., Any] = func
        if extra or self._worker_init is not None:
            target = _wp_worker.ApplyCall(dumps_func(func, jobs.inherited)[0], func_name(func))
        result = jobs.apply(target, args, kwargs or {}, callback, error_callback, timeout=task_timeout)
        return AsyncResult(result)


class _Plan:
    """A map's input, chunk size, window, deadline and worker lifespan."""

    __slots__ = ("chunk_size", "items", "lifespan", "timeout", "window")

    def __init__(
        self,
        items: Iterable[Any],
        chunk_size: int | None,
        window: int | None,
        timeout: float | None,
        lifespan: int | None,
    ) -> None:
        self.items = items
        self.chunk_size = chunk_size
        self.window = window
        self.timeout = timeout
        self.lifespan = lifespan


def _check_timeouts(task: float | None, init: float | None, exit: float | None) -> None:
    for value, name in ((task, "task_timeout"), (init, "worker_init_timeout"), (exit, "worker_exit_timeout")):
        check_number(value, name, (int, float), True, 1e-8)
    if init is not None:
        raise _not_implemented("worker_init_timeout")
    if exit is not None:
        raise _not_implemented("worker_exit_timeout")


def _check_progress_bar(
    progress_bar: bool, progress_bar_options: dict[str, Any] | None, progress_bar_style: str | None
) -> None:
    if progress_bar_options is not None and not isinstance(progress_bar_options, dict):
        raise TypeError("progress_bar_options should be a dictionary")
    if progress_bar_style not in PROGRESS_BAR_STYLES:
        raise ValueError(
            f'Invalid progress bar style: {progress_bar_style}. Use either None (=default), "std", "rich", '
            f'"notebook" or "dashboard"'
        )
    if progress_bar:
        raise _not_implemented("progress_bar (and progress_bar_options, progress_bar_style)")


def _picklable(obj: Any) -> bool:
    """Whether ``obj`` pickles (multiprocessing primitives made for fork do not)."""
    try:
        dumps(obj)
    except Exception:  # noqa: BLE001 - any failure: it does not
        return False
    return True
