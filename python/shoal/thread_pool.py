"""``shoal.ThreadPool``: a drop-in for ``multiprocessing.pool.ThreadPool``.

The same pool as :class:`shoal.Pool`, on the same route (the job layer,
the engine, the worker loop), with threads of this process as its workers
(``_backend.Threads``): nothing is pickled, so tasks get the very objects
they were given (locks, open files, objects shared with the caller), and
return their results and raise their exceptions as themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shoal.pool import Pool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ThreadPool(Pool):
    """A pool of worker threads, with the API of
    ``multiprocessing.pool.ThreadPool`` (and of :class:`shoal.Pool`).

    ``processes``: the number of worker threads (default: the CPUs this
    process may use). ``initializer(*initargs)`` runs on each worker thread
    as it starts. Functions, arguments and results are passed as they are,
    never pickled; a task's exception is raised as itself, with its own
    traceback (no ``RemoteTraceback`` cause, as in the standard library).
    ``imap`` and ``imap_unordered`` read their input lazily, on a thread of
    their own, as :class:`shoal.Pool`'s do.

    A thread cannot be killed. :meth:`terminate` (and leaving a ``with``
    block) fails every unfinished task with
    :class:`shoal.PoolTerminatedError` and returns within a fraction of a
    second; a worker thread still inside a task runs that task to its end,
    on its own, and then exits (its result is dropped). Unlike the standard
    library's, ``terminate`` does not wait for such a task.
    """

    _wrap_exception = False

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
    ) -> None:
        super().__init__(processes, initializer, initargs, start_method="threading")

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} state={self._state} pool_size={self._processes}>"
