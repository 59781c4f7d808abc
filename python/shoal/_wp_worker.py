"""The worker side of ``shoal.WorkerPool``: per-worker state, the extra
arguments MPIRE passes, ``worker_init`` and ``worker_exit``.

A ``WorkerPool``'s workers are ordinary shoal workers whose initializer is
:func:`setup`. It runs once per worker (replacements included),
when the engine's ``Init`` frame arrives: it builds the extra arguments
(worker id, shared objects, worker state, in MPIRE's order), runs
``worker_init`` and sets ``_worker.exit_hook`` so that ``worker_exit`` runs
when the engine tells the worker to exit. A map without extra arguments
or ``worker_init`` sends the user's function itself, which the worker
calls by MPIRE's rule (the task bit ``UNPACK``); other tasks reach it
through :class:`MapCall` or :class:`ApplyCall`, the callables the job
layer then sends as the job's function, which add the extra arguments and
unpack each task's arguments as MPIRE does.

Under ``start_method="threading"`` the workers are threads of the parent
(``_threads``): a worker's context lives on its thread's host instead of
in this module's globals, and the calls hold the user's function itself,
which travelled by reference.

Imported by workers, so it imports nothing beyond what a worker has.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# This worker's context, set by setup.
_ctx: _Context | None = None


class _Context:
    """What a worker keeps for its whole life."""

    __slots__ = ("exit", "extra", "init_error")

    def __init__(self, extra: tuple[Any, ...], exit: Callable[..., Any] | None) -> None:
        # Passed before each task's own arguments, and to init and exit.
        self.extra = extra
        self.exit = exit
        # What worker_init raised: every task on this worker raises it, so
        # the map fails with it, as in MPIRE, and the worker stays up.
        self.init_error: BaseException | None = None


def setup(settings: dict[str, Any]) -> None:
    """The initializer of a ``WorkerPool``'s workers. ``settings``: the
    parent's own, inherited, when the worker forked (see
    ``_backend.inherited_init``), or by reference under threading; else
    unpickled from what ``_spawning.dumps`` made."""
    global _ctx
    from shoal import _worker

    thread = getattr(_worker.thread, "worker", None)  # a thread worker's host
    slot = (_worker.slot if thread is None else thread.slot) or 0
    cpu_ids = settings["cpu_ids"]
    if cpu_ids:
        os.sched_setaffinity(0, cpu_ids[slot])  # under threading: this thread's
    if settings["daemon"] and thread is None:
        _mark_daemon()  # a thread worker is no process: nothing to mark
    extra: list[Any] = []
    if settings["pass_worker_id"]:
        extra.append(slot)
    if settings["shared_objects"] is not None:
        extra.append(settings["shared_objects"])
    if settings["use_worker_state"]:
        extra.append({})
    worker_init = settings["worker_init"]
    worker_exit = settings["worker_exit"]
    if worker_init is not None:
        worker_init = _worker.adopt_main(worker_init)
    if worker_exit is not None:
        worker_exit = _worker.adopt_main(worker_exit)
    ctx = _Context(tuple(extra), worker_exit)
    if thread is None:
        _ctx = ctx
        _worker.exit_hook = _run_exit
        # A task's exception reaches the parent as its own type even when its
        # __init__ takes other arguments than its args, as in MPIRE.
        _worker.remake_exceptions = True
    else:
        # A task's exception gets the worker's traceback as its cause, as in MPIRE.
        thread.handles.tracebacks = True
        thread.context = ctx
        thread.exit_hook = lambda: _exit_result(ctx, thread.handles)
    if worker_init is not None:
        # worker_init_timeout counts from here (the engine kills the worker
        # at its deadline, even in C code).
        _worker.init_started()
        try:
            worker_init(*ctx.extra)
        except BaseException as exc:  # noqa: BLE001 - raised again by every task
            ctx.init_error = exc


def _thread_context() -> _Context | None:
    """The context of the thread worker running on this thread, if any."""
    from shoal import _worker

    host = getattr(_worker.thread, "worker", None)
    return None if host is None else host.context


def _mark_daemon() -> None:
    """Make this worker a daemonic process as ``multiprocessing`` sees it,
    so that starting a process from a task fails as it does under MPIRE's
    ``daemon=True`` (``AssertionError``: daemonic processes are not
    allowed to have children)."""
    from multiprocessing import process

    process.current_process()._config["daemon"] = True  # type: ignore[attr-defined]


def _run_exit() -> bytes | None:
    """``_worker.exit_hook``: run ``worker_exit``, if there is one and
    ``worker_init`` did not fail. The payload is ``(True, value)``
    pickled, or a failure as ``_worker._chunk_failed`` makes it (a
    3-tuple), which the parent rebuilds and raises."""
    return _exit_result(_ctx, None)


def _exit_result(ctx: _Context | None, oob: Any) -> bytes | None:
    """What :func:`_run_exit` says for worker context ``ctx``; ``oob``: a
    thread worker's object table (its result then goes by reference)."""
    from shoal import _worker

    if ctx is None or ctx.exit is None or ctx.init_error is not None:
        return None  # multiprocessing's exit routine runs as the worker exits (_worker.mp_exit)
    # Run here too once worker_exit has, before its result is sent: what it
    # put in a Queue is in the pipe by the time the parent has the result.
    try:
        value = ctx.exit(*ctx.extra)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        if oob is None:
            _worker.mp_exit()
        return _worker._chunk_failed(exc, "\nin worker_exit\n", oob)
    if oob is None:
        _worker.mp_exit()  # a thread worker's process is the parent: nothing of it ends
    try:
        return _worker.dumps((True, value), oob)
    except BaseException as exc:  # noqa: BLE001 - the value cannot travel
        return _worker._chunk_failed(exc, "\nwhile pickling the result of worker_exit\n", oob)


