"""The zygote: a single-threaded process that forks workers on request.

For the "forkserver" start method it is a fresh interpreter, which first
imports the modules of ``_start.PRELOAD`` that the pool's process has
(numpy); for "fork" it is a fork of the parent taken before that pool's
engine thread exists. The engine sends it a worker id with the worker's
channel attached (SCM_RIGHTS); it forks, replies with the child's pid, and,
since only it can reap its children, reports each child's exit status. It
exits when the engine closes the control socket or the pool's process
exits; its workers die with it (PR_SET_PDEATHSIG). It keeps an heir, a fork
of itself, that the engine turns to if it is killed (:class:`_Server`).
"""

from __future__ import annotations

import _socket
import os
import select
import sys
import time

from shoal import _protocol as P
from shoal import _worker

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    import signal as _signal  # the same functions; typeshed has no _signal
    from typing import Any, NoReturn
else:
    import _signal

_INT = P.struct.Struct("i")


def main() -> None:
    """Entry point of a spawned zygote: the control socket is standard
    input; the arguments name modules to import first (``name=file``)."""
    # Ctrl-C reaches the whole process group: ignored from the start (as
    # serve does), not only once the preload is done.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    if len(sys.argv) > 1 and not preload(sys.argv[1:]):
        # Unfit to fork from: start over, a fresh interpreter without them.
        os.execv(sys.executable, sys.orig_argv[: len(sys.orig_argv) - len(sys.argv) + 1])
    fd = os.dup(0)
    devnull_stdin()
    serve(fd, os.getppid())
    os._exit(0)


def preload(specs: list[str]) -> bool:
    """Import the pool's modules named in ``specs`` (``name=file``, see
    ``_start.PRELOAD``), for every worker to fork with them. False if this
    process is then unfit to fork from: a module failed to import, or is
    another file than the pool's (found first on this interpreter's path),
    or a thread it started outlives a fork."""
    from shoal._platform import single_threaded

    for spec in specs:
        name, _, file = spec.partition("=")
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - its workers will say why, if they need it
            return False
        if getattr(sys.modules.get(name), "__file__", None) != file:
            return False
    # A library may start threads as it loads and stop them itself before
    # any fork (OpenBLAS's pool does): see single_threaded. A thread that
    # outlives a fork could hold a lock no worker forked later would see
    # released.
    return single_threaded()


# The sys.stdin this process had (the parent's, in a fork zygote). Kept,
# so it is never finalised: closing a buffered reader seeks its descriptor
# back over what it read ahead, and a forked zygote shares that file offset
# with the parent. sys.__stdin__ is left alone, as multiprocessing does.
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
    _old_stdin.append(sys.stdin)
    sys.stdin = open(0, closefd=False)


