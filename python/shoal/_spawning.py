"""Pickling a pool's start-up settings as ``multiprocessing`` pickles the
arguments of a process it spawns.

Workers that fork inherit the initializer and its arguments
(``_backend.inherited_init``); spawn and forkserver workers get them as
one pickle made here, once per pool. ``multiprocessing``'s locks, values,
barriers and queues refuse to pickle except while a process is being
spawned (they insist on inheritance), and a spawned ``Process`` may take
them as arguments: so may a pool's ``initargs`` (``Pool``, ``Executor``)
and a ``WorkerPool``'s shared objects. While :func:`dumps` pickles, a
stand-in for the spawning process (:class:`_Spawning`) is set, and the
descriptors those objects hand over become :class:`ProcFd`, which a
worker reopens through ``/proc``.

The worker side (:class:`ProcFd`) imports nothing beyond what a worker has.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ProcFd:
    """A file descriptor of the pool's process, as a worker that did not
    inherit it gets it: what ``multiprocessing``'s ``DupFd`` is to a child
    it spawns. A shared object's ``multiprocessing`` memory (``Value``,
    ``Array``, a ``Barrier``'s count) and pipes (a ``Queue``) pickle as
    one while :func:`dumps` runs. The worker opens the same file through
    ``/proc/<pid>/fd``, as ``_shm`` reaches the pool's arenas, which needs
    the pool's process to be alive, dumpable and on a system with
    ``/proc``; ``mode`` is the access mode the pool's descriptor has."""

    __slots__ = ("fd", "mode", "pid")

    def __init__(self, pid: int, fd: int, mode: int) -> None:
        self.pid = pid
        self.fd = fd
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProcFd, (self.pid, self.fd, self.mode))

    def detach(self) -> int:
        """A descriptor of this process for the same file, which the caller owns."""
        path = f"/proc/{self.pid}/fd/{self.fd}"
        try:
            return os.open(path, self.mode | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeError(
                f"a shared object's file (descriptor {self.fd} of the pool's process {self.pid}) could not be "
                f"opened through {path}: {exc}. Is /proc mounted and the parent process dumpable? (A socket "
                "cannot be reopened this way: pass a multiprocessing Pipe(duplex=False) or a Queue instead.) "
                "start_method='fork' passes shared objects by inheritance instead"
            ) from exc

    def __repr__(self) -> str:
        return f"ProcFd(pid={self.pid}, fd={self.fd})"


class _Spawning:
    """Stands in for the process being spawned while :func:`dumps` pickles
    (``multiprocessing.context.set_spawning_popen``): while one is set,
    ``multiprocessing``'s locks, values and queues agree to be pickled, as
    they do for a ``Process`` being started, and hand their descriptors to
    :meth:`DupFd`."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def duplicate_for_child(self, fd: int) -> int:
        # The worker reopens the pool's own descriptor (ProcFd): nothing to
        # duplicate, and the descriptor must stay open while workers start,
        # which the object the pool's caller holds sees to.
        return fd

    def DupFd(self, fd: int) -> ProcFd:
        import fcntl

        return ProcFd(self.pid, fd, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE)


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` as ``multiprocessing`` pickles the arguments of a
    process it spawns: with its reducers (shared memory, pipes) and while a
    spawn is under way, so its locks, values and queues pickle (by name and
    through :class:`ProcFd`) instead of insisting on inheritance. Anything
    else pickles as shoal sends functions (cloudpickle for what pickle
    cannot reach by name)."""
    import io
    from collections import ChainMap
    from multiprocessing import context, reduction

    from shoal._pickling import PROTOCOL, cloud_pickler

    base = cloud_pickler()

    # multiprocessing's own reducers (Arena, Connection, ...), registered on
    # ForkingPickler as their modules are imported; typeshed lacks the table.
    extra: dict[type, Any] = getattr(reduction.ForkingPickler, "_extra_reducers")  # noqa: B009

    class Pickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = ChainMap(extra, base.dispatch_table)

    set_spawning_popen: Any = context.set_spawning_popen
    set_spawning_popen(_Spawning())
    try:
        with io.BytesIO() as f:
            Pickler(f, protocol=PROTOCOL).dump(obj)
            return f.getvalue()
    finally:
        set_spawning_popen(None)
