"""Exceptions shoal raises, and the rebuilding of exceptions from workers."""

from __future__ import annotations

from multiprocessing.pool import RemoteTraceback

from shoal._pickling import loads


class WorkerLostError(Exception):
    """The worker process running a task died (killed by a signal, the OOM
    killer, ``os._exit``, a segfault). The message names the pid, the exit
    code or signal, and the task. Only that task fails; the pool replaces
    the worker and carries on."""


class PoolTerminatedError(Exception):
    """The pool was terminated before the task finished."""


class RemoteUnpicklingError(Exception):
    """An exception raised in a worker could not be rebuilt in the parent.
    Its repr and remote traceback are kept."""


def rebuild(desc: tuple[bytes | None, str, str]) -> BaseException:
    """Rebuild an exception described by the worker's ``_describe``, with
    its remote traceback as ``__cause__``, as multiprocessing does."""
    blob, tb, rep = desc
    exc: BaseException | None = None
    why = "it could not be pickled in the worker"
    if blob is not None:
        try:
            exc = loads(blob)
        except Exception as e:  # noqa: BLE001
            why = f"unpickling it failed: {e!r}"
    if not isinstance(exc, BaseException):
        exc = RemoteUnpicklingError(f"{rep} ({why})")
    exc.__cause__ = RemoteTraceback(tb)
    return exc
