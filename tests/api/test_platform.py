"""The machine a pool runs on: the CPUs it may use, and a kernel that cannot
host it.

Each test runs a plain script in a fresh interpreter, as a user would, so
that what it changes (CPU affinity, a seccomp filter) stays in that process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=100
    )


AFFINITY_SCRIPT = """
    import multiprocessing, os, sys
    from shoal import Pool

    # What `taskset -c <one cpu> python script.py` does.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with Pool() as pool:
        shoal_workers = pool._processes
        assert sorted(pool.map(abs, [-3, 1, -2])) == [1, 2, 3]
    with multiprocessing.Pool() as pool:
        stdlib_workers = pool._processes
    print(shoal_workers, stdlib_workers)
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs to restrict the process to one")
def test_pool_under_taskset_one_cpu_starts_one_worker() -> None:
    proc = _run(AFFINITY_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    shoal_workers, stdlib_workers = map(int, proc.stdout.split())
    assert shoal_workers == 1
    if sys.version_info >= (3, 13):
        # 3.13's Pool counts the CPUs the process may use, as shoal does;
        # 3.11 and 3.12 count every CPU of the machine.
        assert shoal_workers == stdlib_workers
