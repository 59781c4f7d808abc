"""Functions and classes defined in ``__main__`` (a script, ``python -c``, a
REPL) work under every start method, and a script without an
``if __name__ == "__main__":`` guard does not re-run in the workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = """
import os, sys, shoal

method = sys.argv[1]
print("script body ran in", "parent" if os.environ.get("SHOAL_TEST_PARENT") else "a worker?!", flush=True)


class Point:
    def __init__(self, x):
        self.x = x


def double(p):
    return Point(p.x * 2)


state = {}


def setup(value):
    state["value"] = value


def read_state(_):
    return state.get("value")


k = 10
pool = shoal.Pool(2, start_method=method, initializer=setup, initargs=("from init",))
out = pool.map(double, [Point(i) for i in range(5)])
assert all(type(p) is Point for p in out), [type(p) for p in out]
print("points", [p.x for p in out])
print("lambda", pool.map(lambda x: x + k, range(3)))
print("init", set(pool.map(read_state, range(4), chunksize=1)))
pool.close()
pool.join()
print("DONE")
"""


def _run(args: list[str], tmp_path: Path) -> str:
    env = {**__import__("os").environ, "SHOAL_TEST_PARENT": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=100, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_script_without_main_guard(method: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = _run([str(script), method], tmp_path)
    assert out.count("script body ran in") == 1, out
    assert "a worker?!" not in out
    assert "points [0, 2, 4, 6, 8]" in out
    assert "lambda [10, 11, 12]" in out
    assert "init {'from init'}" in out
    assert out.rstrip().endswith("DONE")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_python_dash_c(method: str, tmp_path: Path) -> None:
    out = _run(["-c", SCRIPT, method], tmp_path)
    assert out.count("script body ran in") == 1, out
    assert out.rstrip().endswith("DONE")


def test_interactive_session(tmp_path: Path) -> None:
    # A REPL reading from a pipe: definitions live in __main__ as in a notebook.
    session = "\n".join(
        [
            "import shoal",
            "def f(x):",
            "    return x * 3",
            "",
            "class Box:",
            "    def __init__(self, v): self.v = v",
            "",
            "p = shoal.Pool(2, start_method='spawn')",
            "print('R', p.map(f, range(4)), [b.v for b in p.map(Box, range(3))])",
            "p.terminate()",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-i", "-q"], input=session + "\n", capture_output=True, text=True, timeout=100, cwd=tmp_path
    )
    assert "R [0, 3, 6, 9] [0, 1, 2]" in proc.stdout, proc.stderr


def test_default_start_method_is_fork_unless_an_engine_is_running(tmp_path: Path) -> None:
    script = """
import shoal
from shoal import _shoal

def square(x):
    return x * x

assert _shoal.live_threads() == 0
a = shoal.Pool(1)
b = shoal.Pool(1)  # a's engine thread is running: forking now would be unsafe
print("first", a._start_method, "second", b._start_method)
assert b.apply_async(square, (3,), callback=lambda _: None).get() == 9
for p in (a, b):
    p.close()
    p.join()
print("threads left", _shoal.live_threads())
c = shoal.Pool(1)
print("after", c._start_method)
c.terminate()
"""
    out = _run(["-c", script], tmp_path)
    assert "first fork second forkserver" in out, out
    assert "threads left 0" in out, out
    assert "after fork" in out, out


def test_pools_made_in_a_loop_at_the_top_level_are_freed(tmp_path: Path) -> None:
    # Each forked pool kept a copy of the script's globals, the previous
    # pool among them, and so every pool before it: 3 descriptors a pool
    # stayed open, EMFILE after ~80 pools under ulimit -n 256.
    script = """
import os, shoal

def square(x):
    return x * x

before = len(os.listdir("/proc/self/fd"))
for i in range(30):
    with shoal.Pool(1) as pool:
        assert pool.map(square, [i]) == [i * i]
print("method", pool._start_method, "descriptors gained", len(os.listdir("/proc/self/fd")) - before)
"""
    out = _run(["-c", script], tmp_path)
    assert "method fork" in out, out
    # The last pool's engine, no more.
    gained = int(out.split("descriptors gained")[1].split()[0])
    assert gained <= 4, out
