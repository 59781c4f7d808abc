"""Exceptions shoal raises, and the rebuilding of exceptions from workers.

Workers import this module, and a spawned worker (or a forkserver zygote)
has not imported ``multiprocessing``, which takes ~12 ms here: the classes
built on it (``ResultTimeoutError``, ``WorkerLostError``,
``TaskTimeoutError``) and the two it re-exports (``RemoteTraceback``,
``MaybeEncodingError``) are made on first use (``__getattr__`` below).
"""

from __future__ import annotations

import _pickle
import io

from shoal import _protocol as P
from shoal._pickling import loads
from shoal._shoal import unpack_one, unpack_values

TYPE_CHECKING = False
if TYPE_CHECKING:
    import multiprocessing
    from typing import Any

    # multiprocessing.pool defines both, but typeshed declares only the names
    # in its __all__; these declarations follow CPython's definitions.
    class RemoteTraceback(Exception):
        tb: str

        def __init__(self, tb: str) -> None: ...

    class MaybeEncodingError(Exception):
        exc: str
        value: str

        def __init__(self, exc: object, value: object) -> None: ...

    class ResultTimeoutError(multiprocessing.TimeoutError, TimeoutError):
        pass


_RESULT_TIMEOUT_DOC = """What a result's ``get(timeout)`` raises when the timeout passes
first: ``multiprocessing.TimeoutError``, as ``Pool``'s results raise,
and the builtin ``TimeoutError``, as MPIRE's and ``concurrent.futures``'
do, so that code written for any of them catches it. The task goes on."""


class _WorkerLost(Exception):
    """The body of :class:`WorkerLostError`, which also derives from
    ``concurrent.futures.process.BrokenProcessPool``. That module costs a
    worker several milliseconds to import and workers import this one, so
    the class is made on first use (``__getattr__`` below)."""

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None, signal: int | None = None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self):  # keep the attributes through pickling
        return (type(self), (self.args[0], self.pid, self.exitcode, self.signal))

    @classmethod
    def from_engine(cls, payload: bytes, single: bool) -> Self:
        """Build from the engine's payload (``lost_message`` in
        crates/shoal-core/src/supervise.rs): a line ``pid kind value bits
        what_len name_len``, the message, the function's name, and the
        chunk's input, from which the call is shown."""
        head, _, rest = payload.partition(b"\n")
        try:
            pid_s, kind, value_s, bits_s, what_len, name_len = head.decode().split()
            pid, value, bits = int(pid_s), int(value_s), int(bits_s)
            at = int(what_len)
            end = at + int(name_len)
        except ValueError:
            return cls(payload.decode("utf-8", "replace"))
        message = rest[:at].decode("utf-8", "replace")
        note = _lost_call(rest[at:end].decode("utf-8", "replace"), rest[end:], bits, single)
        return cls(
            message + note,
            pid=pid,
            exitcode=value if kind == "code" else None,
            signal=value if kind == "signal" else None,
        )


_LOST_DOC = """The worker process running a task died (killed by a signal, the OOM
killer, ``os._exit``, a segfault). Only that task fails; the pool
replaces the worker and carries on.

``pid`` is the worker's pid; ``exitcode`` its exit code if it exited,
else ``None``; ``signal`` the number of the signal that killed it, else
``None``. The message names all three, the function, the input index
and the call (its arguments shortened).

It derives from ``concurrent.futures.process.BrokenProcessPool``, so an
``except BrokenProcessPool`` written for ``ProcessPoolExecutor`` catches
it (unlike there, the pool is not broken), and so from ``RuntimeError``,
as MPIRE's "worker died unexpectedly" is.
"""

_TIMEOUT_DOC = """A task ran past its deadline (``Executor(task_timeout=...)``,
``Executor.schedule(..., timeout=...)``, ``WorkerPool``'s ``task_timeout``):
its worker was killed (SIGKILL, so C code stops too) and replaced. A
``TimeoutError``, as pebble and MPIRE raise, and a :class:`WorkerLostError`,
since the worker is gone; the message names the task's call and the limit.
"""

if TYPE_CHECKING:
    from concurrent.futures.process import BrokenProcessPool
    from typing import Self

    class WorkerLostError(_WorkerLost, BrokenProcessPool):
        pass

    class TaskTimeoutError(WorkerLostError, TimeoutError):
        pass

else:

    def __getattr__(name: str) -> type:
        return _made(name)


