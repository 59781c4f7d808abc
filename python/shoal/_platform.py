"""What the machine offers a pool: the CPUs this process may use, and a
kernel that can run shoal's engine."""

from __future__ import annotations

import os

from shoal import _shoal


def usable_cpus() -> int:
    """The number of CPUs this process may run on: the default pool size.

    ``multiprocessing.Pool`` counts these since Python 3.13
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
    except OSError:
        return os.cpu_count() or 1


def require_supported_kernel() -> None:
    """Raise ``OSError`` with one sentence saying what is required if this
    kernel cannot run shoal's engine (no ``pidfd_open``: Linux before 5.3,
    or a seccomp profile that refuses it). Call before starting workers, so
    that nothing is left to clean up."""
    _shoal.check_kernel()
