"""The zygote: a single-threaded process that forks workers on request.

For the "forkserver" start method it is a fresh interpreter; for "fork" it
is a fork of the parent taken before that pool's engine thread exists. The
engine sends it a worker id with the worker's channel attached (SCM_RIGHTS);
it forks, replies with the child's pid, and, since only it can reap its
children, reports each child's exit status. It exits when the engine closes
the control socket; its workers die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import _socket
import os
import select
import sys

from shoal import _protocol as P
from shoal import _worker

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    import signal as _signal  # the same functions; typeshed has no _signal
    from typing import Any
else:
    import _signal

_INT = P.struct.Struct("i")


def main() -> None:
    """Entry point of a spawned zygote: the control socket is standard input."""
    fd = os.dup(0)
    devnull_stdin()
    serve(fd)
    os._exit(0)


# The standard input objects this process started with. Kept, so they are
# never finalised: closing a buffered reader seeks its descriptor back over
# what it read ahead, and a forked zygote shares that file offset with the
# parent.
_old_stdin: list[object] = []


def devnull_stdin() -> None:
    """Make ``/dev/null`` this process's standard input, descriptor 0 and
    ``sys.stdin``, for the workers it forks to inherit: multiprocessing
    gives its workers the same. A task reading its input then gets none,
    where a fork of the parent would read the parent's buffered input and
    take what the parent has not read yet from the pipe or file."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)
        os.close(devnull)
    _old_stdin.append((sys.stdin, sys.__stdin__))
    sys.stdin = sys.__stdin__ = open(0, closefd=False)


def _recv_with_fd(sock: _socket.socket) -> tuple[bytes, list[int]]:
    """Receive a 4-byte request and the descriptor attached to it."""
    msg, ancdata, _, _ = sock.recvmsg(4, _socket.CMSG_SPACE(4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.extend(_INT.unpack_from(data, i)[0] for i in range(0, len(data) - 3, 4))
    return msg, fds


def serve(ctrl_fd: int) -> None:
    """Fork workers for the engine on ``ctrl_fd`` until it closes."""
    # The C modules, not `signal` and `socket`: those import enum, and every
    # forked worker would pay for it at pool start.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    sock = _socket.socket(fileno=ctrl_fd)
    try:
        _serve(sock)
    finally:
        # Closed here, not by the collector: under -X dev an unclosed
        # socket is a ResourceWarning, printed by every fork pool.
        sock.close()


def _serve(sock: _socket.socket) -> None:
    me = os.getpid()
    children: dict[int, int] = {}  # pidfd -> pid
    while True:
        # The socket and the pidfds (ints): `r is sock` below tells them apart.
        watched: list[Any] = [sock, *children]
        try:
            ready, _, _ = select.select(watched, [], [])
        except InterruptedError:
            continue
        for r in ready:
            if r is sock:
                try:
                    msg, fds = _recv_with_fd(sock)
                except OSError:
                    msg, fds = b"", []
                if not msg:
                    return
                serial = int.from_bytes(msg, "little")  # the engine's name for this launch
                chan = fds[0]
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        sock.close()
                        for pfd in children:
                            os.close(pfd)
                        code = _worker.serve(chan, me)
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(code)
                os.close(chan)
                children[os.pidfd_open(pid)] = pid
                sock.sendall(P.ZYGOTE_RECORD.pack(P.ZYGOTE_FORKED, pid, serial))
            else:
                pid = children.pop(r)
                _, status = os.waitpid(pid, 0)
                os.close(r)
                sock.sendall(P.ZYGOTE_RECORD.pack(P.ZYGOTE_EXITED, pid, status))
