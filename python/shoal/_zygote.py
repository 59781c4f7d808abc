"""The zygote: a single-threaded process that forks workers on request.

For the "forkserver" start method it is a fresh interpreter; for "fork" it
is a fork of the parent taken before that pool's engine thread exists. The
engine sends it a worker id with the worker's channel attached (SCM_RIGHTS);
it forks, replies with the child's pid, and, since only it can reap its
children, reports each child's exit status. It exits when the engine closes
the control socket; its workers die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

from shoal import _protocol as P
from shoal import _worker


def main() -> None:
    """Entry point of a spawned zygote: the control socket is standard input."""
    fd = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    serve(fd)
    os._exit(0)


def serve(ctrl_fd: int) -> None:
    """Fork workers for the engine on ``ctrl_fd`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=ctrl_fd)
    me = os.getpid()
    children: dict[int, int] = {}  # pidfd -> pid
    while True:
        try:
            ready, _, _ = select.select([sock, *children], [], [])
        except InterruptedError:
            continue
        for r in ready:
            if r is sock:
                try:
                    msg, fds, _, _ = socket.recv_fds(sock, 4, 1)
                except OSError:
                    msg, fds = b"", []
                if not msg:
                    return
                worker_id = int.from_bytes(msg, "little")
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
                sock.sendall(P.ZYGOTE_RECORD.pack(P.ZYGOTE_FORKED, pid, worker_id))
            else:
                pid = children.pop(r)
                _, status = os.waitpid(pid, 0)
                os.close(r)
                sock.sendall(P.ZYGOTE_RECORD.pack(P.ZYGOTE_EXITED, pid, status))
