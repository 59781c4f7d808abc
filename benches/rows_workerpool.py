"""The WorkerPool rows: what only an MPIRE-style pool has.

* A small map with the default ``keep_alive=False``, which starts and stops
  the workers for that one map, beside multiprocessing.Pool's create, map
  and close of the same work. The function is the script's own (it lives
  in ``__main__``, as a user's does), so a library that cannot send it by
  reference pays for that here.
* The same small map as a whole script, timed from outside: a fresh
  interpreter imports the library, creates the pool, maps and closes, as
  ``python script.py`` does. Row 10 runs with the library already imported;
  here its import counts too, as a user's first impression of it does.
* Progress bar and insights on a million tiny tasks: the same warm pool
  maps with and without, alternately, in one interpreter, so the host's
  drift falls on both sides equally.

Targets (issue 14): the small map no slower than multiprocessing.Pool and at
most 0.3x MPIRE; progress bar and insights under 5% extra.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import workloads as W
from adapters import WORKERS, worker_pool_class
from rows import Row, Target, at_most, figure, within

SMALL = 1_000
TINY_TASKS = 1_000_000
# Pairs of maps (without, with) per interpreter. A map of a million ints
# takes ~70 ms, and what a bar adds is a fixed ~0.5 ms (benches/
# progress_overhead.py), under 1%: three pairs left the ratio to the
# machine's noise (1.08 to 1.13 in runs of unchanged code), and fifteen
# still gave 0.97 to 1.10 from one interpreter to the next; 31 cost four
# seconds.
PAIRS = 31


def script_function() -> Callable[[int], int]:
    """The script's own square (run.py, which every row runs as ``__main__``)."""
    return sys.modules["__main__"].script_square


def w_small_map(lib: str) -> dict:
    f = script_function()
    t0 = time.perf_counter()
    if lib in ("multiprocessing", "shoal"):
        if lib == "shoal":
            import shoal

            p = shoal.Pool(WORKERS)
        else:
            import multiprocessing

            p = multiprocessing.Pool(WORKERS)
        out = p.map(f, range(SMALL))
        p.close()
        p.join()
    else:
        # keep_alive=False, the default: this map starts and stops the workers.
        with worker_pool_class(lib)(n_jobs=WORKERS) as wp:
            out = wp.map(f, range(SMALL))
    dt = time.perf_counter() - t0
    assert out[-1] == (SMALL - 1) ** 2
    return {"time": dt}


# The whole script of row 10b, per library: import, create, map, close.
SCRIPTS = {
    "multiprocessing": "import multiprocessing\nPool = lambda: multiprocessing.Pool({n})",
    "shoal": "import shoal\nPool = lambda: shoal.Pool({n})",
    "mpire": "from mpire import WorkerPool\nPool = lambda: WorkerPool(n_jobs={n})",
    "shoal.WorkerPool": "from shoal import WorkerPool\nPool = lambda: WorkerPool(n_jobs={n})",
}
SCRIPT_BODY = """
def square(x):
    return x * x

if __name__ == "__main__":
    with Pool() as pool:
        assert pool.map(square, range({small}))[-1] == ({small} - 1) ** 2
"""


def w_script(lib: str) -> dict:
    text = SCRIPTS[lib].format(n=WORKERS) + SCRIPT_BODY.format(small=SMALL)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", text], check=True, timeout=60)
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    bare = time.perf_counter() - t0
    return {"time": dt, "interpreter": bare}


def _paired(without: Callable[[], Any], with_: Callable[[], Any]) -> dict:
    """Median times of ``without`` and ``with_``, run alternately (the order
    flips every pair so neither side always runs second)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(PAIRS):
        for on in (False, True) if i % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            (with_ if on else without)()
            times[on].append(time.perf_counter() - t0)
    base, time_on = statistics.median(times[False]), statistics.median(times[True])
    return {"time": time_on, "base": base, "with_over_without": time_on / base}


def w_progress_bar(lib: str) -> dict:
    with worker_pool_class(lib)(n_jobs=WORKERS, keep_alive=True) as wp:
        wp.map(W.square, range(100))
        return _paired(
            lambda: wp.map(W.square, range(TINY_TASKS)),
            lambda: wp.map(W.square, range(TINY_TASKS), progress_bar=True),
        )


def w_insights(lib: str) -> dict:
    cls = worker_pool_class(lib)
    with (
        cls(n_jobs=WORKERS, keep_alive=True) as plain,
        cls(n_jobs=WORKERS, keep_alive=True, enable_insights=True) as wp,
    ):
        plain.map(W.square, range(100))
        wp.map(W.square, range(100))
        out = _paired(lambda: plain.map(W.square, range(TINY_TASKS)), lambda: wp.map(W.square, range(TINY_TASKS)))
        assert wp.get_insights()["n_completed_tasks"]
        return out


def _extra_at_most(bound: float) -> Target:
    return Target(
        f"with/without ≤ {bound:g}x",
        lambda r: figure(r, "shoal.WorkerPool", "with_over_without"),
        at_most(bound),
    )


ROWS: dict[str, Row] = {
    "wp_small_map": Row(
        w_small_map,
        f"10. small map, {SMALL} ints, keep_alive=False: create, map, close; function in __main__",
        7,
        60,
        ("multiprocessing", "mpire", "shoal", "shoal.WorkerPool"),
        (
            within("shoal.WorkerPool", "multiprocessing", 1.0, "WorkerPool/mp.Pool"),
            within("shoal.WorkerPool", "mpire", 0.3, "WorkerPool/mpire"),
        ),
    ),
    "wp_script": Row(
        w_script,
        f"10b. the same as a whole script: python -c (import, create, map {SMALL} ints, close)",
        9,
        60,
        ("multiprocessing", "mpire", "shoal", "shoal.WorkerPool"),
    ),
    "wp_progress_bar": Row(
        w_progress_bar,
        f"11. map, {TINY_TASKS // 1_000_000}M ints, warm: progress_bar=True (vs False)",
        5,
        120,
        ("shoal.WorkerPool",),
        (_extra_at_most(1.05),),
    ),
    "wp_insights": Row(
        w_insights,
        f"11. map, {TINY_TASKS // 1_000_000}M ints, warm: enable_insights=True (vs False)",
        5,
        120,
        ("shoal.WorkerPool",),
        (_extra_at_most(1.05),),
    ),
}
