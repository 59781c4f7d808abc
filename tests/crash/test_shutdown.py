"""Shutdown always returns: terminate escalates, exit cleans up."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_terminate_kills_workers_that_ignore_sigterm(method: str, tmp_path) -> None:
    p = shoal.Pool(2, start_method=method)
    ready = [str(tmp_path / f"ready-{i}") for i in range(2)]
    r = p.map_async(tasks.ignore_sigterm_and_block, ready, chunksize=1)
    pids = [w.pid for w in p._pool]
    for path in ready:  # both tasks ignore SIGTERM and are blocked
        tasks.wait_for(path)
    p.terminate()  # SIGTERM is ignored; SIGKILL after the grace period
    p.join()
    with pytest.raises(shoal.PoolTerminatedError):
        r.get(timeout=1)
    for pid in pids:
        assert not p._engine.is_alive(pid)


def test_join_after_terminate_and_twice_returns() -> None:
    p = shoal.Pool(1)
    p.terminate()
    p.join()
    p.join()
    p.terminate()


def test_close_join_waits_for_queued_work() -> None:
    p = shoal.Pool(2)
    r = p.map_async(tasks.square, range(1000), chunksize=1)
    p.close()
    p.join()
    assert r.ready()
    assert r.get(timeout=0) == [i * i for i in range(1000)]


SCRIPT = """
import sys, time, shoal

def slow(x):
    time.sleep(60)

pool = shoal.Pool(2, start_method=sys.argv[1])
print(*[w.pid for w in pool._pool], pool._backend.zygote_pid or "", flush=True)
running = pool.map_async(slow, range(4))
# No close(), no join(): the interpreter exits with tasks running.
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_unclosed_pool_is_cleaned_up_at_interpreter_exit(method: str) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, method], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if not _gone(p)]
        time.sleep(0.01)
    print(f"{method}: exit with running tasks took {time.monotonic() - t0:.2f} s")
