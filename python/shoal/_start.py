"""Start methods: how a pool's worker processes come to exist.

* ``spawn``: each worker is a fresh interpreter, started by the engine with
  ``posix_spawn``.
* ``forkserver``: a fresh interpreter (the zygote) is spawned once per pool
  and forks each worker; replacements cost a fork, not an interpreter start.
* ``fork``: the zygote is a fork of this process, taken when the pool is
  created and before its engine thread starts, so workers inherit the
  parent's modules and globals as they were at that moment. The pool's
  first workers are forked then too, by this process itself (so its start
  waits for no fork in the zygote); the zygote forks every later one.

A zygote keeps an heir, a fork of itself that forks nothing until the
zygote is killed and the engine turns to it (``_zygote.py``), so losing the
zygote costs the workers it forked, not the pool. A fork pool's zygote
makes its heir 0.1 s into the pool's life, or at its first fork if
sooner: a pool that lives less forks none, and its close waits for none
to exit. A closing engine with no work left lets its zygote go as soon as
the zygote's own workers have exited (``Launcher::idle``), so the zygote
exits while the rest do.

None of them forks a process that has another thread, except ``fork``
when it is asked for by name (see docs on forking).

The default is chosen by measurement (2 workers, create, map 4 items,
close, join; median of 5 fresh processes; this 2-core VM, CPython 3.11,
release build; ``benches/start_methods.py``, 2026-11-30):

============  ===========  =================  ====================
method        shoal        multiprocessing    shoal: replace one
============  ===========  =================  ====================
fork          7.5 ms       23 ms              1.8 ms
forkserver    31 ms        82 ms              3.5 ms
spawn         36 ms        106 ms             11 ms
============  ===========  =================  ====================

A forkserver zygote is a fresh interpreter, and an interpreter takes ~20 ms
to start here before it forks anything, so forkserver cannot be as fast as
fork. Forking is safe only while the process has one thread: a fork copies
every lock but only the calling thread, so a lock another thread held (an
import lock, a logging handler's, one inside a C library, the engine's)
stays held forever in the child. CPython 3.12+ warns of it
(``DeprecationWarning``, counting the kernel's threads) and 3.14 stopped
forking by default. So the default is ``fork`` while the kernel counts one
thread in this process, and ``forkserver``, which is safe with any threads,
otherwise; the count is taken again right after the fork (see
:func:`_fork_zygote`). Threads that C libraries start (a BLAS pool, a gRPC
poller) count too: shoal cannot see which locks they hold, and CPython's
warning counts them as well; except those their library stops itself before
any fork, as OpenBLAS's pool (numpy's) does, which the zygote's own fork
lets it do before the count: a numpy program forks, with its workers
inheriting numpy, as before its threads were counted. The first gives the stdlib's Linux default
semantics (workers inherit the parent's state) at half its start-up cost;
``Pool._start_method`` says which was used.
``multiprocessing.set_start_method``, ``context=`` and ``start_method=``
choose explicitly.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

# The zygote's module (and the worker's, which it imports) is loaded here,
# in the pool's process, not in each fork zygote: there an import is on the
# path of every pool's start (~3 ms), here it is paid once per process.
from shoal import _pickling, _shoal, _zygote
from shoal._platform import os_threads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

METHODS = ("fork", "spawn", "forkserver")

_WORKER_CODE = "from shoal._worker import main; main()"
_ZYGOTE_CODE = "from shoal._zygote import main; main()"

# Modules a forkserver zygote imports before it forks, when this process
# has them (see `_zygote.preload`): its workers then start with them, as
# forked ones do, where each would otherwise import numpy (~65 ms here) when
# its first array arrives. Once per pool, even if no task needs it: a numpy
# program's pool forks unless it runs other threads, or asks for forkserver.
PRELOAD = ("numpy",)


def _preload() -> list[str]:
    """``name=file`` for each module of ``PRELOAD`` this process has."""
    out = []
    for name in PRELOAD:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            out.append(f"{name}={file}")
    return out


def resolve(context: Any = None, start_method: str | None = None) -> str | None:
    """The start method a pool should use, or None for shoal's default.

    An explicit ``start_method`` wins, then ``context``, then the method set
    with ``multiprocessing.set_start_method``. The default is not chosen
    here: :func:`start_engine` chooses it at the fork, which is when the
    number of threads matters.
    """
    if start_method is None and context is not None:
        getter = getattr(context, "get_start_method", None)
        if getter is None:
            raise TypeError(f"context must be a multiprocessing context, not {type(context).__name__}")
        try:
            start_method = getter(allow_none=True)
        except TypeError:
            start_method = getter()
    if start_method is None:
        start_method = multiprocessing.get_start_method(allow_none=True)
    if start_method is not None and start_method not in METHODS:
        raise ValueError(f"start method must be one of {', '.join(METHODS)}, not {start_method!r}")
    return start_method


# Control sockets of this process's zygotes. A forked child must not keep
# them open: a zygote exits when its control socket reaches end-of-file, and
# a copy held by a child would keep it (and its workers) alive after the
# parent dies.
_control_fds: set[int] = set()


def _close_control_fds_in_child() -> None:
    for fd in _control_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _control_fds.clear()


os.register_at_fork(after_in_child=_close_control_fds_in_child)


class _NotAlone(Exception):
    """This process had another thread when the default fork was taken."""


class Zygote:
    """A zygote process and the parent's end of its control socket.

    ``alone``: fork only if this process has a single thread, before the
    fork and after it; else raise :class:`_NotAlone`, with no zygote left.
    """

    def __init__(self, method: str, *, alone: bool = False) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.method = method
        self._popen: subprocess.Popen[bytes] | None = None
        try:
            if method == "forkserver":
                self._popen = subprocess.Popen(
                    [sys.executable, "-c", _ZYGOTE_CODE, *_preload()], stdin=theirs.fileno(), close_fds=True
                )
                self.pid = self._popen.pid
            else:
                self.pid = _fork_zygote(ours, theirs, alone)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # The engine takes this descriptor over; it shuts the socket down
        # when it stops, which is what makes the zygote exit.
        self.ctrl_fd = ours.detach()
        _control_fds.add(self.ctrl_fd)

    def close(self) -> None:
        """Reap the zygote; it exits once the engine has shut the socket down."""
        _control_fds.discard(self.ctrl_fd)
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        else:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _fork_zygote(ours: socket.socket, theirs: socket.socket, alone: bool) -> int:
    """Fork the zygote; with ``alone``, only from a process that has one
    thread at the fork. Threads their library stops before any fork
    (OpenBLAS's pool) are stopped by this fork's own at-fork handlers, so
    it needs no probe fork first (``_platform.single_threaded``, ~2 ms of
    a numpy program's start-up): the count after it tells."""
    if alone and _python_threads():
        raise _NotAlone  # they do not stop for a fork
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ours.close()
            # Its workers' `__main__` is this process's: results may name it.
            _pickling.inherit_main()
            _zygote.devnull_stdin()
            _zygote.serve(theirs.detach(), parent, heir_delay=_zygote.HEIR_DELAY)
        except BaseException:  # noqa: BLE001 - a zygote must never return into the parent's code
            code = 1
        finally:
            os._exit(code)
    # The kernel's count now includes any thread alive at the fork that its
    # library did not stop for it: if there is one, the child may hold a
    # lock it held, and is discarded. (A thread that ended in the
    # microseconds between the fork and the count is not seen: the window
    # a probe fork first would close, for the price of a second fork.)
    if alone and os_threads() != 1 and not _threads_end_soon():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise _NotAlone
    return pid


# How long a thread counted at the fork has to vanish. A thread already
# joined (a Python thread's join, a thread pool's workers) still shows in
# the kernel's count for a moment after the join returns: past its own
# code, it waits to be scheduled once more to finish exiting, up to a few
# milliseconds on a loaded machine. It holds no lock by then, and a script
# that used a ThreadPool, or joined a thread, before its next default pool
# would otherwise lose fork (forkserver, and script functions pickled by
# value). A thread that is still there after this is running, and rules
# fork out; one that ended within it is the (wider) window above.
_ENDING_WAIT = 0.005


def _threads_end_soon() -> bool:
    """Whether this process is down to one thread within ``_ENDING_WAIT``."""
    deadline = time.monotonic() + _ENDING_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.0002)
        if os_threads() == 1:
            return True
    return False


# Socket buffer bytes of a worker's channel, as the engine sets them on the
# channels it makes (crates/shoal-core/src/supervise.rs, launch_missing).
_CHANNEL_BUFFER = 1 << 20


def _python_threads() -> bool:
    """Whether this process runs another Python thread than this one."""
    threading = sys.modules.get("threading")
    return threading is not None and threading.active_count() > 1


def start_engine(
    method: str | None,
    processes: int,
    init_payload: Callable[[str], bytes],
    max_tasks: int | None,
    *,
    max_items: int | None = None,
    exit_grace: float = 10.0,
) -> tuple[str, _shoal.Engine, Zygote | None]:
    """Start an engine whose workers are started by ``method`` (None: the
    default, ``fork`` if this process is single-threaded at the fork, else
    ``forkserver``); each is replaced after ``max_tasks`` chunks
    (``maxtasksperchild``) or ``max_items`` items (``worker_lifespan``), and
    has ``exit_grace`` seconds to run its exit hook when told to exit.
    ``init_payload(method)``: the workers' ``Init`` payload, made once the
    method is settled (after the zygote forks, for the default), so that
    what forked workers inherit need not be pickled for them.
    Returns the method used, the engine and its zygote."""
    limits: dict[str, Any] = {"lifespan_chunks": max_tasks, "lifespan_items": max_items, "exit_grace": exit_grace}
    if method == "spawn":
        argv = [sys.executable, "-c", _WORKER_CODE]
        return method, _shoal.Engine(processes, init_payload(method), argv=argv, **limits), None
    zygote: Zygote | None = None
    if method is None:
        try:
            zygote = Zygote("fork", alone=True)
        except _NotAlone:
            method = "forkserver"
    if zygote is None:
        zygote = Zygote(method or "forkserver")
    try:
        payload = init_payload(zygote.method)
    except BaseException:
        # No engine took the socket: close it, so the zygote exits.
        os.close(zygote.ctrl_fd)
        zygote.close()
        raise
    first: list[tuple[int, int]] = []
    try:
        # Only from a process with one thread: fork asked for by name may
        # come from a threaded one, whose lock a fork can freeze held, and
        # then the zygote alone takes that risk, not each worker as well.
        if zygote.method == "fork" and os_threads() == 1:
            first = _fork_first_workers(processes)
    except BaseException:
        os.close(zygote.ctrl_fd)
        zygote.close()
        raise
    try:
        engine = _shoal.Engine(processes, payload, zygote_fd=zygote.ctrl_fd, first_workers=first, **limits)
    except BaseException:
        # The engine closed the socket and the channels as it failed, so the
        # zygote and the first workers exit.
        zygote.close()
        raise
    return zygote.method, engine, zygote


def _fork_first_workers(processes: int) -> list[tuple[int, int]]:
    """Fork a fork pool's first workers from this process, right after its
    zygote, while it has one thread (no engine yet, no thread of its own
    or of the program's): the pool's start
    then waits for no fork in the zygote (its start-up, its heir's fork
    first). Returns each one's pid and this end of its channel, for the
    engine to take over; the zygote forks every later worker. They are
    this process's children, as ``multiprocessing``'s workers are."""
    parent = os.getpid()
    made: list[tuple[int, int]] = []
    try:
        for _ in range(processes):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                ours.setsockopt(socket.SOL_SOCKET, opt, _CHANNEL_BUFFER)
            try:
                pid = os.fork()
            except BaseException:
                ours.close()
                theirs.close()
                raise
            if pid == 0:
                try:
                    ours.close()
                    for _, fd in made:  # the other workers' channels
                        os.close(fd)
                    # Its `__main__` is this process's: results may name it.
                    _pickling.inherit_main()
                    _zygote.devnull_stdin()
                finally:
                    _zygote.run_worker(theirs.detach(), parent)
            theirs.close()
            made.append((pid, ours.detach()))
    except BaseException:
        # Each sees its channel end and exits.
        for _, fd in made:
            os.close(fd)
        raise
    return made
