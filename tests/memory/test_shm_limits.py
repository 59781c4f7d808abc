"""Shared memory within the limits a user's process runs under: an
address-space limit, a descriptor limit, a parent that is not dumpable;
and kept only as long as something uses it."""

from __future__ import annotations

import gc
import os
import resource
import subprocess
import sys

import pytest

import shoal
import tasks
from shoal import _shm

np = pytest.importorskip("numpy", reason="numpy is the common source of large buffers")

MB = 1 << 20


def _run(
    script: str, *args: str, limits: dict[int, int] | None = None, no_ptrace: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter, under ``limits`` (setrlimit),
    and without the capability to look into other processes (as any user
    but root) if ``no_ptrace``."""

    def limit() -> None:
        for which, value in (limits or {}).items():
            resource.setrlimit(which, (value, value))
        if no_ptrace:
            import ctypes

            # PR_CAPBSET_DROP CAP_SYS_PTRACE: gone from every program
            # executed from here on (the script, spawned workers).
            ctypes.CDLL(None).prctl(24, 19, 0, 0, 0)

    return subprocess.run(
        [sys.executable, "-c", script, *args], preexec_fn=limit, capture_output=True, text=True, timeout=150
    )


# -- an address-space limit (ulimit -v) --------------------------------------

ADDRESS_SPACE_SCRIPT = """
import sys
import numpy as np
if sys.argv[1] == "shoal":
    from shoal import Pool
else:
    from multiprocessing import Pool

def double(a):
    return a * 2

if __name__ == "__main__":
    with Pool(8) as pool:
        out = pool.map(double, [np.full(1 << 16, float(i)) for i in range(32)])
    assert [float(a[-1]) for a in out] == [2.0 * i for i in range(32)]
    print("ok")
"""


@pytest.mark.timeout(300)
def test_pool_of_eight_works_under_an_address_space_limit() -> None:
    # Before, each arena mapped 1 GiB: Pool(8) needed 11 GiB of address
    # space and failed with a bare OSError(ENOMEM) where the stdlib works.
    limits = {resource.RLIMIT_AS: 1 << 30}
    for lib in ("multiprocessing", "shoal"):
        proc = _run(ADDRESS_SPACE_SCRIPT, lib, limits=limits)
        assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), f"{lib}: {proc.stderr[-2000:]}"


def test_hot_bytes_shrink_to_fit_an_address_space_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    assert _shm._hot_sizes(4) == (_shm.HOT_ARGS, _shm.HOT_RESULTS) or soft != resource.RLIM_INFINITY
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + 64 * MB, hard))
        hot_args, hot_results = _shm._hot_sizes(4)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert hot_args + 4 * hot_results <= 16 * MB


# -- kept only as long as something uses it -----------------------------------


def _pages(fds: list[int], inodes: set[int] | None = None) -> int:
    """Bytes of memory the arenas open as ``fds`` hold (those of ``inodes``)."""
    return sum(os.fstat(fd).st_blocks * 512 for fd in fds if inodes is None or os.fstat(fd).st_ino in inodes)


def _mapped_arenas() -> set[int]:
    """Inodes of the shoal arenas this process has mapped."""
    with open("/proc/self/maps") as maps:
        return {int(line.split()[4]) for line in maps if "/memfd:shoal" in line}


def _arena_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal")
        except OSError:
            continue
    return n


@pytest.mark.timeout(120)
def test_a_kept_result_holds_only_its_own_block() -> None:
    p = shoal.Pool(2)
    out = p.map(tasks.filled, [(MB // 8 * 4, float(i)) for i in range(40)], chunksize=1)  # 40 x 4 MB
    fds = [os.dup(a.fd) for a in (p._buffers.args, *p._buffers.results)]  # to read their sizes later
    try:
        kept = out[7]
        del out
        gc.collect()
        # A live pool gives freed pages back beyond its hot bytes.
        assert _pages(fds) <= 4 * MB + len(fds) * _shm.HOT_RESULTS + _shm.HOT_ARGS
        p.terminate()
        p.join()
        del p
        gc.collect()
        # Before, the kept array's arena stayed whole (80 MB here, 416 MB
        # for 100 results of 8 MB). Now: its own block, and a few pages of
        # the arena's tables.
        assert 4 * MB <= _pages(fds, _mapped_arenas()) <= 4 * MB + _shm.PAYLOAD
        assert float(kept[0]) == 7.0
        kept += 1  # still writable and private
        del kept
        gc.collect()
        assert not _mapped_arenas() & {os.fstat(fd).st_ino for fd in fds}
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.timeout(60)
def test_a_result_that_cannot_be_mapped_arrives_as_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # As when vm.max_map_count mappings are in use, or no address space is left.
    with shoal.Pool(2) as p:

        def no_mapping(fd: int, length: int, offset: int) -> int:
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(_shm._shoal, "mmap_shared", no_mapping)
        out = p.map(tasks.filled, [(MB // 8, float(i)) for i in range(6)], chunksize=1)
        monkeypatch.undo()
        assert [float(a[0]) for a in out] == [float(i) for i in range(6)]
        assert all(a.flags.writeable for a in out)
        # The blocks were freed as the copies were made.
        assert all(not arena.busy() for arena in p._buffers.results)


DESCRIPTORS_SCRIPT = """
import sys
import shoal

def big(i):
    import numpy as np
    return np.full(1 << 17, float(i))  # 1 MB: through shared memory

kept = []
for i in range(int(sys.argv[1])):
    with shoal.Pool(2) as pool:
        kept.append(pool.apply(big, (i,)))
assert [float(a[0]) for a in kept] == [float(i) for i in range(len(kept))]
print("ok")
"""


@pytest.mark.timeout(120)
def test_arrays_kept_from_many_pools_hold_no_descriptors() -> None:
    # Before, each kept array held its arena's descriptor: under ulimit -n
    # 256, Pool() failed with EMFILE at the 204th pool; here at about 50.
    proc = _run(DESCRIPTORS_SCRIPT, "120", limits={resource.RLIMIT_NOFILE: 64})
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr[-2000:]


@pytest.mark.timeout(60)
def test_a_kept_result_holds_no_descriptor() -> None:
    before = _arena_fds()
    kept = []
    for i in range(5):
        with shoal.Pool(1) as p:
            kept.append(p.apply(tasks.filled, ((MB // 8, float(i)),)))
        del p
    gc.collect()
    assert _arena_fds() == before
    assert [float(a[0]) for a in kept] == [0.0, 1.0, 2.0, 3.0, 4.0]


# -- a parent that is not dumpable -------------------------------------------

UNDUMPABLE_SCRIPT = """
import ctypes, sys
import numpy as np
import shoal

def double(a):
    return a * 2

with open("/proc/self/status") as f:
    caps = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
if caps & (1 << 19):
    sys.exit("skip: CAP_SYS_PTRACE could not be dropped, and it opens /proc/<pid>/fd of any process")
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE 0, as a hardened service does
with shoal.Pool(2, start_method=sys.argv[1]) as pool:
    out = pool.map(double, [np.full(1 << 14, float(i)) for i in range(8)], chunksize=1)  # 128 KiB each
    assert [float(a[0]) for a in out] == [2.0 * i for i in range(8)]
    assert pool.apply(double, (out[3],))[0] == 12.0
print("ok")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_parent_that_is_not_dumpable_passes_large_arrays(method: str) -> None:
    # Before, spawn and forkserver workers failed every array of 64 KiB or
    # more: RuntimeError, cannot open /proc/<pid>/fd.
    proc = _run(UNDUMPABLE_SCRIPT, method, no_ptrace=True)
    if proc.stderr.startswith("skip: "):
        pytest.skip(proc.stderr[6:].strip())
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr[-2000:]
