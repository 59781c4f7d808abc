"""No leaks: pools created and closed many times leave nothing behind, and
many tiny tasks keep the parent's and the workers' memory flat.

CI runs small counts; benches/leaks.py runs the full ones (1,000 cycles,
10 million tasks).
"""

from __future__ import annotations

import gc
import os

import pytest

import shoal
import tasks
from procfs import shm_held

pytestmark = pytest.mark.timeout(300)


def snapshot() -> dict[str, int]:
    """Descriptors, threads, live child processes and zombies of this
    process. /dev/shm is the machine's, not this process's: see shm_held."""
    me = os.getpid()
    children = zombies = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            children += 1
            zombies += fields[0] == "Z"
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "children": children,
        "zombies": zombies,
    }


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_create_map_close_cycles_leave_nothing_behind(method: str) -> None:
    def cycle() -> None:
        p = shoal.Pool(2, start_method=method)
        assert p.map(tasks.square, range(20)) == [i * i for i in range(20)]
        p.apply_async(tasks.square, (3,), callback=lambda _: None).get(timeout=30)
        p.close()
        p.join()

    cycle()  # imports, lazily created module state
    gc.collect()
    before, shm_before = snapshot(), shm_held()
    for _ in range(15 if method == "spawn" else 40):
        cycle()
    gc.collect()
    after = snapshot()
    assert after == before
    assert shm_held() - shm_before == set()


def test_many_tiny_tasks_keep_memory_flat() -> None:
    with shoal.Pool(2) as p:
        workers = [w.pid for w in p._pool]
        n = 0
        samples = []
        for _ in p.imap_unordered(tasks.square, range(600_000), chunksize=100):
            n += 1
            if n in (100_000, 600_000):
                samples.append((rss_kib(), [rss_kib(w) for w in workers]))
        assert n == 600_000
    (parent0, workers0), (parent1, workers1) = samples
    # Growth after warm-up, in KiB: flat means well under a few MB.
    assert parent1 - parent0 < 8 * 1024, samples
    for w0, w1 in zip(workers0, workers1, strict=True):
        assert w1 - w0 < 8 * 1024, samples
