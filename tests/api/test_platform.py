"""The machine a pool runs on: the CPUs it may use, and a kernel that cannot
host it.

Each test runs a plain script in a fresh interpreter, as a user would, so
that what it changes (CPU affinity, a seccomp filter) stays in that process.
"""

from __future__ import annotations

import errno
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


CPU_COUNT_SCRIPT = """
    import os
    import shoal
    from shoal import _platform

    with shoal.Pool() as pool:
        pool_workers = pool._processes
    with shoal.Executor() as executor:
        executor_workers = executor._max_workers
    print(_platform.usable_cpus(), pool_workers, executor_workers, len(os.sched_getaffinity(0)))
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.version_info < (3, 13), reason="os.process_cpu_count() and PYTHON_CPU_COUNT are new in 3.13")
@pytest.mark.parametrize("how", ["PYTHON_CPU_COUNT", "-X cpu_count"])
def test_default_worker_count_follows_process_cpu_count(how: str) -> None:
    # 3.13's override of the CPU count, by environment or option, sizes
    # every default pool, as it sizes the stdlib's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_CPU_COUNT"}
    options = []
    if how == "PYTHON_CPU_COUNT":
        env["PYTHON_CPU_COUNT"] = "3"
    else:
        options = ["-X", "cpu_count=3"]
    proc = subprocess.run(
        [sys.executable, *options, "-c", textwrap.dedent(CPU_COUNT_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["3", "3", "3"]


@pytest.mark.timeout(120)
def test_default_worker_count_is_the_usable_cpus() -> None:
    # Without an override: the affinity mask, on every version (3.11 and
    # 3.12 have no os.process_cpu_count; it reads the same mask).
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_CPU_COUNT"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CPU_COUNT_SCRIPT)], capture_output=True, text=True, timeout=100, env=env
    )
    assert proc.returncode == 0, proc.stderr
    usable, pool_workers, executor_workers, affinity = map(int, proc.stdout.split())
    assert usable == pool_workers == executor_workers == affinity


# Installs a seccomp filter that makes pidfd_open (434 on every Linux
# architecture) fail with the errno given, as a kernel before 5.3 (ENOSYS)
# or a container runtime's seccomp profile (EPERM or ENOSYS) does, then
# creates a pool as a user's script would.
SECCOMP_SCRIPT = """
    import ctypes, multiprocessing, sys

    refuse_with, method = int(sys.argv[1]), sys.argv[2]

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
    SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
    program = (SockFilter * 4)(
        SockFilter(BPF_LD_W_ABS, 0, 0, 0),  # the system call's number
        SockFilter(BPF_JEQ_K, 0, 1, 434),  # pidfd_open?
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | refuse_with),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    )
    prog = SockFprog(len(program), program)
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog)
    ):
        print("no seccomp:", ctypes.get_errno())
        sys.exit(3)

    from shoal import Pool, _shoal

    try:
        with Pool(2, start_method=method) as pool:
            pool.map(abs, [1, 2])
    except OSError as e:
        print(type(e).__name__, e.errno)
        print(e)
    else:
        print("no error")
    # Nothing was started: no worker, zygote or engine thread to clean up.
    print(len(multiprocessing.active_children()), _shoal.live_threads())
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("refuse_with", [errno.ENOSYS, errno.EPERM], ids=["ENOSYS", "EPERM"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_where_pidfd_open_is_refused_says_what_is_required(refuse_with: int, method: str) -> None:
    proc = _run(SECCOMP_SCRIPT, str(refuse_with), method)
    if proc.returncode == 3:
        pytest.skip(f"cannot install a seccomp filter here ({proc.stdout.strip()})")
    assert proc.returncode == 0, proc.stderr
    kind, message, leftovers = proc.stdout.strip().split("\n")
    # OSError(EPERM, ...) is a PermissionError, as Python makes it.
    assert kind == ("PermissionError" if refuse_with == errno.EPERM else "OSError") + f" {refuse_with}"
    # One sentence: what is required, what was refused, and what to do.
    assert "Linux 5.3" in message
    assert "pidfd_open" in message
    assert "seccomp" in message
    assert os.strerror(refuse_with) in message
    assert "multiprocessing.Pool" in message
    assert leftovers == "0 0"
