"""User code that calls ``os.fork()`` while a pool is alive."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = r"""
import os, sys, shoal

def square(x):
    return x * x

pool = shoal.Pool(2, start_method=sys.argv[1])
assert pool.map(square, range(4)) == [0, 1, 4, 9]
before = sorted(w.pid for w in pool._pool)

pid = os.fork()
if pid == 0:
    # The child inherits the parent's pool object but not its engine thread.
    try:
        pool.map(square, [1])
        print("child used the parent's pool?!", flush=True)
    except RuntimeError as exc:
        print("child refused:", exc, flush=True)
    # A pool of its own works.
    with shoal.Pool(1) as mine:
        print("child's own pool:", mine.map(square, [3]), flush=True)
    # Fall off the end: normal interpreter exit, finalizers and atexit run.
else:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    # The parent's workers are untouched and the pool still works.
    assert sorted(w.pid for w in pool._pool) == before
    print("parent after child:", pool.map(square, range(5)), flush=True)
    pool.close()
    pool.join()
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_forked_child_neither_deadlocks_nor_harms_the_parent_pool(method: str, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, method], capture_output=True, text=True, timeout=100, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "child refused: this pool belongs to the process that created it" in out, out
    assert "child's own pool: [9]" in out
    assert "parent after child: [0, 1, 4, 9, 16]" in out
