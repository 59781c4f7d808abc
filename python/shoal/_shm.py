"""Where large buffers travel: out of band, through shared memory.

Pickle protocol 5 hands every buffer an object exposes (numpy arrays, among
others) to a callback instead of copying it into the stream. A buffer of
``THRESHOLD`` bytes or more is copied once into a block of an *arena*, a
memfd the pool created, and the stream carries only the block's position.
The receiver loads the object straight from the block, with no copy: a numpy
array that arrives this way lives in the shared pages. The block is free
again once the last object using it is gone, which the receiver notes in
the block's header; the writer reuses free blocks, so pages already faulted
in are written again rather than fresh ones (a fresh page costs ~1 ms per
MiB on this kind of VM, a copy into a resident one ~0.05 ms).

Arenas: the pool owns one for arguments, which only the parent writes, and
one per worker slot for results, which the worker holding its ``flock``
writes. All are created by the parent, so a result outlives the worker that
wrote it, and a memfd leaves nothing behind in ``/dev/shm``: its pages go
when the last process holding it does. A worker reaches an arena it did not
inherit through ``/proc/<pool pid>/fd``.

A worker frees an argument's block only after the result of its chunk has
been written: a chunk that was loaded but whose result never left can be
sent again after a crash, and must find its buffers intact.

Where an arena is full, a buffer travels in band, as it would without
shoal, so memory stays bounded and nothing fails.
"""

from __future__ import annotations

import _pickle
import _thread  # not threading: a worker imports this module at start-up
import io
import os
import struct
import sys
import time
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable
    from typing import Any

# Buffers smaller than this stay in the pickle stream: copying them is
# cheaper than a block's bookkeeping.
THRESHOLD = 64 << 10
# Virtual size of each arena; pages exist only once written. Past it, buffers
# travel in band.
CAPACITY = 1 << 30
# The parent waits (briefly) for workers to free argument blocks rather than
# fault in fresh pages once this much is in flight.
SOFT_LIMIT = 32 << 20
WAIT_FOR_FREE = 0.02

# Arena header: magic, end of the last block. Block header: state byte, then
# capacity at +8; the payload starts HEADER bytes into the block.
_MAGIC = 0x5348_4F41_4C41_524E  # "SHOALARN"
_ARENA = struct.Struct("<QQ")
_CAP = struct.Struct("<Q")
HEADER = 64
FREE, BUSY = 0, 1
_GRAIN = 64 << 10

# Mappings of the arenas this process created, by inode, for as long as
# their pool or an object loaded from them lives. A forked worker inherits
# them (the pages stay shared).
_own: weakref.WeakValueDictionary[int, mmap.mmap] = weakref.WeakValueDictionary()
# Arenas a worker opened, by inode.
_opened: dict[int, mmap.mmap] = {}
# In a worker: arenas it may open, by inode: (pool pid, fd in the pool).
_peers: dict[int, tuple[int, int]] = {}
# In a worker: blocks whose last user is gone, freed after the next write of
# results (see the module docstring).
_deferred: list[tuple[mmap.mmap, int]] = []
_defer = False
_c_char: Any = None


def _round(n: int) -> int:
    return (n + _GRAIN - 1) // _GRAIN * _GRAIN


def _map(fd: int) -> mmap.mmap:
    """The whole of memfd ``fd``, shared; its size is its creator's choice."""
    import mmap

    return mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


