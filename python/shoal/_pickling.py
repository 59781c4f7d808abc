"""Serialisation: the C pickler for data, cloudpickle only where it must.

Plain ``pickle`` is several times faster than cloudpickle, so everything is
tried with it first. Two things it cannot carry correctly fall back to
cloudpickle, which pickles them by value:

* what it can only name, by a reference no worker can resolve: lambdas,
  closures, nested functions and classes (plain pickle raises
  ``PicklingError`` or ``AttributeError`` for them). Data it refuses for
  what it is (an open file, a lock: ``TypeError``) is refused here too, with
  the stdlib's error: cloudpickle would send an open file as a ``StringIO``
  snapshot of it;
* references into ``__main__``. A function or class defined in a script, a
  notebook or a REPL pickles "fine" by reference, but a worker that did not
  run that ``__main__`` cannot find it. Such a reference always spells the
  module name in the stream, so a substring test finds it cheaply. (With
  ``find``: ``bytes in bytes`` first tries the needle as an int, and raises
  and clears a TypeError, which triples its cost on a short pickle.) A
  function or class the workers inherited, by fork, unchanged since, keeps
  its reference (:func:`dumps_func` for a task's callable,
  :func:`_inherited_only` for arguments).

Code pickled by value keeps its file name (cloudpickle writes
``<dynamic-code>``), so a remote traceback shows the script's file and line.

Given an ``oob`` (a ``shoal._shm.Outbound``), large buffers leave the stream
and travel through shared memory; the substring test then scans only what
stays in the stream.

A chunk (a list of items, or of results) that holds only plain ints or only
plain floats travels packed, as an array of machine values
(crates/shoal-py/src/packed.rs), which both sides handle many times faster
than a pickle. So does a single value (one task's item, argument tuple or
result) that is a plain int, a plain float or a short tuple of them.

A feeder whose chunks pickle long (``LARGE`` bytes or more) pickles the
next ones through a :class:`Sink`, a buffer kept from chunk to chunk.
"""

from __future__ import annotations

# The C module: `pickle` itself imports re and enum, ~8 ms of worker start-up.
import _pickle
import io
import marshal
import sys
import types
import weakref

from shoal._handles import Handles
from shoal._shoal import pack_each, pack_one, pack_values, unpack_one, unpack_values

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    from typing import Any

    from shoal._shm import Outbound

PROTOCOL = 5
_MAIN = b"__main__"
# Set in a worker that forked from the parent (start method fork): its
# `__main__` is the parent's as it was, so a result's reference into it
# resolves in the parent to the same class or function.
_main_inherited = False


def inherit_main() -> None:
    """Say that this process's ``__main__`` is its parent's (a fork worker)."""
    global _main_inherited
    _main_inherited = True


def _refers_to_main(data: bytes) -> bool:
    """Whether pickle ``data`` names something in ``__main__`` that the
    process loading it may not have."""
    return not _main_inherited and data.find(_MAIN) >= 0


# Every pickle of protocol 2 and up starts with the PROTO opcode.
_PROTO = 0x80

loads = _pickle.loads
_dumps = _pickle.dumps

# A caller whose pickles run this long pickles the next ones through a Sink.
LARGE = 1 << 16


class Sink:
    """``_dumps`` for one caller's long pickles, one at a time, written
    into a buffer kept from one to the next: 3 to 4 times faster for 1 MiB.
    ``_dumps`` grows a fresh buffer by half again each time it fills;
    glibc moves each growth to the top of the heap it has just trimmed, so
    every page written is a page fault (1 MiB of 1 KiB bytes: ~240 faults,
    630-940 µs on a thread; through a Sink ~6 faults, 190-260 µs). The
    buffer is kept only while pickles stay under ``KEEP``, so a caller holds
    at most that much between them."""

    KEEP = 8 << 20

    __slots__ = ("_file",)

    def __init__(self) -> None:
        self._file = io.BytesIO()

    def __call__(self, obj: Any, protocol: int, buffer_callback: Any = None) -> bytes:
        f = self._file
        f.seek(0)  # the last pickle's bytes are overwritten, not freed
        _pickle.Pickler(f, protocol, buffer_callback=buffer_callback).dump(obj)
        n = f.tell()
        with f.getbuffer() as view:
            data = bytes(view[:n])
        if n > self.KEEP:
            self._file = io.BytesIO()
        return data


_cloud_pickler: Any = None


def _code_by_marshal(code: types.CodeType) -> tuple[Any, tuple[bytes]]:
    # Workers run the parent's interpreter, so marshal's format is theirs
    # too; unlike cloudpickle's reducer it keeps co_filename.
    return marshal.loads, (marshal.dumps(code),)