class _Call:
    """The function a ``WorkerPool`` job runs: the user's, with the extra
    arguments. Pickled as the user's function's own pickle (made in the
    parent by ``_pickling.dumps_func``, so a script's function travels by
    reference where the workers inherited it) and rebuilt in the worker."""

    # Its pickle is the type, the user's function's own pickle (bytes) and
    # a name: _pickling.dumps_func takes it as it is, not for a __main__
    # reference when those bytes contain one.
    pickles_prepared = True

    def __init__(self, payload: bytes, name: str, func: Callable[..., Any] | None = None) -> None:
        # Under threading the payload is a reference (``_handles``) to the
        # function itself: taken now, it is the function the workers call,
        # and the call itself reaches them by reference, never rebuilt.
        self.threaded = False
        if func is None:
            from shoal import _handles

            if _handles.is_reference(payload):
                from shoal._pickling import loads

                self.threaded = True
                func, payload = loads(payload), b""
        self.payload = payload
        # What messages about its tasks call it (_errors.func_name).
        self.__qualname__ = name
        self.func = func

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.payload, self.__qualname__))


def _rebuild(cls: type[_Call], payload: bytes, name: str) -> _Call:
    from shoal import _worker

    return cls(payload, name, _worker.adopt_main(_worker.loads(payload)))


class MapCall(_Call):
    """A map's function: called with one task's item, unpacked as MPIRE does."""

    def __call__(self, item: Any) -> Any:
        ctx = _ctx if not self.threaded else _thread_context()
        assert ctx is not None and self.func is not None, "a WorkerPool task outside a WorkerPool worker"
        if ctx.init_error is not None:
            raise ctx.init_error
        # The common shapes first, without building anything.
        kind = type(item)
        if kind is tuple:
            return self.func(*ctx.extra, *item)
        if kind is dict:
            return self.func(*ctx.extra, **item)
        if kind is int or kind is float:
            return self.func(*ctx.extra, item)
        from shoal._worker import call_parts

        args, kwargs = call_parts(item)
        return self.func(*ctx.extra, *args, **kwargs)


class ApplyCall(_Call):
    """``apply``'s function: called with the call's own arguments."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = _ctx if not self.threaded else _thread_context()
        assert ctx is not None and self.func is not None, "a WorkerPool task outside a WorkerPool worker"
        if ctx.init_error is not None:
            raise ctx.init_error
        return self.func(*ctx.extra, *args, **kwargs)