class Arena:
    """One memfd carved into blocks that one process at a time writes.

    Blocks are never split or merged: buffers of a workload tend to repeat
    their sizes, and the smallest free block that fits is reused.
    """

    def __init__(self, fd: int, mm: mmap.mmap, soft_limit: int | None = None) -> None:
        self.fd = fd
        self.mm = mm
        self.capacity = len(mm)
        self.ino = os.fstat(fd).st_ino
        self.soft_limit = soft_limit
        # Guards the blocks, and the fd against close(): a thread that uses
        # the fd counts itself in `users`, and the last one out of a closed
        # arena closes it. A number closed twice could be another file's by
        # then (pool.terminate() from a thread racing join()).
        self.lock = _thread.allocate_lock()
        self.users = 0
        self.closed = False
        magic, end = _ARENA.unpack_from(mm, 0)
        if magic != _MAGIC:
            end = HEADER
            _ARENA.pack_into(mm, 0, _MAGIC, end)
        # Take over the blocks a previous writer left (a replaced worker's).
        self.blocks: list[tuple[int, int]] = []
        off = HEADER
        while off < end:
            (cap,) = _CAP.unpack_from(mm, off + 8)
            self.blocks.append((off, cap))
            off += HEADER + cap
        self.end = end
        self.fresh = end

    @classmethod
    def create(cls, name: str, soft_limit: int | None = None) -> Arena:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, CAPACITY)
            mm = _map(fd)
        except BaseException:
            os.close(fd)
            raise
        arena = cls(fd, mm, soft_limit)
        _own[arena.ino] = mm
        return arena

    def _find(self, n: int) -> tuple[int, int]:
        """The smallest free block of at least ``n`` bytes (-1 if none), and
        the bytes held by busy blocks."""
        mm, best, best_cap, busy = self.mm, -1, 0, 0
        for off, cap in self.blocks:
            if mm[off] != FREE:
                busy += cap
            elif cap >= n and (best < 0 or cap < best_cap):
                best, best_cap = off, cap
        return best, busy

    def alloc(self, n: int, mine: int = 0) -> int:
        """A block for ``n`` bytes, marked busy; -1 if the arena is full.
        ``mine``: bytes the caller already holds busy for the same message,
        which no one will free while it waits. A block past ``self.fresh``
        has never been written."""
        deadline = None
        while True:
            with self.lock:
                off, busy = self._find(n)
                if off >= 0:
                    self.mm[off] = BUSY
                    return off
                fits = self.end + HEADER + _round(n) <= self.capacity
                if not fits or self.soft_limit is None or busy - mine < self.soft_limit:
                    return self._grow(n) if fits else -1
            # Blocks in flight elsewhere will come back soon; reusing them
            # beats faulting in fresh pages. Wait briefly, then grow.
            now = time.monotonic()
            if deadline is None:
                deadline = now + WAIT_FOR_FREE
            elif now >= deadline:
                with self.lock:
                    if self.end + HEADER + _round(n) <= self.capacity:
                        return self._grow(n)
                    return -1
            time.sleep(0.0002)

    def _grow(self, n: int) -> int:
        off, cap = self.end, _round(n)
        self.fresh = off
        _CAP.pack_into(self.mm, off + 8, cap)
        self.mm[off] = BUSY
        self.blocks.append((off, cap))
        self.end = off + HEADER + cap
        _ARENA.pack_into(self.mm, 0, _MAGIC, self.end)
        return off

    def put(self, bufs: list[memoryview]) -> list[tuple[int, int]] | None:
        """Copy ``bufs`` into blocks; their (offset, length), or None (and
        nothing held) if the arena is full."""
        out: list[tuple[int, int]] = []
        mine = 0
        fd = self._borrow()
        try:
            for b in bufs:
                n = b.nbytes
                off = self.alloc(n, mine)
                if off < 0:
                    for o, _ in out:
                        self.mm[o] = FREE
                    return None
                if off >= self.fresh and fd >= 0:
                    # Pages never written: the kernel fills them in a write()
                    # at twice the speed of page faults.
                    os.pwrite(fd, b, off + HEADER)
                else:
                    self.mm[off + HEADER : off + HEADER + n] = b
                out.append((off, n))
                mine += n
        finally:
            if fd >= 0:
                self._give_back()
        return out

    def _borrow(self) -> int:
        """The fd, held open until `_give_back`; -1 once closed."""
        with self.lock:
            if self.closed:
                return -1
            self.users += 1
            return self.fd

    def _give_back(self) -> None:
        with self.lock:
            self.users -= 1
            fd = self.fd if self.closed and self.users == 0 else -1
            if fd >= 0:
                self.fd = -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Close the fd, once, whichever threads call this at once; the
        mapping goes with the last object using it."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            fd = self.fd if self.users == 0 else -1
            if fd >= 0:
                self.fd = -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class Outbound:
    """The pickling side: which buffers go out of band, and the stream that
    names their blocks. ``arena`` is an :class:`Arena` or a callable that
    returns one (or None) when first needed."""

    def __init__(self, arena: Arena | Callable[[], Arena | None]) -> None:
        # The factory's answer replaces it on first use, and may be None.
        self._arena: Arena | Callable[[], Arena | None] | None = arena
        # Large buffers `spot` has seen, ever; see `spot`.
        self.hits = 0
        self._hits_lock = _thread.allocate_lock()  # never lose a count: it only grows
        self.spot = self._spot

    def arena(self) -> Arena | None:
        a = self._arena
        if a is None or isinstance(a, Arena):
            return a
        self._arena = a = a()
        return a

    def _spot(self, pb: Any) -> bool:
        """A ``buffer_callback`` for a first pass that only finds out whether
        an object has large or read-only buffers: it counts them. The pass's
        stream is kept only if the count did not move."""
        try:
            m = pb.raw()
            if m.nbytes < THRESHOLD and not m.readonly:
                return True
        except BufferError:
            return True
        with self._hits_lock:
            self.hits += 1
        return m.nbytes < THRESHOLD

    @staticmethod
    def first_pass(flags: list[Any]) -> Callable[[Any], bool]:
        """A ``buffer_callback`` for the worker's first try at a result
        (crates/shoal-py/src/worker_loop.rs): it lists in ``flags`` the
        buffers that send the result down the careful path, large ones
        (left out of the stream) and read-only ones."""

        def spot(pb: Any) -> bool:
            try:
                m = pb.raw()
            except BufferError:
                return True
            if m.nbytes >= THRESHOLD:
                flags.append(m)
                return False
            if m.readonly:
                flags.append(m)
            return True

        return spot

    @staticmethod
    def dumps(obj: Any, buffer_callback: Callable[[Any], bool] | None, cloud: bool = False) -> bytes:
        """Pickle ``obj`` (by value, with cloudpickle, if ``cloud``) so that
        the read-only numpy arrays in it arrive writable.

        numpy pickles an array's data as a ``PickleBuffer`` over its memory,
        and pickle marks a read-only one so: the other side would get a
        read-only array, where the standard library's pickling (protocol 4)
        gives a writable copy, and in-place code such as ``a -= a.mean()``
        would fail. Each side's array is its own (a copy in the stream or a
        private block of shared memory), so it may as well be writable."""
        if "numpy" not in sys.modules:
            if not cloud:
                return _pickle.dumps(obj, 5, buffer_callback=buffer_callback)
            import cloudpickle

            return cloudpickle.dumps(obj, 5, buffer_callback=buffer_callback)
        with io.BytesIO() as f:
            _writable_pickler(cloud)(f, 5, buffer_callback=buffer_callback).dump(obj)
            return f.getvalue()

    @staticmethod
    def collector(bufs: list[memoryview]) -> Callable[[Any], bool]:
        """A ``buffer_callback`` that keeps large buffers in ``bufs`` and
        leaves the rest in band (a true return)."""

        def collect(pb: Any) -> bool:
            try:
                m = pb.raw()
            except BufferError:  # not contiguous: pickle copies it in band
                return True
            if m.nbytes < THRESHOLD:
                return True
            bufs.append(m)
            return False

        return collect

    def wrap(self, data: bytes, bufs: list[memoryview], dumps: Callable[..., bytes]) -> bytes | None:
        """The stream that loads ``data`` with ``bufs`` from shared memory,
        or None if there is no room (the caller pickles in band)."""
        arena = self.arena()
        if arena is None:
            return None
        blocks = arena.put(bufs)
        if blocks is None:
            return None
        return dumps(_Ref(arena.ino, blocks, data), 5)