def cloud_pickler() -> Any:
    """cloudpickle's pickler, with code kept whole (see ``_code_by_marshal``);
    imported on first use, as cloudpickle costs ~20 ms to import."""
    global _cloud_pickler
    if _cloud_pickler is None:
        from collections import ChainMap

        import cloudpickle

        class Pickler(cloudpickle.Pickler):
            dispatch_table = ChainMap({types.CodeType: _code_by_marshal}, cloudpickle.Pickler.dispatch_table)

        _cloud_pickler = Pickler
    return _cloud_pickler


def _cloud_dumps(obj: Any, buffer_callback: Any = None) -> bytes:
    with io.BytesIO() as f:
        cloud_pickler()(f, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


def _value_helps(first: Exception) -> bool:
    """Whether plain pickle's error ``first`` is one cloudpickle exists for:
    an object it could only name, by a reference no worker resolves."""
    return isinstance(first, (_pickle.PicklingError, AttributeError))


def _by_value(obj: Any, first: Exception, buffer_callback: Any = None) -> bytes:
    """Pickle ``obj`` with cloudpickle after plain pickle raised ``first``,
    if ``first`` is what cloudpickle exists for; else raise ``first``."""
    if not _value_helps(first):
        raise first
    # If this raises too, its error is the real reason (a lock a closure
    # holds, say), where ``first`` only said "Can't pickle local object".
    return _cloud_dumps(obj, buffer_callback)


def dumps(obj: Any, oob: Outbound | Handles | None = None, sink: Sink | None = None) -> bytes:
    """Pickle ``obj`` so that any worker, under any start method, can load
    it; through ``sink`` if given."""
    if oob is not None:
        return dumps_oob(obj, oob, sink)
    try:
        data = (sink or _dumps)(obj, PROTOCOL)
    except Exception as first:  # noqa: BLE001 - _by_value decides
        return _by_value(obj, first)
    if _refers_to_main(data):
        return _cloud_dumps(obj)
    return data


def dumps_oob(obj: Any, oob: Outbound | Handles, sink: Sink | None = None) -> bytes:
    """``dumps(obj, oob, sink)`` without the dispatch, for ``apply_async``. A
    thread pool's ``oob`` is its object table: ``obj`` then travels by
    reference, unpickled (``_handles``)."""
    if isinstance(oob, Handles):
        return oob.put(obj)
    # Most objects have no large buffer: one pass, with a callback shared by
    # all calls that only counts them (any count, any thread, means "look
    # again" below).
    hits = oob.hits
    try:
        data = (sink or _dumps)(obj, PROTOCOL, buffer_callback=oob.spot)
    except Exception:  # noqa: BLE001 - the careful path says why
        return _dumps_oob_careful(obj, oob)
    if oob.hits == hits and not _refers_to_main(data):
        return data
    return _dumps_oob_careful(obj, oob)


def _dumps_oob_careful(obj: Any, oob: Outbound) -> bytes:
    data, bufs, careful = _careful_parts(obj, oob)
    if bufs:
        ref = oob.ref(data, bufs)
        # No room in shared memory: the buffers travel in band.
        return oob.dumps(obj, None, cloud=careful) if ref is None else _dumps(ref, PROTOCOL)
    return data


def _careful_parts(obj: Any, oob: Outbound) -> tuple[bytes, list[memoryview], bool]:
    """``obj``'s stream without its large buffers, those buffers, and
    whether it took cloudpickle (by value)."""
    # oob.dumps: read-only arrays arrive writable (see Outbound.dumps).
    bufs: list[memoryview] = []
    collect = oob.collector(bufs)
    try:
        data = oob.dumps(obj, collect)
        careful = _refers_to_main(data) and not _inherited_only(obj, oob.inherited)
    except Exception as first:  # _by_value's rule decides below
        if not _value_helps(first):
            raise
        careful = True
    if careful:
        bufs.clear()
        # If this raises, its error is the real reason (see _by_value).
        data = oob.dumps(obj, collect, cloud=True)
    return data, bufs, careful


def detached(obj: Any, oob: Outbound) -> Any:
    """``obj``, or if it has large buffers, a stand-in that pickles as
    ``dumps(obj, oob)`` would, its buffers already copied to shared memory,
    so that ``obj`` can go now. ``obj`` itself if it has none, if it cannot
    be pickled (the caller's ``dumps`` says why), or if shared memory is
    full."""
    hits = oob.hits
    try:
        _dumps(obj, PROTOCOL, buffer_callback=oob.spot)
        if oob.hits == hits:
            return obj
        data, bufs, _ = _careful_parts(obj, oob)
    except BaseException:  # noqa: BLE001 - reported (once more) when the chunk is pickled
        return obj
    ref = oob.ref(data, bufs) if bufs else None
    return obj if ref is None else ref


class _MainNames(_pickle.Pickler):
    """Pickles to nowhere, to learn whether every function and class of
    ``__main__`` an object names is one the workers inherited unchanged."""

    def __init__(self, inherited: dict[str, Any]) -> None:
        super().__init__(io.BytesIO(), PROTOCOL, buffer_callback=_out_of_band)
        self.inherited = inherited
        self.all_inherited = True

    def reducer_override(self, obj: Any) -> Any:
        if getattr(obj, "__module__", None) == "__main__" and isinstance(obj, (types.FunctionType, type)):
            if not (_script_level(obj) and _top_level_is(obj, self.inherited)):
                self.all_inherited = False
        return NotImplemented


def _out_of_band(_: Any) -> None:
    return None  # a buffer's bytes say nothing about names: skip them


def _inherited_only(obj: Any, inherited: dict[str, Any] | None) -> bool:
    """Whether the workers, forked with ``inherited`` (a
    :func:`main_snapshot`), resolve every ``__main__`` reference in plain
    pickle's stream of ``obj`` to the object it names here. Then it travels
    so, as under ``multiprocessing``'s fork: an instance of a script's class
    is an instance of the class the workers' functions see, where a copy of
    the class sent by value would be another class."""
    if inherited is None:
        return False
    names = _MainNames(inherited)
    try:
        names.dump(obj)
    except Exception:  # noqa: BLE001 - by value, then, which says why if it fails too
        return False
    return names.all_inherited


def dumps_chunk(items: list[Any], oob: Outbound | Handles | None = None, sink: Sink | None = None) -> bytes:
    """Pickle a chunk for ``loads_chunk``: packed if it is all plain ints
    or all plain floats, else as ``dumps`` does."""
    packed = pack_values(items)
    return dumps(items, oob, sink) if packed is None else packed


def loads_chunk(data: Any) -> Any:
    """The chunk ``dumps_chunk`` made; ``data`` is bytes or a buffer."""
    return loads(data) if data[0] == _PROTO else unpack_values(data)


def is_packed_chunk(data: Any) -> bool:
    """Whether ``dumps_chunk`` packed this chunk: its items are all plain
    ints or all plain floats."""
    return bool(data[0] != _PROTO)


def dumps_one(obj: Any, oob: Outbound | Handles | None = None) -> bytes:
    """One task's item or result, for ``loads_one``: packed if it is a plain
    number or a short tuple of them, else as ``dumps`` does."""
    packed = pack_one(obj)
    return dumps(obj, oob) if packed is None else packed


def loads_one(data: Any) -> Any:
    """The value ``dumps_one`` (or the worker's native loop) made."""
    return loads(data) if data[0] == _PROTO else unpack_one(data)


def main_snapshot() -> dict[str, Any]:
    """The functions and classes among ``__main__``'s globals now, by weak
    reference: taken as a pool forks the process its workers come from,
    they are what the workers inherit. Only those, and weakly: a copy of all
    the globals kept what they named alive as long as the pool, such as the
    previous pool of a loop at the script's top level, and so every earlier
    one (their engines' descriptors stayed open)."""
    main = sys.modules.get("__main__")
    if main is None:
        return {}
    return {name: weakref.ref(v) for name, v in vars(main).items() if isinstance(v, (types.FunctionType, type))}


def dumps_func(func: Any, inherited: dict[str, Any] | Handles | None = None) -> tuple[bytes, bool]:
    """Pickle a task's callable; also say whether the pickle may be reused
    for later calls with the same object: only if a fresh pickle would be
    equal (a name the workers resolve), or if it is a script's own
    function, which ``multiprocessing`` users expect to be sent once.

    ``inherited``: the :func:`main_snapshot` taken when the workers' process
    was forked, if it was. A script function in it, unchanged since, travels
    by reference as any module function does: the workers have it, with the
    globals it uses (a lock, a connection, a large list) as they were.
    A thread pool's workers share this process: ``inherited`` is then its
    object table, and ``func`` itself travels, by reference.
    """
    if isinstance(inherited, Handles):
        return inherited.put(func), True
    try:
        data = _dumps(func, PROTOCOL)
    except Exception as first:  # noqa: BLE001 - _by_value decides
        return _by_value(func, first), False
    if getattr(type(func), "pickles_prepared", False):
        # A wrapper whose pickle carries its function's, made by this
        # function already: a `__main__` in it is inside those bytes, sent
        # as they were decided, not a reference this pickle makes.
        return data, False
    if data.find(_MAIN) < 0:
        return data, _names_itself(func)
    if inherited is not None and _script_level(func) and _top_level_is(func, inherited):
        return data, True
    try:
        value = _cloud_dumps(func)
    except Exception as exc:
        raise _unpicklable_global(func, exc) from exc
    return value, _script_level(func) and isinstance(func, types.FunctionType) and func.__closure__ is None


def _names_itself(func: Any) -> bool:
    """Whether ``func`` pickles as its name alone, with no state: a
    function, a class, or a builtin that is not bound to an object."""
    if isinstance(func, (types.FunctionType, type)):
        return True
    if isinstance(func, types.BuiltinFunctionType):
        owner = getattr(func, "__self__", None)
        return owner is None or isinstance(owner, types.ModuleType)
    return isinstance(func, (types.MethodDescriptorType, types.WrapperDescriptorType))


def _script_level(func: Any) -> bool:
    """Whether ``func`` is a function or class defined at the top level of
    ``__main__`` (or in a class there), found there by its name now."""
    if not isinstance(func, (types.FunctionType, type)) or getattr(func, "__module__", None) != "__main__":
        return False
    qualname = getattr(func, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname:
        return False
    found: Any = sys.modules.get("__main__")
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is func


def _top_level_is(func: Any, inherited: dict[str, Any]) -> bool:
    """Whether the top-level name ``func`` is found under is bound to the
    same object now as in ``inherited``."""
    top = func.__qualname__.split(".")[0]
    then = inherited.get(top)
    now = getattr(sys.modules.get("__main__"), top, None)
    return then is not None and now is not None and then() is now


def _unpicklable_global(func: Any, exc: Exception) -> Exception:
    """``exc``, raised pickling script function ``func`` by value, restated
    to name the globals that could not be pickled and what to do."""
    found = _culprits(func, set())
    if not found:
        return exc
    said = []
    for path, value, why in found:
        via = "".join(f", which uses {name!r}" for name in path[1:])
        said.append(f"{path[0]!r}{via} ({type(value).__module__}.{type(value).__qualname__}: {why})")
    what = "the global " + said[0] if len(said) == 1 else "the globals " + ", ".join(said)
    names = " and ".join(repr(path[-1]) for path, _, _ in found)
    message = (
        f"cannot send {func.__qualname__!r} to the workers: pickled by value (it is defined in the script, "
        f"and the workers did not fork from it), it takes {what} along, which cannot be pickled. "
        f"Create {names} in the pool's initializer instead, or define {func.__qualname__!r} in a module "
        "the workers can import."
    )
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - an exception type with other arguments
        return TypeError(message)


def _culprits(func: Any, seen: set[int]) -> list[tuple[list[str], Any, str]]:
    """The globals ``func`` uses that cannot be pickled, each as ``(path,
    value, why)``: the path runs through the script functions that use it."""
    code = getattr(func, "__code__", None)
    if code is None or id(func) in seen:
        return []
    seen.add(id(func))
    names: set[str] = set()
    todo = [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    scope = func.__globals__
    found: list[tuple[list[str], Any, str]] = []
    for name in sorted(n for n in names if n in scope):
        value = scope[name]
        try:
            _cloud_dumps(value)
        except Exception as exc:  # noqa: BLE001 - this one fails
            deeper = _culprits(value, seen) if _script_level(value) else []
            if deeper:
                found.extend(([name, *path], v, why) for path, v, why in deeper)
            else:
                found.append(([name], value, str(exc)))
    return found


def dumps_many(items: list[Any], oob: Outbound | Handles | None = None) -> list[bytes]:
    """``[dumps_one(x) for x in items]``: all packed if every item packs,
    else the C pickler called straight from a comprehension, with the
    careful path only for items that need it.
    Raises what ``dumps`` raises for the first item that cannot be pickled,
    with the pickles of the items before it as its ``shoal_done`` (they may
    hold shared memory, so they are used, not made again)."""
    packed = pack_each(items)
    if packed is not None:
        return packed
    if isinstance(oob, Handles):
        put = oob.put
        return [put(x) for x in items]
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
    if _refers_to_main(b"".join(out)):
        inherited = None if oob is None else oob.inherited
        return [
            dumps(x) if _refers_to_main(d) and not _inherited_only(x, inherited) else d
            for x, d in zip(items, out, strict=True)
        ]
    return out
