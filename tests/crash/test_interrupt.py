"""Ctrl-C and the death of the parent, in child interpreters we signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(120)

PRELUDE = r"""
import os, sys, time, shoal

def slow(x):
    time.sleep(60)
    return x

pool = shoal.Pool(2, start_method=sys.argv[1])
zygote = pool._backend.zygote_pid
pids = [w.pid for w in pool._pool] + ([zygote] if zygote else [])
print("pids", *pids, flush=True)
"""

BLOCKING = {
    "map": "pool.map(slow, range(4))",
    "get": "pool.apply_async(slow, (1,)).get()",
    "wait": "pool.map_async(slow, range(4)).wait()",
    "join": "pool.map_async(slow, range(4)); pool.close(); pool.join()",
    "next": "next(pool.imap(slow, range(4)))",
}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], limit: float = 10.0) -> float:
    t0 = time.monotonic()
    while any(_alive(p) for p in pids):
        assert time.monotonic() - t0 < limit, [p for p in pids if _alive(p)]
        time.sleep(0.01)
    return time.monotonic() - t0


def _start(code: str, method: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal job
    )
    line = proc.stdout.readline()
    assert line.startswith("pids"), line + proc.stderr.read()
    pids = [int(p) for p in line.split()[1:]]
    assert proc.stdout.readline().strip() == "blocking"
    return proc, pids


@pytest.mark.parametrize("call", list(BLOCKING))
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_ctrl_c_interrupts_every_blocking_call(method: str, call: str) -> None:
    code = PRELUDE + (
        'print("blocking", flush=True)\n'
        "time.sleep(0.2)\n"  # let the tasks start: the interrupt must land inside the call
        f"try:\n    {BLOCKING[call]}\n"
        'except KeyboardInterrupt:\n    print("interrupted", flush=True)\n    raise\n'
    )
    proc, pids = _start(code, method)
    time.sleep(0.5)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert "interrupted" in out, err
    assert proc.returncode != 0
    # Only the parent's traceback: the workers printed nothing.
    assert err.count("Traceback") == 1, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    _wait_gone(pids)
    print(f"{method} {call}: SIGINT to exit {elapsed:.3f} s")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_workers_exit_when_the_parent_is_killed(method: str) -> None:
    code = PRELUDE + ('r = pool.map_async(slow, range(4))\nprint("blocking", flush=True)\ntime.sleep(60)\n')
    proc, pids = _start(code, method)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    took = _wait_gone(pids)
    print(f"{method}: parent SIGKILL to last worker gone {took:.3f} s")