class _Alias:
    """A read-only array's memory, presented as writable to the pickler,
    which only reads it: numpy then pickles it as a writable buffer. Holds
    the array, so the memory outlives every view of it the pickler keeps."""

    __slots__ = ("__array_interface__", "array")

    def __init__(self, array: Any) -> None:
        face = dict(array.__array_interface__)
        face["data"] = (face["data"][0], False)
        self.__array_interface__ = face
        self.array = array


def _writable_reduce(obj: Any) -> Any:
    """``reducer_override``: a read-only array that numpy would pickle as a
    read-only buffer is pickled as a writable one over the same memory."""
    np = sys.modules["numpy"]
    if type(obj) is not np.ndarray:
        return NotImplemented
    flags = obj.flags
    # numpy pickles only these as buffers; it copies the rest (and ndarray
    # subclasses, such as memmap) into the stream, and they arrive writable.
    if flags.writeable or not (flags.c_contiguous or flags.f_contiguous) or obj.dtype.hasobject or not obj.itemsize:
        return NotImplemented
    return np.asarray(_Alias(obj)).__reduce_ex__(5)


_picklers: dict[bool, Any] = {}


def _writable_pickler(cloud: bool) -> Any:
    """The pickler class ``Outbound.dumps`` uses: the C one or cloudpickle's,
    with read-only arrays reduced by ``_writable_reduce``."""
    cls = _picklers.get(cloud)
    if cls is not None:
        return cls
    if cloud:
        import cloudpickle

        class Cloud(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                out = _writable_reduce(obj)
                return super().reducer_override(obj) if out is NotImplemented else out

        cls = Cloud
    else:

        class Plain(_pickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                return _writable_reduce(obj)

        cls = Plain
    _picklers[cloud] = cls
    return cls


class _Ref:
    """Pickles as a call to ``_load``: the receiver needs nothing but
    ``pickle.loads`` to rebuild the object."""

    __slots__ = ("args",)

    def __init__(self, ino: int, blocks: list[tuple[int, int]], data: bytes) -> None:
        self.args = (ino, blocks, data)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _load, self.args


def _view(ino: int) -> mmap.mmap:
    mm = _own.get(ino)
    if mm is None:
        mm = _opened.get(ino)
    if mm is not None:
        return mm
    peer = _peers.get(ino)
    if peer is None:
        raise RuntimeError(f"shoal: a buffer names shared memory (inode {ino}) this process cannot reach")
    fd = _open_peer(*peer)
    try:
        mm = _opened[ino] = _map(fd)
    finally:
        os.close(fd)
    return mm


def _open_peer(pid: int, fd: int) -> int:
    """A new descriptor for the pool's memfd ``fd``: its own open file, so
    a ``flock`` on it is this process's alone."""
    try:
        return os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeError(
            f"shoal: cannot open the pool's shared memory through /proc/{pid}/fd/{fd} ({exc}); "
            "large buffers need it. Is /proc mounted, and is the parent process dumpable?"
        ) from exc


def _load(ino: int, blocks: list[tuple[int, int]], data: bytes) -> Any:
    """Rebuild an object whose large buffers are in shared memory, in place."""
    global _c_char
    from _pickle import loads

    if _c_char is None:
        import ctypes

        _c_char = ctypes.c_char
    mm = _view(ino)
    bufs = []
    for off, n in blocks:
        # A ctypes array over the mapping is an object whose death we can
        # observe; a memoryview slice is not.
        owner = (_c_char * n).from_buffer(mm, off + HEADER)
        weakref.finalize(owner, _free, mm, off).atexit = False
        bufs.append(memoryview(owner).cast("B"))
    return loads(data, buffers=bufs)


def _free(mm: mmap.mmap, off: int) -> None:
    if _defer:
        _deferred.append((mm, off))
    else:
        mm[off] = FREE


def free_deferred() -> None:
    """Free the blocks whose last user is gone (a worker, after writing results)."""
    for mm, off in _deferred:
        mm[off] = FREE
    _deferred.clear()


class PoolBuffers:
    """The parent's arenas for one pool: arguments, and results per worker slot."""

    def __init__(self, slots: int) -> None:
        self.args = Arena.create("shoal-args", SOFT_LIMIT)
        self.results = [Arena.create(f"shoal-results-{i}") for i in range(slots)]
        self.outbound = Outbound(self.args)

    def settings(self) -> dict[str, Any]:
        """What a worker needs to reach the arenas (sent in its Init)."""
        return {
            "pid": os.getpid(),
            "args": (self.args.fd, self.args.ino),
            "results": [(a.fd, a.ino) for a in self.results],
        }

    def close(self) -> None:
        """Close the fds once no worker will open them again."""
        for a in (self.args, *self.results):
            a.close()


def attach(settings: dict[str, Any]) -> Outbound:
    """In a worker: learn the pool's arenas; return the writer for results,
    which claims a result arena the first time a large buffer needs one."""
    global _defer
    _defer = True
    pid = settings["pid"]
    fd, ino = settings["args"]
    _peers[ino] = (pid, fd)
    slots = settings["results"]
    for fd, ino in slots:
        _peers[ino] = (pid, fd)

    def claim() -> Arena | None:
        import fcntl

        for fd, ino in slots:
            own = _open_peer(pid, fd)
            try:
                fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(own)
                continue
            # Kept open: closing it would drop the lock.
            return Arena(own, _view(ino))
        return None  # every slot taken: results travel in band

    return Outbound(claim)
