"""Start methods: how a pool's worker processes come to exist.

* ``spawn``: each worker is a fresh interpreter, started by the engine with
  ``posix_spawn``.
* ``forkserver``: a fresh interpreter (the zygote) is spawned once per pool
  and forks each worker; replacements cost a fork, not an interpreter start.
* ``fork``: the zygote is a fork of this process, taken when the pool is
  created and before its engine thread starts, so workers inherit the
  parent's modules and globals as they were at that moment.

None of them forks a process that has engine threads, except ``fork`` when
another shoal pool is already running (see docs on forking): the zygote
never calls into the engine, so it does not touch locks those threads hold.

The default is chosen by measurement (2 workers, create, map 4 items,
close, join; median of 5 fresh processes; this 2-core VM, CPython 3.11,
release build; ``benches/start_methods.py``):

============  ===========  =================  ====================
method        shoal        multiprocessing    shoal: replace one
============  ===========  =================  ====================
fork          10.5 ms      21 ms              1.7 ms
forkserver    38.5 ms      89 ms              4.6 ms
spawn         30.3 ms      101 ms             13 ms
============  ===========  =================  ====================

A forkserver zygote is a fresh interpreter, and an interpreter takes ~20 ms
to start here before it forks anything, so forkserver cannot be as fast as
fork. Forking is safe as long as no engine thread exists (there is then no
lock a vanished thread could hold), which is true whenever no other shoal
pool is running: one pool at a time, the common case. So the default is
``fork`` when this process has no engine thread, and ``forkserver``, which
is safe with any threads, when it has. The first gives the stdlib's Linux
default semantics (workers inherit the parent's state) at half its start-up
cost; ``Pool._start_method`` says which was used.
``multiprocessing.set_start_method``, ``context=`` and ``start_method=``
choose explicitly.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from typing import Any

from shoal import _shoal

METHODS = ("fork", "spawn", "forkserver")

_WORKER_CODE = "from shoal._worker import main; main()"
_ZYGOTE_CODE = "from shoal._zygote import main; main()"


def resolve(context: Any = None, start_method: str | None = None) -> str:
    """The start method a pool should use.

    An explicit ``start_method`` wins, then ``context``, then the method set
    with ``multiprocessing.set_start_method``, then shoal's default.
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
    if start_method is None:
        start_method = default_method()
    if start_method not in METHODS:
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


def default_method() -> str:
    """``fork`` while no engine thread exists in this process, else ``forkserver``."""
    return "fork" if _shoal.live_threads() == 0 else "forkserver"


class Zygote:
    """A zygote process and the parent's end of its control socket."""

    def __init__(self, method: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._popen: subprocess.Popen[bytes] | None = None
        if method == "forkserver":
            self._popen = subprocess.Popen([sys.executable, "-c", _ZYGOTE_CODE], stdin=theirs.fileno(), close_fds=True)
            self.pid = self._popen.pid
        else:
            self.pid = _fork_zygote(ours, theirs)
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


def _fork_zygote(ours: socket.socket, theirs: socket.socket) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ours.close()
            from shoal import _zygote

            _zygote.serve(os.dup(theirs.fileno()))
        except BaseException:  # noqa: BLE001 - a zygote must never return into the parent's code
            code = 1
        finally:
            os._exit(code)
    return pid


def start_engine(
    method: str,
    processes: int,
    init_payload: bytes,
    max_tasks: int | None,
    *,
    max_items: int | None = None,
    exit_grace: float = 10.0,
) -> tuple[_shoal.Engine, Zygote | None]:
    """Start an engine whose workers are started by ``method``; each is
    replaced after ``max_tasks`` chunks (``maxtasksperchild``) or
    ``max_items`` items (``worker_lifespan``), and has ``exit_grace``
    seconds to run its exit hook when told to exit."""
    limits: dict[str, Any] = {"lifespan_chunks": max_tasks, "lifespan_items": max_items, "exit_grace": exit_grace}
    if method == "spawn":
        argv = [sys.executable, "-c", _WORKER_CODE]
        return _shoal.Engine(processes, init_payload, argv=argv, **limits), None
    zygote = Zygote(method)
    try:
        engine = _shoal.Engine(processes, init_payload, zygote_fd=zygote.ctrl_fd, **limits)
    except BaseException:
        # The engine closed the socket as it failed, so the zygote exits.
        zygote.close()
        raise
    return engine, zygote
