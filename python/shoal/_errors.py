"""Exceptions shoal raises, and the rebuilding of exceptions from workers."""

from __future__ import annotations

from shoal._pickling import loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    # multiprocessing.pool defines both, but typeshed declares only the names
    # in its __all__; these declarations follow CPython's definitions.
    class RemoteTraceback(Exception):
        tb: str

        def __init__(self, tb: str) -> None: ...

    class MaybeEncodingError(Exception):
        exc: str
        value: str

        def __init__(self, exc: object, value: object) -> None: ...

else:
    # MaybeEncodingError is not used here: it is imported so that this module
    # has at run time the names it declares above.
    from multiprocessing.pool import MaybeEncodingError, RemoteTraceback  # noqa: F401


class WorkerLostError(Exception):
    """The worker process running a task died (killed by a signal, the OOM
    killer, ``os._exit``, a segfault). Only that task fails; the pool
    replaces the worker and carries on.

    ``pid`` is the worker's pid; ``exitcode`` its exit code if it exited,
    else ``None``; ``signal`` the number of the signal that killed it, else
    ``None``. The message names all three and the task.
    """

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None, signal: int | None = None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self):  # keep the attributes through pickling
        return (type(self), (self.args[0], self.pid, self.exitcode, self.signal))

    @classmethod
    def from_engine(cls, payload: bytes) -> WorkerLostError:
        """Build from the engine's payload: ``pid kind value`` then the message."""
        head, _, message = payload.decode("utf-8", "replace").partition("\n")
        try:
            pid_s, kind, value_s = head.split()
            pid, value = int(pid_s), int(value_s)
        except ValueError:
            return cls(payload.decode("utf-8", "replace"))
        return cls(
            message,
            pid=pid,
            exitcode=value if kind == "code" else None,
            signal=value if kind == "signal" else None,
        )


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
