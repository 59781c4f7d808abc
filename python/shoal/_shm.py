"""Where large buffers travel: out of band, through shared memory.

Pickle protocol 5 hands every buffer an object exposes (numpy arrays, among
others) to a callback instead of copying it into the stream. A buffer of
``THRESHOLD`` bytes or more is copied once into a block of an *arena*, a
memfd the pool created, and the stream carries only the block's position.
The receiver maps that block, and only that block, and loads the object
straight from it, with no copy: a numpy array that arrives this way lives in
the shared pages. The block is free again once the last object using it is
gone, which the receiver notes in the arena's table of block states.

Arenas: the pool owns one for arguments, which only the parent writes, and
one per worker slot for results, which the worker holding its ``flock``
writes. All are created by the parent, so a result outlives the worker that
wrote it, and a memfd leaves nothing behind in ``/dev/shm``: its pages go
when the last descriptor or mapping of it does. A worker reopens an arena
through ``/proc/self/fd`` when it inherited it (fork), else through
``/proc/<pool pid>/fd``, which needs a dumpable parent: when that is not
possible, large buffers travel in band.

Layout of an arena (a sparse file of ``CAPACITY`` bytes): a header, a state
byte per block, each block's capacity, then the blocks, each a multiple of
64 KiB, so that a block can be mapped alone. Blocks are never split or
merged: buffers of a workload tend to repeat their sizes.

Pages and address space. The first ``hot`` bytes of blocks (``HOT_ARGS``,
``HOT_RESULTS``) keep their pages when freed, and their mappings stay for
reuse: a fresh page costs ~0.5 ms per MiB here, a copy into a resident one
~0.03. Freed blocks beyond them give their pages back at once, and when the
pool is released every free block does. So a live pool holds at most its hot
bytes beyond what is in use, and an array kept after its pool is gone pins
its own block and nothing else (no descriptor, no mapping but its own). The
writer maps only the header and its hot bytes, copies into hot blocks it has
filled before, and writes other blocks (and a hot block the first time, its
pages not there yet) with ``pwrite``; a reader maps each block it loads.
Nothing maps a whole arena, so the address space used is what is in use
plus the hot bytes, which are made smaller to fit an address-space limit
(``ulimit -v``).

A worker frees an argument's block only after the result of its chunk has
been written: a chunk that was loaded but whose result never left can be
sent again after a crash, and must find its buffers intact. It writes each
large result of a chunk to its block as the result is made (``_worker``'s
``_run_chunk``), and sends the chunk's results together. Until they are
handed to its outbox, such blocks are *staged*, not busy: a worker that dies
first (a crash, a timeout) never sends them, and the worker that takes its
arena over frees them.

Where an arena is full, a buffer travels in band, as it would without
shoal, so memory stays bounded and nothing fails.
"""

from __future__ import annotations

import _pickle
import _thread  # not threading: a worker imports this module at start-up
import io
import os
import stat
import struct
import sys
import time
import weakref

from shoal import _shoal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# Buffers smaller than this stay in the pickle stream: copying them is
# cheaper than a block's bookkeeping.
THRESHOLD = 64 << 10
# Size of each arena: a sparse file, so it costs neither memory nor address
# space until written. Past it, buffers travel in band.
CAPACITY = 1 << 30
# The parent waits (briefly) for workers to free argument blocks rather than
# fault in fresh pages once this much is in flight.
SOFT_LIMIT = 32 << 20
WAIT_FOR_FREE = 0.02
# Bytes of blocks, from the start of an arena's blocks, whose pages stay
# when freed (see the module docstring).
HOT_ARGS = 32 << 20
HOT_RESULTS = 16 << 20

_MAGIC = 0x5348_4F41_4C41_524E  # "SHOALARN"
_GRAIN = 64 << 10  # block sizes are multiples: every block starts on a page
_MAX_BLOCKS = (1 << 30) // _GRAIN
# Header: magic, blocks made, end of the last block, hot bytes.
_HEAD = struct.Struct("<QQQQ")
_STATES = 4096  # a state byte per block
_CAPS = _STATES + _MAX_BLOCKS  # a block's capacity, 8 bytes each
_CAP = struct.Struct("<Q")
PAYLOAD = (_CAPS + 8 * _MAX_BLOCKS + _GRAIN - 1) // _GRAIN * _GRAIN  # the first block
FREE, BUSY, STAGED = 0, 1, 2

