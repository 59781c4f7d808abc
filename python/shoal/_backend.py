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

import itertools
import multiprocessing.process
import sys
import threading
from collections.abc import Callable, Iterable

from shoal import _shm, _shoal, _spawning, _start
from shoal._handles import Handles
from shoal._pickling import dumps, main_snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The start method that makes workers threads of this process.
THREADING = "threading"

# Result arenas beyond one per worker: a process a task forked keeps its
# worker's arena locked after the worker is gone.
_SPARE_RESULT_ARENAS = 2

# The initializer and its arguments of each pool whose workers may fork,
# by token, from before its zygote forks until the engine runs: a forked
# worker reads them here, from the memory it inherited, as
# multiprocessing's forked children do, so they need not pickle (a
# Barrier, a Lock, a Value made for fork insist on inheritance). The
# parent lets go of them once the zygote holds its copy.
inherited_init: dict[int, tuple[Callable[..., object] | None, tuple[Any, ...]]] = {}
_tokens = itertools.count(1)


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
        dumps_init: Callable[[Any], bytes] = _spawning.dumps,
    ) -> None:
        # release() may be called from two threads at once (terminate() from
        # a timer racing join()); it runs once at a time.
        self._release_lock = threading.Lock()
        # Created before the workers, so that forked ones inherit them mapped.
        # Undecided (the default is settled at the fork): as for forkserver,
        # whose workers must reach the arenas through /proc.
        self.buffers = _shm.PoolBuffers(processes + _SPARE_RESULT_ARENAS, method or "forkserver")
        self.oob: _shm.Outbound | None = self.buffers.outbound
        initargs = tuple(initargs)
        # Held for the pool's life, as multiprocessing.Pool holds them: a
        # worker started later (a replacement) unpickles them afresh, and a
        # Lock's or Barrier's semaphore and memory live as long as an owner does.
        self._init = (initializer, initargs)
        settings = {
            "sys_path": list(sys.path),
            "authkey": bytes(multiprocessing.process.current_process().authkey),
            "shm": self.buffers.settings(),
        }
        token = next(_tokens)

        def init_payload(used: str) -> bytes:
            # Two layers: the worker must set sys.path before it can unpickle
            # an initializer that lives in a module only the parent's path finds.
            if used == "fork":
                return dumps({**settings, "inherit": token})
            return dumps({**settings, "initializer": dumps_init((initializer, initargs))})

        # Under fork the workers inherit the script's globals as they are
        # now: its functions can then travel by reference. Taken before we
        # know: the default is settled only at the fork.
        snapshot = main_snapshot() if method in (None, "fork") else None
        if method in (None, "fork"):
            inherited_init[token] = (initializer, initargs)
        self.engine: _shoal.Engine
        try:
            self.method, self.engine, self._zygote = _start.start_engine(
                method, processes, init_payload, lifespan_chunks, max_items=lifespan_items, exit_grace=exit_grace
            )
        finally:
            # The zygote (and so every worker it forks) holds its own copy.
            inherited_init.pop(token, None)
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
    dumps_init: Callable[[Any], bytes] = _spawning.dumps,
) -> Processes | Threads:
    """Start ``processes`` workers the way ``start_method`` (or ``context``,
    or the process-wide default) says: ``"threading"`` makes them threads
    of this process. Each is replaced after ``lifespan_chunks`` chunks or
    ``lifespan_items`` items, and has ``exit_grace`` seconds for its exit
    hook when told to exit. Workers that fork inherit ``initializer`` and
    ``initargs``; other processes get them pickled by ``dumps_init``, by
    default as ``multiprocessing`` pickles a spawned process's arguments,
    so its locks, values and queues may be among them (threads take them
    as they are)."""
    if start_method == THREADING:
        return Threads(processes, initializer, initargs, lifespan_chunks, lifespan_items, exit_grace)
    method = _start.resolve(context, start_method)
    return Processes(method, processes, initializer, initargs, lifespan_chunks, lifespan_items, exit_grace, dumps_init)
