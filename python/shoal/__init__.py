"""shoal: run a function over many inputs in parallel worker processes (or threads).

``shoal.Pool`` is a drop-in for ``multiprocessing.Pool``, ``shoal.Executor``
one for ``concurrent.futures.ProcessPoolExecutor``, and ``shoal.WorkerPool``
the same engine behind MPIRE's ``WorkerPool`` API (with ``shoal.utils`` for
``mpire.utils``): all never hang when a worker dies, read lazy input lazily,
and take any callable. ``shoal.ThreadPool`` is a drop-in for
``multiprocessing.pool.ThreadPool`` on the same engine, with threads as
workers (as ``WorkerPool(start_method="threading")`` and
``Executor(start_method="threading")`` have).

Names are imported on first use: a worker process imports ``shoal._worker``
through this package and must not pay for ``multiprocessing`` to start.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing costs a worker ~15 ms at start.
TYPE_CHECKING = False

__version__ = "0.1.0"

_EXPORTS = {
    "Pool": "shoal.pool",
    "ThreadPool": "shoal.thread_pool",
    "WorkerPool": "shoal.worker_pool",
    "Executor": "shoal.executor",
    "ShoalFuture": "shoal.executor",
    "ApplyResult": "shoal._results",
    "AsyncResult": "shoal._results",
    "MapResult": "shoal._results",
    "IMapIterator": "shoal._jobs",
    "IMapUnorderedIterator": "shoal._jobs",
    "WorkerLostError": "shoal._errors",
    "TaskTimeoutError": "shoal._errors",
    "PoolTerminatedError": "shoal._errors",
    "RemoteUnpicklingError": "shoal._errors",
    "TimeoutError": "multiprocessing",
    "MaybeEncodingError": "multiprocessing.pool",
    "RemoteTraceback": "multiprocessing.pool",
}

# A literal, so type checkers read it; tests/api/test_exports.py keeps it in
# step with _EXPORTS.
__all__ = [
    "ApplyResult",
    "AsyncResult",
    "Executor",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "MaybeEncodingError",
    "Pool",
    "PoolTerminatedError",
    "RemoteTraceback",
    "RemoteUnpicklingError",
    "ShoalFuture",
    "TaskTimeoutError",
    "ThreadPool",
    "TimeoutError",
    "WorkerLostError",
    "WorkerPool",
]

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports on use
    from multiprocessing import TimeoutError

    # MaybeEncodingError and RemoteTraceback are multiprocessing.pool's,
    # declared in _errors for type checkers.
    from shoal._errors import (
        MaybeEncodingError,
        PoolTerminatedError,
        RemoteTraceback,
        RemoteUnpicklingError,
        TaskTimeoutError,
        WorkerLostError,
    )
    from shoal._jobs import IMapIterator, IMapUnorderedIterator
    from shoal._results import ApplyResult, AsyncResult, MapResult
    from shoal.executor import Executor, ShoalFuture
    from shoal.pool import Pool
    from shoal.thread_pool import ThreadPool
    from shoal.worker_pool import WorkerPool


def __getattr__(name: str) -> object:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
