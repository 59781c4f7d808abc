"""Serialisation: the C pickler for data, cloudpickle only where it must.

Plain ``pickle`` is several times faster than cloudpickle, so everything is
tried with it first. Two things it cannot carry correctly fall back to
cloudpickle, which pickles them by value:

* objects it refuses (lambdas, closures, nested functions and classes);
* references into ``__main__``. A function or class defined in a script, a
  notebook or a REPL pickles "fine" by reference, but a worker that did not
  run that ``__main__`` cannot find it. Such a reference always spells the
  module name in the stream, so a substring test finds it cheaply.
"""

from __future__ import annotations

# The C module: `pickle` itself imports re and enum, ~8 ms of worker start-up.
import _pickle

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 5
_MAIN = b"__main__"

loads = _pickle.loads
_dumps = _pickle.dumps


def _cloud_dumps(obj: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` so that any worker, under any start method, can load it."""
    try:
        data = _dumps(obj, PROTOCOL)
    except Exception as first:  # noqa: BLE001 - any failure: try cloudpickle
        try:
            return _cloud_dumps(obj)
        except Exception:  # noqa: BLE001
            # The object is unpicklable either way; the first error is the
            # one that names the real problem.
            raise first from None
    if _MAIN in data:
        return _cloud_dumps(obj)
    return data


def dumps_func(func: Any) -> tuple[bytes, bool]:
    """Pickle a function; also say whether it went by reference (plain
    pickle, a name any worker can import), which makes it safe to reuse the
    pickle for later calls with the same function object."""
    try:
        data = _dumps(func, PROTOCOL)
    except Exception:  # noqa: BLE001 - dumps takes the careful path
        return dumps(func), False
    if _MAIN in data:
        return _cloud_dumps(func), False
    return data, True


def dumps_many(items: list[Any]) -> list[bytes]:
    """``[dumps(x) for x in items]``, with the C pickler called straight from
    a comprehension; the careful path runs only for items that need it.
    Raises what ``dumps`` raises for the first item that cannot be pickled,
    with ``index`` set to that item's position as its ``shoal_index``."""
    try:
        out = [_dumps(x, PROTOCOL) for x in items]
    except Exception:  # noqa: BLE001 - one of them needs the careful path
        out = []
        for i, x in enumerate(items):
            try:
                out.append(dumps(x))
            except Exception as exc:
                exc.shoal_index = i  # type: ignore[attr-defined]
                raise
        return out
    if _MAIN in b"".join(out):
        return [dumps(x) if _MAIN in d else d for x, d in zip(items, out, strict=True)]
    return out