# Arenas this process created or opened, by inode. A forked worker inherits
# its parent's objects here; it opens its own (see `_arena`).
_arenas: weakref.WeakValueDictionary[int, Arena] = weakref.WeakValueDictionary()
# Arenas a worker opened: kept for its life (the flock of its result arena
# lives with the descriptor).
_opened: dict[int, Arena] = {}
# In a worker: arenas it may open, by inode: (pool pid, fd in the pool).
_peers: dict[int, tuple[int, int]] = {}
# In a worker: blocks whose last user is gone, freed after the next write of
# results (see the module docstring).
_deferred: list[tuple[Arena, int, int, int, int, bool]] = []
_defer = False
# In a worker: staged blocks of its result arena, by index, marked busy by
# `commit` (see the module docstring).
_staged: list[tuple[Arena, int]] = []


def _round(n: int) -> int:
    return (n + _GRAIN - 1) // _GRAIN * _GRAIN


def _address_space_error(exc: OSError, what: str) -> MemoryError:
    """``exc`` (from mmap) as the error a user can act on."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    where = (
        f"the address-space limit (ulimit -v, RLIMIT_AS) is {limit >> 20} MiB; raise it"
        if limit != resource.RLIM_INFINITY
        else "the system is out of memory or of mappings (vm.max_map_count)"
    )
    return MemoryError(f"shoal: cannot map {what} of shared memory ({exc}): {where}, or send smaller buffers")


class Arena:
    """This process's access to one arena (see the module docstring).

    The writer (``writer=True``; one process per arena) allocates blocks;
    readers map the blocks they load and free them. The descriptor is this
    object's own; ``lock`` guards the blocks, the mappings kept for reuse,
    and the descriptor against ``close``: a thread that uses the descriptor
    counts itself in ``users``, and the last one out of a closed arena
    closes it (a number closed twice could be another file's by then).
    """

    def __init__(self, fd: int, writer: bool = False, soft_limit: int | None = None) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.ino = os.fstat(fd).st_ino
        self.capacity = os.fstat(fd).st_size
        self.soft_limit = soft_limit
        # Reentrant: a block's finalizer may run (from the garbage
        # collector) in a thread that holds it.
        self.lock = _thread.RLock()
        self.users = 0
        # The caller closes fd if this constructor fails: until its end,
        # close() leaves it alone.
        self.closed = True
        # False once the pool is released: freed blocks give their pages back.
        self.live = True
        magic, count, _, hot = _HEAD.unpack(os.pread(fd, _HEAD.size, 0))
        if magic != _MAGIC:
            raise RuntimeError(f"shoal: shared memory (inode {self.ino}) is not a shoal arena")
        self.hot_end = PAYLOAD + hot
        self.writer = writer
        # The writer maps the header, the tables and the hot blocks; a
        # reader, the header and the states.
        self._len = self.hot_end if writer else _CAPS
        self._addr = _shoal.mmap_shared(fd, self._len, 0)
        # Span is a buffer, which type checkers see only from 3.12 on.
        self.view = memoryview(_shoal.Span(self._addr, self._len))  # type: ignore[arg-type]
        # Free hot blocks this process mapped when it loaded them, kept
        # mapped for the next load: offset -> (address, capacity).
        self.idle: dict[int, tuple[int, int]] = {}
        # Blocks this process has mapped for objects still alive.
        self.loaded = 0
        # The writer's blocks, (offset, capacity), by index: those a
        # previous writer made are taken over (a replaced worker's).
        self.blocks: list[tuple[int, int]] = []
        # Hot blocks this writer has filled: their pages stay while the pool
        # lives (those a previous writer made may never have been written).
        self.resident: set[int] = set()
        self._end = PAYLOAD
        # A worker's result arena stages its blocks (see `put`); set by
        # `attach`.
        self.stages = False
        if writer:
            for i in range(count):
                (cap,) = _CAP.unpack_from(self.view, _CAPS + 8 * i)
                self.blocks.append((self._end, cap))
                self._end += cap
            self._free_staged()
        self.closed = False

    @classmethod
    def create(cls, name: str, hot: int, writer: bool = False, soft_limit: int | None = None) -> Arena:
        """A new arena, whose first ``hot`` bytes of blocks keep their pages."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, CAPACITY)
            hot = max(0, min(hot, CAPACITY - PAYLOAD)) // _GRAIN * _GRAIN
            os.pwrite(fd, _HEAD.pack(_MAGIC, 0, PAYLOAD, hot), 0)
            arena = cls(fd, writer, soft_limit)
        except BaseException:
            os.close(fd)
            raise
        _arenas[arena.ino] = arena
        return arena

    @property
    def end(self) -> int:
        """Where the arena's last block ends."""
        return int(_HEAD.unpack_from(self.view, 0)[2])

    def busy(self) -> list[int]:
        """Indices of the blocks in use."""
        count = _HEAD.unpack_from(self.view, 0)[1]
        states = bytes(self.view[_STATES : _STATES + count])
        return [i for i, s in enumerate(states) if s != FREE]

    # -- the writer -----------------------------------------------------------
    def _free_staged(self) -> None:
        """Free the blocks a previous writer staged: it died before it sent
        the results in them, so no reader has them (the writer's flock says
        it is gone). Their pages go unless they are hot."""
        states = bytes(self.view[_STATES : _STATES + len(self.blocks)])
        for i, (off, cap) in enumerate(self.blocks):
            if states[i] == STAGED:
                if off + cap > self.hot_end:
                    _shoal.punch_hole(self.fd, off, cap)
                self.view[_STATES + i] = FREE

    def _find(self, n: int) -> tuple[int, int]:
        """The free block to use for ``n`` bytes (-1 if none): a hot one if
        any fits (its pages are there), else the smallest; and the bytes
        held by busy blocks."""
        states = bytes(self.view[_STATES : _STATES + len(self.blocks)])
        best, best_key, busy = -1, (True, 0), 0
        for i, (off, cap) in enumerate(self.blocks):
            if states[i] != FREE:
                busy += cap
            elif cap >= n:
                key = (off + cap > self.hot_end, cap)
                if best < 0 or key < best_key:
                    best, best_key = i, key
        return best, busy

    def alloc(self, n: int, mine: int = 0, state: int = BUSY) -> int:
        """The index of a block for ``n`` bytes, marked ``state``; -1 if
        the arena is full or released. ``mine``: bytes the caller already
        holds busy for the same message, which no one will free while it
        waits."""
        deadline = None
        while True:
            with self.lock:
                if not self.live:
                    return -1
                i, busy = self._find(n)
                if i >= 0:
                    self.view[_STATES + i] = state
                    return i
                fits = self._fits(n)
                if not fits or self.soft_limit is None or busy - mine < self.soft_limit:
                    return self._grow(n, state) if fits else -1
            # Blocks in flight elsewhere will come back soon; reusing them
            # beats faulting in fresh pages. Wait briefly, then grow.
            now = time.monotonic()
            if deadline is None:
                deadline = now + WAIT_FOR_FREE
            elif now >= deadline:
                with self.lock:
                    return self._grow(n, state) if self.live and self._fits(n) else -1
            time.sleep(0.0002)

    def _fits(self, n: int) -> bool:
        return self._end + _round(n) <= self.capacity and len(self.blocks) < _MAX_BLOCKS

    def _grow(self, n: int, state: int) -> int:
        i, off, cap = len(self.blocks), self._end, _round(n)
        # The capacity first: a writer that takes over reads what count says.
        _CAP.pack_into(self.view, _CAPS + 8 * i, cap)
        self.view[_STATES + i] = state
        self.blocks.append((off, cap))
        self._end = off + cap
        _HEAD.pack_into(self.view, 0, _MAGIC, i + 1, self._end, self.hot_end - PAYLOAD)
        return i

    def put(self, bufs: list[memoryview]) -> list[tuple[int, int, int, int]] | None:
        """Copy ``bufs`` into blocks; their (index, offset, capacity,
        length), or None (and nothing held) if the arena is full. In a
        worker's result arena the blocks are staged until `commit`."""
        out: list[tuple[int, int, int, int]] = []
        fd = self._borrow()
        if fd < 0:
            return None
        state = STAGED if self.stages else BUSY
        try:
            mine = 0
            for b in bufs:
                n = b.nbytes
                i = self.alloc(n, mine, state)
                if i < 0:
                    for j, *_ in out:
                        self.view[_STATES + j] = FREE
                    return None
                off, cap = self.blocks[i]
                if i in self.resident:
                    self.view[off : off + n] = b
                else:
                    # Pages never written, or given back: the kernel fills
                    # them in a write() at twice the speed of page faults.
                    done = 0
                    while done < n:
                        done += os.pwrite(fd, b[done:], off + done)
                    if off + cap <= self.hot_end:
                        self.resident.add(i)
                out.append((i, off, cap, n))
                mine += n
        finally:
            self._give_back()
        if self.stages:
            _staged.extend((self, i) for i, *_ in out)
        return out

    # -- readers --------------------------------------------------------------
    def load(self, i: int, off: int, cap: int, n: int) -> Any:
        """An object exposing block ``i``'s first ``n`` bytes, in place; the
        block is freed when the object dies. (A copy, and the block freed
        now, if the block cannot be mapped.)"""
        with self.lock:
            addr = self.idle.pop(off, (0, 0))[0]
        try:
            if not addr:
                fd = self._borrow()
                if fd < 0:
                    raise RuntimeError("shoal: a buffer names shared memory that was closed before it was read")
                try:
                    try:
                        addr = _shoal.mmap_shared(fd, cap, off)
                    except OSError as exc:
                        # No mapping to be had (an address-space limit, or
                        # vm.max_map_count mappings): a private copy.
                        copy = self._copy(fd, off, n, exc)
                        self.release(i, off, cap, 0, counted=False)
                        return copy
                finally:
                    self._give_back()
            owner = _shoal.Span(addr, n)
        except BaseException:
            # The object will not be made: the block is free all the same.
            self.release(i, off, cap, addr, counted=False)
            raise
        with self.lock:
            self.loaded += 1
        weakref.finalize(owner, self.release, i, off, cap, addr).atexit = False
        return owner

    @staticmethod
    def _copy(fd: int, off: int, n: int, why: OSError) -> bytearray:
        try:
            copy = bytearray(n)
        except MemoryError as exc:
            raise _address_space_error(why, f"a {n}-byte buffer") from exc
        done = 0
        while done < n:
            got = os.preadv(fd, [memoryview(copy)[done:]], off + done)
            if not got:
                raise RuntimeError("shoal: shared memory ended inside a buffer")
            done += got
        return copy

    def release(self, i: int, off: int, cap: int, addr: int, counted: bool = True) -> None:
        """Block ``i`` (mapped at ``addr``, or 0; counted in ``loaded`` if
        ``counted``) has no user left: free it, after the next write of
        results in a worker (see the module docstring)."""
        if _defer:
            _deferred.append((self, i, off, cap, addr, counted))
        else:
            self._free(i, off, cap, addr, counted)

    def _free(self, i: int, off: int, cap: int, addr: int, counted: bool) -> None:
        if os.getpid() != self.pid:
            return  # a forked child's copy: the block is its parent's
        with self.lock:
            if counted:
                self.loaded -= 1
            if addr and self.live and off + cap <= self.hot_end:
                # Pages and mapping stay for the next use. Freed under the
                # lock, so retire() sees the block free or finds it idle.
                self.idle[off] = (addr, cap)
                self.view[_STATES + i] = FREE
                return
        if addr:
            # Give the pages back before the block is free: a writer may
            # fill it again at once.
            _shoal.discard_pages(addr, cap)
            _shoal.munmap(addr, cap)
        self.view[_STATES + i] = FREE

    # -- the descriptor -------------------------------------------------------
    def _borrow(self) -> int:
        """The descriptor, held open until `_give_back`; -1 once closed."""
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

    def retire(self) -> None:
        """The pool is released: no more blocks are written, and every free
        block, and every block freed from now on, gives its pages back.
        Closes the descriptor if no block still waits to be loaded."""
        with self.lock:
            if not self.live:
                return
            self.live = False
            idle, self.idle = self.idle, {}
        for addr, cap in idle.values():
            _shoal.munmap(addr, cap)
        fd = self._borrow()
        if fd < 0:
            return
        try:
            count = _HEAD.unpack_from(self.view, 0)[1]
            with self.lock:
                busy = self.busy()
                # Arguments: no reader is left, and no put() holds blocks.
                everything = self.writer and self.users == 1
                waiting = len(busy) - self.loaded
            if everything:
                _shoal.punch_hole(fd, PAYLOAD, self.capacity - PAYLOAD)
            else:
                caps = struct.unpack(f"<{count}Q", os.pread(fd, 8 * count, _CAPS))
                off, held = PAYLOAD, set(busy)
                for i, cap in enumerate(caps):
                    if i not in held:
                        _shoal.punch_hole(fd, off, cap)
                    off += cap
        finally:
            self._give_back()
        if everything or waiting <= 0:
            self.close()

    def close(self) -> None:
        """Close the descriptor, once, whichever threads call this at once;
        blocks already loaded stay mapped."""
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
        try:
            if os.getpid() != self.pid:
                return  # a forked child's copy of its parent's object
            self.close()
            for addr, cap in getattr(self, "idle", {}).values():
                _shoal.munmap(addr, cap)
            addr, self._addr = getattr(self, "_addr", 0), 0
            if addr:
                self.view.release()
                _shoal.munmap(addr, self._len)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class Outbound:
    """The pickling side: which buffers go out of band, and the stream that
    names their blocks. ``arena`` is an :class:`Arena`, a callable that
    returns one (or None) when first needed, or None: large buffers then
    travel in band."""

    # A thread pool's object table (``_handles.Handles``) stands in the same
    # place and says True: objects then travel by reference, unpickled.
    by_reference = False

    def __init__(self, arena: Arena | Callable[[], Arena | None] | None) -> None:
        # The factory's answer replaces it on first use, and may be None.
        self._arena: Arena | Callable[[], Arena | None] | None = arena
        # Under fork, the main_snapshot the workers inherited: a pickle
        # naming only those script functions and classes keeps its names
        # (_pickling._inherited_only). None: everything of __main__ goes by
        # value.
        self.inherited: dict[str, Any] | None = None
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
            from shoal._pickling import _cloud_dumps

            return _cloud_dumps(obj, buffer_callback)
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

    def ref(self, data: bytes, bufs: list[memoryview]) -> _Ref | None:
        """``bufs`` copied to shared memory, and an object that pickles as
        the call that loads ``data`` with them from there; None if there is
        no room (the caller pickles in band)."""
        arena = self.arena()
        if arena is None:
            return None
        blocks = arena.put(bufs)
        if blocks is None:
            return None
        return _Ref(arena.ino, blocks, data)


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
        from shoal._pickling import cloud_pickler

        class Cloud(cloud_pickler()):  # type: ignore[misc]
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

    def __init__(self, ino: int, blocks: list[tuple[int, int, int, int]], data: bytes) -> None:
        self.args = (ino, blocks, data)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _load, self.args


def _arena(ino: int) -> Arena:
    """This process's own access to arena ``ino``, opened on first use."""
    arena = _arenas.get(ino)
    if arena is not None and arena.pid == os.getpid():
        return arena
    peer = _peers.get(ino)
    if peer is None:
        raise RuntimeError(f"shoal: a buffer names shared memory (inode {ino}) this process cannot reach")
    fd = _open_peer(*peer, ino)
    try:
        arena = Arena(fd)
    except OSError as exc:
        os.close(fd)
        raise _address_space_error(exc, "the block table") from exc
    except BaseException:
        os.close(fd)
        raise
    _arenas[ino] = _opened[ino] = arena
    return arena


def _open_peer(pid: int, fd: int, ino: int, private: bool = False) -> int:
    """A new descriptor for the pool's memfd ``fd``, its own open file (so
    a ``flock`` on it is this process's alone) if ``private``. Through
    ``/proc/self/fd`` if this process inherited the descriptor (a forked
    worker: works even when the pool's process is not dumpable), else
    through the pool's."""
    path = f"/proc/{pid}/fd/{fd}"
    inherited = False
    try:
        st = os.fstat(fd)
        inherited = st.st_ino == ino and stat.S_ISREG(st.st_mode)
        inherited = inherited and os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal")
    except FileNotFoundError:
        pass  # no /proc: the inode and file type say it
    except OSError:
        inherited = False
    if inherited:
        path = f"/proc/self/fd/{fd}"
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if inherited and not private:
            return os.dup(fd)  # no /proc: a reader needs no open file of its own
        raise RuntimeError(
            f"shoal: cannot open the pool's shared memory through {path} ({exc}); "
            "large buffers need it. Is /proc mounted, and is the parent process dumpable?"
        ) from exc


def _load(ino: int, blocks: list[tuple[int, int, int, int]], data: bytes) -> Any:
    """Rebuild an object whose large buffers are in shared memory, in place."""
    from _pickle import loads

    arena = _arena(ino)
    bufs = []
    for k, (i, off, cap, n) in enumerate(blocks):
        try:
            owner = arena.load(i, off, cap, n)
        except BaseException:
            # Those not loaded are free all the same (those loaded go with `bufs`).
            for j, o, c, _ in blocks[k + 1 :]:
                arena.release(j, o, c, 0, counted=False)
            raise
        bufs.append(memoryview(owner).cast("B"))
    return loads(data, buffers=bufs)


def joined(arrays: list[Any]) -> Any:
    """``numpy.concatenate(arrays)`` without copying, or None where it
    cannot be had: when each array is a C-ordered ndarray lying at the
    start of a block of its own (a result that came through an arena), of
    one dtype and one shape past the first axis, and each but the last is
    a whole number of pages, the blocks' pages are mapped again end to end
    (``_shoal.join_spans``) and the result is an array over them, which
    keeps the blocks in use as long as it lives. A copy of 100 MiB into fresh
    memory costs ~45 ms here (page faults, then the copy), which is what
    ``WorkerPool.map`` paid over ``Pool.map`` for numpy results."""
    import numpy as np

    first = arrays[0]
    dtype, rest = first.dtype, first.shape[1:]
    if first.ndim == 0 or dtype.hasobject:
        return None
    parts: list[tuple[Any, int, int]] = []
    seen: set[int] = set()  # the spans' ids (each kept alive in parts)
    rows = 0
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dtype or a.shape[1:] != rest or not a.flags.c_contiguous:
            return None
        # A decoded result's chain: ndarray, ndarray, memoryview, Span.
        base = a.base
        while base is not None and type(base) is not _shoal.Span:
            base = base.obj if type(base) is memoryview else getattr(base, "base", None)
        if base is None or id(base) in seen:
            # The same block twice (a chunk's results pickle one array
            # object once): laid twice, a write to one half would show in
            # the other, where numpy's copy makes them independent.
            return None
        seen.add(id(base))
        parts.append((base, a.__array_interface__["data"][0], a.nbytes))
        rows += a.shape[0]
    try:
        addr, mapped = _shoal.join_spans(parts)
    except (ValueError, OSError):
        return None  # not laid out for it, or no mapping to be had: a copy
    span: Any = _shoal.Span(addr, sum(n for _, _, n in parts))  # a buffer (its stub says so from 3.12)
    # The region goes with the span; the finalizer holds the arrays (and
    # so their blocks) until then.
    weakref.finalize(span, _unjoin, addr, mapped, arrays).atexit = False
    return np.frombuffer(span, dtype).reshape((rows, *rest))


def _unjoin(addr: int, mapped: int, _pieces: list[Any]) -> None:
    """Unmap a region :func:`joined` mapped. ``_pieces``, the arrays over
    the blocks it maps again, only ride along: the finalizer that calls
    this lets them (and so the blocks) go after it."""
    _shoal.munmap(addr, mapped)


def commit() -> None:
    """In a worker: the results whose blocks are staged are about to be
    handed to the outbox, so the parent will free those blocks: mark them
    busy. Called before the hand-over, as the parent may free a block as
    soon as its result is sent."""
    for arena, i in _staged:
        arena.view[_STATES + i] = BUSY
    _staged.clear()


def free_deferred() -> None:
    """Free the blocks whose last user is gone (a worker, after writing results)."""
    for arena, i, off, cap, addr, counted in _deferred:
        arena._free(i, off, cap, addr, counted)
    _deferred.clear()


def _unreachable(method: str) -> str | None:
    """Why workers started by ``method`` could not open this process's
    arenas (None: they can). A forked worker reopens the descriptors it
    inherited; others go through ``/proc/<pid>/fd``, which needs /proc and
    a dumpable process (``prctl(PR_SET_DUMPABLE, 0)``, setuid programs and
    hardened services are not)."""
    if method == "fork":
        return None
    if not os.path.isdir(f"/proc/{os.getpid()}/fd"):
        return "/proc is not mounted"
    from shoal._shoal import dumpable

    if not dumpable():
        return f"the process is not dumpable, so {method} workers cannot open /proc/{os.getpid()}/fd"
    return None


def _hot_sizes(arenas: int) -> tuple[int, int]:
    """Hot bytes for the arguments' arena and for each results' arena: the
    defaults, or less under an address-space limit (``ulimit -v``), so that
    what stays mapped takes at most a quarter of what the limit leaves."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    want = HOT_ARGS + arenas * HOT_RESULTS
    if limit == resource.RLIM_INFINITY:
        return HOT_ARGS, HOT_RESULTS
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        used = 0
    room = max(0, limit - used) // 4
    if room >= want:
        return HOT_ARGS, HOT_RESULTS
    return HOT_ARGS * room // want, HOT_RESULTS * room // want


class PoolBuffers:
    """The parent's arenas for one pool: arguments, and results per worker
    slot. Without them (``unavailable`` says why), large buffers travel in
    band."""

    def __init__(self, slots: int, method: str = "fork") -> None:
        self.args: Arena | None = None
        self.results: list[Arena] = []
        self.unavailable = _unreachable(method)
        if self.unavailable is None:
            hot_args, hot_results = _hot_sizes(slots)
            try:
                self.args = Arena.create("shoal-args", hot_args, writer=True, soft_limit=SOFT_LIMIT)
                for i in range(slots):
                    self.results.append(Arena.create(f"shoal-results-{i}", hot_results))
            except OSError as exc:
                self.close()
                self.args, self.results = None, []
                self.unavailable = f"cannot create shared memory ({exc})"
        self.outbound = Outbound(self.args)

    def settings(self) -> dict[str, Any]:
        """What a worker needs to reach the arenas (sent in its Init)."""
        return {
            "pid": os.getpid(),
            "args": None if self.args is None else (self.args.fd, self.args.ino),
            "results": [(a.fd, a.ino) for a in self.results],
        }

    def _all(self) -> list[Arena]:
        return [*([] if self.args is None else [self.args]), *self.results]

    def release(self) -> None:
        """The pool's workers are gone: no more blocks are written, and free
        blocks give their pages back (see ``Arena.retire``). Safe to call
        again, from any thread."""
        for a in self._all():
            a.retire()

    def close(self) -> None:
        """Close the descriptors; blocks already loaded stay mapped."""
        for a in self._all():
            a.close()

    def __del__(self) -> None:
        # Objects loaded from the arenas may outlive them (and keep their
        # Arena objects), but not their descriptors: nothing is left to load.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def attach(settings: dict[str, Any]) -> Outbound:
    """In a worker: learn the pool's arenas; return the writer for results,
    which claims a result arena the first time a large buffer needs one."""
    global _defer
    _defer = True
    pid = settings["pid"]
    if settings["args"] is not None:
        fd, ino = settings["args"]
        _peers[ino] = (pid, fd)
    slots = settings["results"]
    for fd, ino in slots:
        _peers[ino] = (pid, fd)

    def claim() -> Arena | None:
        import fcntl

        for fd, ino in slots:
            try:
                own = _open_peer(pid, fd, ino, private=True)
            except RuntimeError:
                return None  # results travel in band
            try:
                fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(own)
                continue
            try:
                # Kept open: closing it would drop the lock.
                arena = Arena(own, writer=True)
            except OSError:
                os.close(own)
                return None  # no address space for its hot blocks: in band
            arena.stages = True
            _arenas[ino] = _opened[ino] = arena
            return arena
        return None  # every slot taken: results travel in band

    return Outbound(claim)