def _recv_with_fd(sock: _socket.socket) -> tuple[bytes, list[int]]:
    """Receive a 4-byte request and the descriptor attached to it."""
    msg, ancdata, _, _ = sock.recvmsg(4, _socket.CMSG_SPACE(4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.extend(_INT.unpack_from(data, i)[0] for i in range(0, len(data) - 3, 4))
    return msg, fds


# How long a fork pool's zygote waits, idle, before it makes its heir (see
# serve): a pool that lives less (a map with a WorkerPool's default
# keep_alive=False, a script's one map) never forks one, nor waits at its
# close for one to be killed and reaped.
HEIR_DELAY = 0.1


def serve(ctrl_fd: int, parent: int, *, heir_delay: float = 0.0) -> None:
    """Fork workers for the engine on ``ctrl_fd`` until it closes or the
    pool's process, ``parent``, exits. The heir is made ``heir_delay``
    seconds after the start, or at the first request if that comes first:
    at once for a zygote that forks a pool's first workers (forkserver);
    later for a fork pool's, whose first workers the pool's process forks
    itself, so the heir's fork is off the path of a short pool's start and
    close."""
    # The C modules, not `signal` and `socket`: those import enum, and every
    # forked worker would pay for it at pool start.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    try:
        parent_fd = os.pidfd_open(parent)
    except OSError:
        return  # the pool's process is gone already
    _run(ctrl_fd, parent_fd, heir_delay=heir_delay)


def _run(ctrl_fd: int, parent_fd: int, heir_delay: float | None = None) -> None:
    """Serve until told to stop. ``heir_delay``: seconds until this zygote
    makes its heir unasked (0: now, while the pool's process is still
    starting its engine, so the first worker's fork does not wait for this
    one); None, as for an heir: at its first request."""
    sock = _socket.socket(fileno=ctrl_fd)
    server = _Server(sock, parent_fd)
    try:
        if heir_delay == 0:
            server.make_heir()
        elif heir_delay is not None:
            server.heir_due = time.monotonic() + heir_delay
        server.run()
    except OSError:
        pass  # the engine hung up while we wrote to it
    finally:
        server.retire_heir()
        # Closed here, not by the collector: under -X dev an unclosed
        # socket is a ResourceWarning, printed by every fork pool.
        sock.close()


def run_worker(chan: int, parent: int) -> NoReturn:
    """Be a worker on channel ``chan`` until told to exit, then exit: the
    rest of a forked worker's life, whichever process forked it (a zygote,
    or the pool's own process for its first workers), ``parent``."""
    code = 1
    try:
        code = _worker.serve(chan, parent)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Server:
    """One zygote's loop and what it owns: its workers and its heir.

    The heir is a fork of this zygote that forks nothing until the engine
    sends it a request, which it does once this zygote has exited (killed,
    say): the heir is then the zygote, with the same inherited state, and
    makes an heir of its own. The engine learns of each heir (``ZYGOTE_HEIR``,
    with its control socket attached) before any worker this zygote forks:
    a zygote forks no worker while it has no heir, and replaces an heir
    that exits at once. A pool's first zygote makes its heir as it starts
    (forkserver) or ``HEIR_DELAY`` later (fork), or at its first request if
    that comes first; an heir waits for its first request before making
    one, so there is never more than one.
    """

    def __init__(self, sock: _socket.socket, parent_fd: int) -> None:
        self.sock = sock
        self.parent_fd = parent_fd
        self.me = os.getpid()
        self.children: dict[int, int] = {}  # pidfd -> pid, of workers
        self.heir: tuple[int, int] | None = None  # its pidfd and pid
        # When to make the heir if no request has made it first (see serve).
        self.heir_due: float | None = None

    def run(self) -> None:
        sock = self.sock
        while True:
            # The socket and descriptors (ints): `r is sock` tells them apart.
            watched: list[Any] = [sock, self.parent_fd, *self.children]
            if self.heir is not None:
                watched.append(self.heir[0])
            timeout = None
            if self.heir_due is not None:
                timeout = self.heir_due - time.monotonic()
                if timeout <= 0 or self.heir is not None:
                    self.heir_due = None
                    if self.heir is None:
                        self.make_heir()
                    continue
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            for r in ready:
                if r is sock:
                    try:
                        msg, fds = _recv_with_fd(sock)
                    except OSError:
                        msg, fds = b"", []
                    if not msg or not fds:
                        return
                    if self.heir is None:
                        self.make_heir()
                    # The serial is the engine's name for this launch.
                    self.fork_worker(int.from_bytes(msg, "little"), fds[0])
                elif r == self.parent_fd:
                    return
                elif self.heir is not None and r == self.heir[0]:
                    self.reap_heir()
                    self.make_heir()
                else:
                    pid = self.children.pop(r)
                    _, status = os.waitpid(pid, 0)
                    os.close(r)
                    sock.sendall(P.ZYGOTE_RECORD.pack(P.ZYGOTE_EXITED, pid, status))

    def _close_inherited(self) -> None:
        """In a child: close what belongs to this zygote."""
        self.sock.close()
        for pfd in self.children:
            os.close(pfd)
        if self.heir is not None:
            os.close(self.heir[0])

    def fork_worker(self, serial: int, chan: int) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                self._close_inherited()
                os.close(self.parent_fd)
            finally:
                run_worker(chan, self.me)
        os.close(chan)
        self.children[os.pidfd_open(pid)] = pid
        self.sock.sendall(P.ZYGOTE_RECORD.pack(P.ZYGOTE_FORKED, pid, serial))

    def make_heir(self) -> None:
        """Fork an heir and hand the engine its control socket. Best
        effort: without an heir the pool works, but would not outlive
        this zygote."""
        try:
            ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return
        if pid == 0:
            code = 0
            try:
                self._close_inherited()
                ours.close()
                _run(theirs.detach(), self.parent_fd)
            except BaseException:  # noqa: BLE001 - an heir must never return into its zygote's loop
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.heir = (os.pidfd_open(pid), pid)
        try:
            record = P.ZYGOTE_RECORD.pack(P.ZYGOTE_HEIR, pid, 0)
            self.sock.sendmsg([record], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _INT.pack(ours.fileno()))])
        finally:
            # The engine has its own copy now (or is gone, and the heir
            # sees its socket close).
            ours.close()

    def reap_heir(self) -> None:
        if self.heir is not None:
            pidfd, pid = self.heir
            self.heir = None
            os.close(pidfd)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def retire_heir(self) -> None:
        """This zygote is leaving because the engine or the pool's process
        is gone: its heir will never be needed. Reaped here, not left to
        whichever process would inherit it."""
        if self.heir is not None:
            try:
                os.kill(self.heir[1], _signal.SIGKILL)
            except OSError:
                pass
            self.reap_heir()
