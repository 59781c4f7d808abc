"""What the machine offers a pool: the CPUs this process may use, a kernel
that can run shoal's engine, and whether this process may fork."""

from __future__ import annotations

import os
import sys

from shoal import _shoal


def usable_cpus() -> int:
    """The number of CPUs this process may run on: the default size of every
    pool (``Pool``, ``Executor``, ``WorkerPool``, ``ThreadPool``).

    ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` count these since Python 3.13
    (``os.process_cpu_count()``: the affinity mask, unless
    ``PYTHON_CPU_COUNT`` or ``-X cpu_count`` overrides it). On 3.11 and 3.12,
    which have neither, the affinity mask is read directly, so
    ``taskset -c 0`` means one worker on every version. A cgroup CPU quota
    is not counted, as the stdlib does not count it.
    """
    process_cpu_count = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return process_cpu_count() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # a platform without it, or a kernel that refuses
        return os.cpu_count() or 1


def require_supported_kernel() -> None:
    """Raise ``OSError`` with one sentence saying what is required if this
    kernel cannot run shoal's engine (no ``pidfd_open``: Linux before 5.3,
    or a seccomp profile that refuses it). Call before starting workers, so
    that nothing is left to clean up."""
    _shoal.check_kernel()


def os_threads() -> int:
    """The threads of this process as the kernel counts them: Python's,
    the engine's and those C libraries start. 0 if it cannot be read."""
    try:
        fd = os.open("/proc/self/stat", os.O_RDONLY)
    except OSError:
        return 0
    try:
        stat = os.read(fd, 4096)
    finally:
        os.close(fd)
    # The command name, field 2, is in parentheses and may hold spaces or
    # parentheses itself; num_threads is field 20, the 18th after it.
    try:
        return int(stat[stat.rindex(b")") + 2 :].split()[17])
    except (ValueError, IndexError):
        return 0


def single_threaded() -> bool:
    """Whether the kernel counts one thread in this process, once the
    libraries that stop their own threads for a fork have done so.

    OpenBLAS (numpy's BLAS) starts a thread pool as it loads, stops it in a
    ``pthread_atfork`` handler before any fork, and starts it again only
    when next used. A fork whose child exits at once runs those handlers; a
    thread that outlives it (Python's, most C libraries') still counts."""
    threads = os_threads()
    if threads <= 1:
        return threads == 1
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return False  # Python threads do not stop for a fork
    if not _shoal.fork_and_reap():
        return False
    return os_threads() == 1
