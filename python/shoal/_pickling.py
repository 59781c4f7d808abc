"""Serialisation: the C pickler for data, cloudpickle only where it must.

Plain ``pickle`` is several times faster than cloudpickle, so everything is
tried with it first. Two things it cannot carry correctly fall back to
cloudpickle, which pickles them by value:

* objects it refuses (lambdas, closures, nested functions and classes);
* references into ``__main__``. A function or class defined in a script, a
  notebook or a REPL pickles "fine" by reference, but a worker that did not
  run that ``__main__`` cannot find it. Such a reference always spells the
  module name in the stream, so a substring test finds it cheaply. (With
  ``find``: ``bytes in bytes`` first tries the needle as an int, and raises
  and clears a TypeError, which triples its cost on a short pickle.)

Given an ``oob`` (a ``shoal._shm.Outbound``), large buffers leave the stream
and travel through shared memory; the substring test then scans only what
stays in the stream.

A chunk (a list of items, or of results) that holds only plain ints or only
plain floats travels packed, as an array of machine values
(crates/shoal-py/src/packed.rs), which both sides handle many times faster
than a pickle. So does a single value (one task's item, argument tuple or
result) that is a plain int, a plain float or a short tuple of them.
"""

from __future__ import annotations

# The C module: `pickle` itself imports re and enum, ~8 ms of worker start-up.
import _pickle

from shoal._shoal import pack_each, pack_one, pack_values, unpack_one, unpack_values

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    from typing import Any

    from shoal._shm import Outbound

PROTOCOL = 5
_MAIN = b"__main__"
# Every pickle of protocol 2 and up starts with the PROTO opcode.
_PROTO = 0x80

loads = _pickle.loads
_dumps = _pickle.dumps


def _cloud_dumps(obj: Any, buffer_callback: Any = None) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffer_callback)


def dumps(obj: Any, oob: Outbound | None = None) -> bytes:
    """Pickle ``obj`` so that any worker, under any start method, can load it."""
    if oob is not None:
        return dumps_oob(obj, oob)
    try:
        data = _dumps(obj, PROTOCOL)
    except Exception as first:  # noqa: BLE001 - any failure: try cloudpickle
        try:
            return _cloud_dumps(obj)
        except Exception:  # noqa: BLE001
            # The object is unpicklable either way; the first error is the
            # one that names the real problem.
            raise first from None
    if data.find(_MAIN) >= 0:
        return _cloud_dumps(obj)
    return data


def dumps_oob(obj: Any, oob: Outbound) -> bytes:
    """``dumps(obj, oob)`` without the dispatch, for ``apply_async``."""
    # Most objects have no large buffer: one pass, with a callback shared by
    # all calls that only counts them (any count, any thread, means "look
    # again" below).
    hits = oob.hits
    try:
        data = _dumps(obj, PROTOCOL, buffer_callback=oob.spot)
    except Exception:  # noqa: BLE001 - the careful path says why
        return _dumps_oob_careful(obj, oob)
    if oob.hits == hits and data.find(_MAIN) < 0:
        return data
    return _dumps_oob_careful(obj, oob)


def _dumps_oob_careful(obj: Any, oob: Outbound) -> bytes:
    # oob.dumps: read-only arrays arrive writable (see Outbound.dumps).
    bufs: list[memoryview] = []
    collect = oob.collector(bufs)
    try:
        data = oob.dumps(obj, collect)
        careful = data.find(_MAIN) >= 0
    except Exception:  # noqa: BLE001 - try cloudpickle
        careful = True
    if careful:
        bufs.clear()
        try:
            data = oob.dumps(obj, collect, cloud=True)
        except Exception:  # noqa: BLE001 - dumps raises the error that names the problem
            return dumps(obj)
    if bufs:
        wrapped = oob.wrap(data, bufs, _dumps)
        # No room in shared memory: the buffers travel in band.
        return oob.dumps(obj, None, cloud=careful) if wrapped is None else wrapped
    return data


def dumps_chunk(items: list[Any], oob: Outbound | None = None) -> bytes:
    """Pickle a chunk for ``loads_chunk``: packed if it is all plain ints
    or all plain floats, else as ``dumps`` does."""
    packed = pack_values(items)
    return dumps(items, oob) if packed is None else packed


def loads_chunk(data: Any) -> Any:
    """The chunk ``dumps_chunk`` made; ``data`` is bytes or a buffer."""
    return loads(data) if data[0] == _PROTO else unpack_values(data)


def dumps_one(obj: Any, oob: Outbound | None = None) -> bytes:
    """One task's item or result, for ``loads_one``: packed if it is a plain
    number or a short tuple of them, else as ``dumps`` does."""
    packed = pack_one(obj)
    return dumps(obj, oob) if packed is None else packed


def loads_one(data: Any) -> Any:
    """The value ``dumps_one`` (or the worker's native loop) made."""
    return loads(data) if data[0] == _PROTO else unpack_one(data)


def dumps_func(func: Any) -> tuple[bytes, bool]:
    """Pickle a function; also say whether it went by reference (plain
    pickle, a name any worker can import), which makes it safe to reuse the
    pickle for later calls with the same function object."""
    try:
        data = _dumps(func, PROTOCOL)
    except Exception:  # noqa: BLE001 - dumps takes the careful path
        return dumps(func), False
    if data.find(_MAIN) >= 0:
        return _cloud_dumps(func), False
    return data, True


def dumps_many(items: list[Any], oob: Outbound | None = None) -> list[bytes]:
    """``[dumps_one(x) for x in items]``: all packed if every item packs,
    else the C pickler called straight from a comprehension, with the
    careful path only for items that need it.
    Raises what ``dumps`` raises for the first item that cannot be pickled,
    with the pickles of the items before it as its ``shoal_done`` (they may
    hold shared memory, so they are used, not made again)."""
    packed = pack_each(items)
    if packed is not None:
        return packed
    try:
        if oob is None:
            out = [_dumps(x, PROTOCOL) for x in items]
            careful = False
        else:
            hits, spot = oob.hits, oob.spot
            out = [_dumps(x, PROTOCOL, buffer_callback=spot) for x in items]
            careful = oob.hits != hits
    except Exception:  # noqa: BLE001 - one of them needs the careful path
        careful = True
    if careful:
        # An item needs the careful path, or has large buffers: item by item.
        out = []
        for x in items:
            try:
                out.append(dumps(x, oob))
            except Exception as exc:
                # An attribute of our own on the caller's exception, read
                # back with getattr: no exception type declares it.
                exc.shoal_done = out  # type: ignore[attr-defined]
                raise
        return out
    if b"".join(out).find(_MAIN) >= 0:
        return [dumps(x) if d.find(_MAIN) >= 0 else d for x, d in zip(items, out, strict=True)]
    return out
