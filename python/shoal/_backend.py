"""How a pool's workers run: the one place that chooses.

A backend starts the engine's workers and owns what they need beside it:
worker processes (:class:`Processes`), started by fork, forkserver or
spawn (``_start.py`` has the methods), or threads of this process
(:class:`Threads`: ``ThreadPool``, ``start_method="threading"``). A cluster
plugs in here too, as another backend :func:`start` returns: the engine's
``Launcher`` (crates/shoal-core/src/launch.rs) is the matching seam in
Rust. The front doors do not change; they see an engine, where large
buffers go (``oob``), what the workers share with this process
(``inherited``), and ``release``.
"""

from __future__ import annotations

import multiprocessing.process
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from shoal import _shm, _shoal, _start
from shoal._handles import Handles
from shoal._pickling import dumps, main_snapshot

# The start method that makes workers threads of this process.
THREADING = "threading"

# Result arenas beyond one per worker: a process a task forked keeps its
# worker's arena locked after the worker is gone.
_SPARE_RESULT_ARENAS = 2


class Processes:
    """Workers as processes, with shared memory for large buffers."""

    def __init__(
        self,
        method: str | None,
        processes: int,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        lifespan_chunks: int | None,
        lifespan_items: int | None = None,
        exit_grace: float = 10.0,
    ) -> None:
        # release() may be called from two threads at once (terminate() from
        # a timer racing join()); it runs once at a time.
        self._release_lock = threading.Lock()
        # Created before the workers, so that forked ones inherit them mapped.
        # Undecided (the default is settled at the fork): as for forkserver,
        # whose workers must reach the arenas through /proc.
        self.buffers = _shm.PoolBuffers(processes + _SPARE_RESULT_ARENAS, method or "forkserver")
        self.oob: _shm.Outbound | None = self.buffers.outbound
        # Two layers: the worker must set sys.path before it can unpickle an
        # initializer that lives in a module only the parent's path finds.
        init = {
            "sys_path": list(sys.path),
            "authkey": bytes(multiprocessing.process.current_process().authkey),
            "initializer": dumps((initializer, tuple(initargs))),
            "shm": self.buffers.settings(),
        }
        # Under fork the workers inherit the script's globals as they are
        # now: its functions can then travel by reference. Taken before we
        # know: the default is settled only at the fork.
        snapshot = main_snapshot() if method in (None, "fork") else None
        self.engine: _shoal.Engine
        self.method, self.engine, self._zygote = _start.start_engine(
            method, processes, dumps(init), lifespan_chunks, max_items=lifespan_items, exit_grace=exit_grace
        )
        self.inherited = snapshot if self.method == "fork" else None
        if self.oob is not None:
            self.oob.inherited = self.inherited
        # Results decode out of these arenas, so they live as long as any result.
        self.engine.keep(self.buffers)

    @property
    def zygote_pid(self) -> int | None:
        """The pid of the zygote this pool started with, if it has one. If
        that zygote is killed, its heir forks the workers from then on."""
        return None if self._zygote is None else self._zygote.pid

    def release(self) -> None:
        """Free what the workers needed, once the engine has stopped. Safe
        to call again, from any thread; a call cut short (Ctrl-C while
        reaping the zygote) leaves the rest to the next."""
        with self._release_lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None
            self.buffers.release()


class Threads:
    """Workers as threads of this process: nothing is pickled. Tasks,
    functions, results and exceptions travel as references into an object
    table (``_handles``), which stands where a process pool's shared memory
    does (``oob``) and where the objects its workers inherited by fork are
    (``inherited``). A thread cannot be killed: see ``ThreadLauncher``."""

    method = THREADING
    zygote_pid = None
    buffers = None

    def __init__(
        self,
        processes: int,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        lifespan_chunks: int | None,
        lifespan_items: int | None = None,
        exit_grace: float = 10.0,
    ) -> None:
        self.handles = Handles()
        self.oob: Handles = self.handles
        self.inherited: Any = self.handles
        # Imported here: it brings the worker's modules, which a process
        # pool's parent does not need (~5 ms of its start-up).
        from shoal import _threads

        workers = _threads.Workers(self.handles)
        # Every worker loads the same initializer: a pinned reference.
        init = self.handles.pin((initializer, tuple(initargs)))
        self.engine: _shoal.Engine = _shoal.Engine(
            processes,
            init,
            threads=workers.serve,
            lifespan_chunks=lifespan_chunks,
            lifespan_items=lifespan_items,
            exit_grace=exit_grace,
        )
        # Results decode out of the table: it lives as long as any result.
        self.engine.keep(self.handles)

    def release(self) -> None:
        """Nothing to free: the table goes with the engine."""


def start(
    context: Any,
    start_method: str | None,
    processes: int,
    initializer: Callable[..., object] | None,
    initargs: Iterable[Any],
    lifespan_chunks: int | None,
    *,
    lifespan_items: int | None = None,
    exit_grace: float = 10.0,
) -> Processes | Threads:
    """Start ``processes`` workers the way ``start_method`` (or ``context``,
    or the process-wide default) says: ``"threading"`` makes them threads
    of this process. Each is replaced after ``lifespan_chunks`` chunks or
    ``lifespan_items`` items, and has ``exit_grace`` seconds for its exit
    hook when told to exit."""
    if start_method == THREADING:
        return Threads(processes, initializer, initargs, lifespan_chunks, lifespan_items, exit_grace)
    method = _start.resolve(context, start_method)
    return Processes(method, processes, initializer, initargs, lifespan_chunks, lifespan_items, exit_grace)
