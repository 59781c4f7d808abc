"""What the machine offers a pool: the CPUs this process may use."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The number of CPUs this process may run on: the default pool size.

    ``multiprocessing.Pool`` counts these since Python 3.13
    (``os.process_cpu_count()``, which also honours ``PYTHON_CPU_COUNT`` and
    ``-X cpu_count``); on 3.11 and 3.12 the affinity mask gives the same
    number, so ``taskset -c 0`` means one worker on every version.
    """
    process_cpu_count = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return process_cpu_count() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except OSError:
        return os.cpu_count() or 1