def _made(name: str) -> type:
    """The class ``name`` of those made on first use, made now if need be."""
    known: type | None = globals().get(name)
    if known is not None:
        return known
    if name in ("WorkerLostError", "TaskTimeoutError"):
        from concurrent.futures.process import BrokenProcessPool

        lost = type("WorkerLostError", (_WorkerLost, BrokenProcessPool), {"__doc__": _LOST_DOC})
        timeout = type("TaskTimeoutError", (lost, TimeoutError), {"__doc__": _TIMEOUT_DOC})
        made = {"WorkerLostError": lost, "TaskTimeoutError": timeout}
    elif name == "ResultTimeoutError":
        import multiprocessing

        bases = (multiprocessing.TimeoutError, TimeoutError)
        made = {name: type(name, bases, {"__doc__": _RESULT_TIMEOUT_DOC})}
    elif name in ("RemoteTraceback", "MaybeEncodingError"):
        import multiprocessing.pool

        # multiprocessing.pool's own classes, re-exported.
        cls: type = getattr(multiprocessing.pool, name)
        globals()[name] = cls
        return cls
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for made_cls in made.values():
        made_cls.__module__ = __name__
    globals().update(made)
    return globals()[name]


def func_name(func: Any) -> str:
    """What people call ``func`` in messages: ``parse``, ``Model.predict``,
    ``partial(scale)``."""
    inner = getattr(func, "func", None)  # functools.partial
    if inner is not None and hasattr(func, "keywords"):
        return f"partial({func_name(inner)})"
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__


def describe_call(name: str, item: Any, bits: int) -> str:
    """``name(arguments)`` for one task's ``item``, each argument shortened."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 80
    if bits & P.APPLY:
        args, kwds = item
        parts = [r.repr(a) for a in args] + [f"{k}={r.repr(v)}" for k, v in kwds.items()]
    elif bits & P.STAR or (bits & P.UNPACK and isinstance(item, tuple)):
        parts = [r.repr(a) for a in item]
    elif bits & P.UNPACK and isinstance(item, dict):
        parts = [f"{k}={r.repr(v)}" for k, v in item.items()]
    else:
        parts = [r.repr(item)]
    return f"{name}({', '.join(parts)})"


# Calls a lost chunk's note shows at most.
_SHOWN_CALLS = 3


class _PlainData(_pickle.Unpickler):
    """Loads only plain data: numbers, strings, bytes, and containers of
    them. Anything else a pickle names (a class, a function, a reducer) is
    refused, so reading a task's input to show it runs no code of the
    task's in the parent: that code may be what killed the worker."""

    def find_class(self, module: str, name: str) -> Any:
        raise _pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _plain_items(data: bytes, single: bool) -> list[Any]:
    """A chunk's input items, if they are plain data (else it raises)."""
    if data[0] != 0x80:  # packed numbers (_pickling.dumps_one, dumps_chunk)
        return [unpack_one(data)] if single else list(unpack_values(data))
    loaded = _PlainData(io.BytesIO(data)).load()
    return [loaded] if single else list(loaded)


def _lost_call(name: str, data: bytes, bits: int, single: bool) -> str:
    """A line naming the calls a lost chunk was running, or "" if its
    input cannot be shown here (it is not plain data)."""
    if not data or not name:
        return ""
    try:
        items = _plain_items(data, single)
        calls = [describe_call(name, item, bits) for item in items[:_SHOWN_CALLS]]
    except Exception:  # noqa: BLE001 - the note is optional
        return ""
    more = f" and {len(items) - _SHOWN_CALLS} more" if len(items) > _SHOWN_CALLS else ""
    which = "the task" if len(items) == 1 else "one of the tasks"
    return f"\nin {which} {', '.join(calls)}{more}"


class PoolTerminatedError(Exception):
    """The pool was terminated before the task finished."""


class RemoteUnpicklingError(Exception):
    """An exception raised in a worker could not be rebuilt in the parent.
    Its repr and remote traceback are kept."""


def remake_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """An exception of class ``cls`` with ``args`` and attributes ``state``,
    made without calling ``cls.__init__`` (whose signature may not match
    ``args``), as MPIRE rebuilds a task's exception."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def reduce_exception(exc: BaseException) -> tuple[Any, ...]:
    """``exc`` as a reduction (for ``__reduce__``) that :func:`remake_exception`
    rebuilds: its class, args and attributes."""
    return (remake_exception, (type(exc), exc.args, dict(getattr(exc, "__dict__", {}))))


def rebuild(desc: tuple[bytes | None, str | None, str]) -> BaseException:
    """Rebuild an exception described by the worker's ``_describe``, with
    its remote traceback as ``__cause__``, as multiprocessing does. A thread
    worker's (no traceback text) is the task's own exception object, by
    reference, with its traceback: it is returned as it is, as
    ``multiprocessing.pool.ThreadPool`` raises it."""
    blob, tb, rep = desc
    if tb is None and blob is not None:
        own = loads(blob)
        if isinstance(own, BaseException):
            return own
    exc: BaseException | None = None
    why = "it could not be pickled in the worker"
    if blob is not None:
        try:
            exc = loads(blob)
        except Exception as e:  # noqa: BLE001
            why = f"unpickling it failed: {e!r}"
    if not isinstance(exc, BaseException):
        exc = RemoteUnpicklingError(f"{rep} ({why})")
    exc.__cause__ = _made("RemoteTraceback")(tb or "")
    return exc
