"""Objects passed by reference, for workers that are threads of this process.

A thread pool's tasks, functions, results and exceptions are not pickled:
each object goes into a table here, and what travels through the engine in
its place is a tiny pickle that, loaded, takes the object back out. So the
route from submit to result is the one every pool uses, the job layer
pickles and loads with the same calls, and only the data differs: plain
``pickle.loads`` turns such a reference into the very object that was put
in, identity, locks, open files and all.

A reference is the pickle of the call ``_take(key)``, ``_take`` being the
table's own ``dict.pop``, named by a ``copyreg`` extension code, so loading
one costs a dict lookup and a pop, in C (naming it by module and name would
import the module by name on every load, several times slower). A reference
is loaded once: loading it takes the object out (``pin`` makes one that every
worker loads: the pool's initializer). Each pool's :class:`Handles` has keys
of its own; what it put in and nobody took (tasks of a job cancelled before
they ran, results nobody read) is let go when it is collected, and a pool's
engine keeps it as long as any result may still need it.
"""

from __future__ import annotations

import copyreg
import itertools
import struct
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Every object in flight, by key: a table's id in the high bits, a count in
# the low ones.
_objects: dict[int, Any] = {}
_take = _objects.pop
_peek = _objects.__getitem__
_KEY_BITS = 40
_table_ids = itertools.count(1)

# The extension codes of the two loaders: fixed, in the range PEP 307 leaves
# unassigned, chosen to be unlikely to meet another library's.
_TAKE_CODE = 0x5C0A1
_PEEK_CODE = 0x5C0A2
for _code, _name in ((_TAKE_CODE, "_take"), (_PEEK_CODE, "_peek")):
    if copyreg._extension_registry.get((__name__, _name)) != _code:  # type: ignore[attr-defined]
        copyreg.add_extension(__name__, _name, _code)


def _prefix(code: int) -> bytes:
    # PROTO 4, EXT4 code, then the key as LONG1 of 8 bytes.
    return b"\x80\x04\x84" + struct.pack("<i", code) + b"\x8a\x08"


# TUPLE1 REDUCE STOP
_SUFFIX = b"\x85R."
_TAKE = _prefix(_TAKE_CODE)
_PEEK = _prefix(_PEEK_CODE)


def is_reference(data: bytes) -> bool:
    """Whether ``data`` is a reference made by a table in this process."""
    return data.startswith(_TAKE)


def _forget(table: int) -> None:
    """Drop every object ``table`` put in that nobody took."""
    for key in [k for k in _objects if k >> _KEY_BITS == table]:
        _objects.pop(key, None)


class Handles:
    """One thread pool's objects in flight, and the references to them.

    It stands where a process pool's out-of-band buffer writer stands
    (``_shm.Outbound``): the pickling helpers in ``_pickling`` see
    ``by_reference`` and call :meth:`put` instead of pickling.
    """

    __slots__ = ("__weakref__", "_keys", "id", "tracebacks")

    by_reference = True

    def __init__(self) -> None:
        # Whether a task's exception also carries its traceback as text, for
        # a RemoteTraceback cause (WorkerPool's workers ask, as MPIRE gives
        # one); a ThreadPool's goes as itself, as the stdlib's does.
        self.tracebacks = False
        self.id = next(_table_ids) % (1 << (63 - _KEY_BITS))
        self._keys = itertools.count(self.id << _KEY_BITS)
        weakref.finalize(self, _forget, self.id)

    def put(self, obj: Any) -> bytes:
        """A reference that loads, once, as ``obj``."""
        key = next(self._keys)  # atomic: count() is C code
        _objects[key] = obj
        return _TAKE + key.to_bytes(8, "little") + _SUFFIX

    def dumps(self, obj: Any, protocol: int | None = None, buffer_callback: Any = None) -> bytes:
        """:meth:`put` with ``pickle.dumps``'s signature, for the worker loop."""
        return self.put(obj)

    def pin(self, obj: Any) -> bytes:
        """A reference that loads as ``obj`` as often as it is loaded, for
        as long as this table lives."""
        key = next(self._keys)
        _objects[key] = obj
        return _PEEK + key.to_bytes(8, "little") + _SUFFIX

    def clear(self) -> None:
        """Let go of every object this table put in that nobody took."""
        _forget(self.id)
