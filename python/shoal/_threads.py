"""Thread workers: the worker loop of a process worker, on a thread of this
process (``shoal.ThreadPool``, ``WorkerPool(start_method="threading")``,
``Executor(start_method="threading")``).

The engine starts each worker as a thread (``ThreadLauncher`` in
crates/shoal-core/src/launch.rs, through crates/shoal-py/src/threads.rs),
which calls :meth:`Workers.serve` on its end of a socket pair: the frames,
the native loop (crates/shoal-py/src/worker_loop.rs) and the ``_worker``
stages are a process worker's. What differs is the data: tasks, functions,
results and exceptions are references into the pool's object table
(``_handles``), so nothing is pickled and a task gets the very objects it
was given. A worker's own state (its slot, its exit hook) lives on its
thread (``_worker.thread``), where a process worker keeps it in globals.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback

from shoal import _worker
from shoal._handles import Handles
from shoal._pickling import loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from shoal import _shoal


class Workers:
    """What a thread pool's worker threads share: its object table, and the
    functions they have loaded (one dict for all: a function's reference is
    loaded once, by the first worker that needs it)."""

    def __init__(self, handles: Handles) -> None:
        self.handles = handles
        self.funcs: dict[int, Any] = {}
        self.define_lock = threading.Lock()

    def serve(self, fd: int, slot: int) -> int:
        """Run one worker on channel ``fd`` (which the caller closes), in
        slot ``slot``; returns its exit code. Called on the worker's thread."""
        inbox = _worker._Inbox(fd, 1 << 16)
        outbox = _worker._Outbox(fd)
        host = ThreadHost(outbox.box, self, slot)
        _worker.thread.worker = host
        try:
            return _worker._loop(inbox, outbox, host)
        except OSError:
            return 0  # its channel was shut down (terminate): nobody reads on
        finally:
            _worker.thread.worker = None
            try:
                outbox.flush()
            except OSError:
                pass
            # Its flusher stops before the caller closes the channel.
            outbox.box.quiesce()


class ThreadHost:
    """What the native loop reads and calls back into, for a thread worker:
    the stages of a process worker's ``_worker._Host``, each given the
    pool's object table, so results and exceptions go by reference."""

    def __init__(self, outbox: _shoal.Outbox, workers: Workers, slot: int) -> None:
        oob = self.handles = workers.handles
        self._workers = workers
        self.slot = slot
        self.funcs = workers.funcs
        self.outbox = outbox
        self.deferred: list[Any] = []
        self.big: list[memoryview] = []
        self.buffer_callback = None
        self.loads = loads
        self.dumps = oob.dumps
        self.load_error = _worker._LoadError
        self.run_task = functools.partial(_worker._run_task, oob=oob)
        self.fail_task = functools.partial(_worker._fail_task, oob=oob)
        self.careful = functools.partial(_worker._careful_result, oob=oob)
        self.chunk_failed = functools.partial(_worker._chunk_failed, oob=oob)
        # Set by a front door's initializer (WorkerPool's): run at Exit.
        self.exit_hook: Callable[[], bytes | None] | None = None
        # A front door's per-worker context (WorkerPool's), set by its initializer.
        self.context: Any = None

    def define(self, fid: int, payload: bytes) -> None:
        """``Func``: the function, taken from the table by the first worker
        that needs it; the others find it loaded."""
        with self._workers.define_lock:
            if fid in self.funcs:
                return
            try:
                self.funcs[fid] = loads(payload)
            except BaseException as exc:  # noqa: BLE001 - its tasks fail with this
                self.funcs[fid] = _worker._LoadError(self.chunk_failed(exc, "\nwhile loading the function\n"))

    def init(self, payload: bytes, slot_id: int) -> tuple[bool, int, bytes]:
        """``Init``: run the pool's initializer on this thread; returns
        ``(succeeded, initializer ns, failure)``."""
        self.slot = slot_id
        initializer = None
        try:
            initializer, initargs = loads(payload)
            t0 = time.perf_counter_ns()
            if initializer is not None:
                initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            traceback.print_exc()
            if not isinstance(exc, Exception):
                exc = _worker._initializer_exited(initializer, exc)
            return False, 0, self.chunk_failed(exc, "")
        return True, time.perf_counter_ns() - t0, b""

    def exit(self) -> bytes | None:
        """``Exit``: the exit hook's payload for ``ExitResult``, if any."""
        hook, self.exit_hook = self.exit_hook, None
        if hook is None:
            return None
        try:
            return hook()
        except BaseException:  # noqa: BLE001 - the worker exits either way
            traceback.print_exc()
            return None


def current() -> ThreadHost | None:
    """The thread worker running on this thread, if one is."""
    return getattr(_worker.thread, "worker", None)
