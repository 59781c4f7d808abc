"""The interpreter's exit, as concurrent.futures has it: submitted work
finishes first, and submitting from an atexit callback is refused. Each case
runs a script in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

TASK = "def say(word):\n    print(word, flush=True)\n    return word\n"


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=100, check=False
    )


@pytest.mark.parametrize("shutdown", ["", "ex.shutdown(wait=False)"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_submitted_work_finishes_before_exit(method: str, shutdown: str) -> None:
    # With shutdown(wait=False) the stdlib's ProcessPoolExecutor hangs here
    # (cpython gh-83386); shoal's finishes the work and exits.
    done = run(
        TASK
        + f"""
import shoal
ex = shoal.Executor(2, start_method={method!r})
ex.submit(say, "apple")
{shutdown}
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "apple"
    assert done.stderr == ""


def test_an_atexit_callback_cannot_submit() -> None:
    done = run(
        """
import atexit
@atexit.register
def late():
    try:
        ex.submit(id, None)
    except RuntimeError as e:
        print("refused:", e)
import shoal
ex = shoal.Executor(1)
ex.submit(id, 1).result()
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused: cannot schedule new futures after interpreter shutdown"


def test_a_collected_executor_finishes_its_map() -> None:
    done = run(
        """
import gc, shoal
ex = shoal.Executor(2)
results = ex.map(abs, range(-5, 5))
del ex
gc.collect()
print(list(results))
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[5, 4, 3, 2, 1, 0, 1, 2, 3, 4]"
