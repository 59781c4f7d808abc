"""The Executor rows: shoal.Executor beside concurrent.futures'
ProcessPoolExecutor, loky's reusable executor and pebble's ProcessPool.

Each row warms the executor first (its workers started, one map done, a
full garbage collection: see ``adapters.settle``), then
times one thing a futures user does: a storm of ``submit`` calls, ``map``
with its defaults (chunksize=1 in the stdlib and loky; shoal chunks
automatically), ``as_completed`` over skewed tasks, and ``asyncio.gather``
over ``loop.run_in_executor`` calls. pebble's pool is not an Executor:
its users call ``schedule`` (and ``asyncio.wrap_future`` on what it returns).

The counts are 20,000, not a million: ProcessPoolExecutor pays ~100 µs per
item at chunksize 1, so a million would cost it minutes per run; 20,000
shows the ratio in seconds.

Targets (issue 15): ahead of each peer on every row; under 3 µs per
``submit``; ``gather`` at least 10x faster than with ProcessPoolExecutor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Future, as_completed, wait
from contextlib import contextmanager
from typing import Any

import workloads as W
from adapters import WORKERS, settle
from rows import Row, Target, ahead_of_each, at_most, faster_than, figure
from rows_pool import ideal_greedy

LIBS = ("concurrent.futures", "loky", "pebble", "shoal.Executor")
PEERS = ("concurrent.futures", "loky", "pebble")
N = 20_000
SKEWED = 200


class Submitter:
    """``submit`` and ``map`` with each library's defaults."""

    def __init__(self, lib: str, ex: Any) -> None:
        self.pebble = lib == "pebble"
        self.ex = ex

    def submit(self, fn: Any, *args: Any) -> Future:
        if self.pebble:
            return self.ex.schedule(fn, args=args)
        return self.ex.submit(fn, *args)

    def map(self, fn: Any, it: Any) -> Iterator[Any]:
        if self.pebble:
            return self.ex.map(fn, it).result()
        return self.ex.map(fn, it)


@contextmanager
def executor(lib: str) -> Iterator[Submitter]:
    """A warm executor of WORKERS workers, shut down on exit."""
    if lib == "concurrent.futures":
        from concurrent.futures import ProcessPoolExecutor

        ex: Any = ProcessPoolExecutor(WORKERS)
    elif lib == "loky":
        import loky

        ex = loky.get_reusable_executor(max_workers=WORKERS)
    elif lib == "pebble":
        import pebble

        ex = pebble.ProcessPool(max_workers=WORKERS)
    elif lib == "shoal.Executor":
        import shoal

        ex = shoal.Executor(WORKERS)
    else:
        raise ValueError(lib)
    s = Submitter(lib, ex)
    list(s.map(W.square, range(100)))
    settle()
    try:
        yield s
    finally:
        if lib == "pebble":
            ex.close()
            ex.join()
        else:
            ex.shutdown(wait=True)


def w_submit(lib: str) -> dict:
    with executor(lib) as s:
        t0 = time.perf_counter()
        futures = [s.submit(W.square, i) for i in range(N)]
        t1 = time.perf_counter()
        wait(futures)
        dt = time.perf_counter() - t0
    assert futures[-1].result() == (N - 1) ** 2
    return {"time": dt, "per_submit_us": (t1 - t0) / N * 1e6}


def w_map(lib: str) -> dict:
    with executor(lib) as s:
        t0 = time.perf_counter()
        out = list(s.map(W.square, range(N)))
        dt = time.perf_counter() - t0
    assert out[-1] == (N - 1) ** 2
    return {"time": dt, "per_task_us": dt / N * 1e6}


def w_as_completed(lib: str) -> dict:
    with executor(lib) as s:
        t0 = time.perf_counter()
        got = sum(1 for f in as_completed([s.submit(W.skewed, i) for i in range(SKEWED)]) if f.result() >= 0)
        dt = time.perf_counter() - t0
    assert got == SKEWED
    ideal = ideal_greedy([W.skewed_duration(i) for i in range(SKEWED)], WORKERS)
    return {"time": dt, "vs_ideal": dt / ideal}


async def _gather(s: Submitter) -> list[int]:
    loop = asyncio.get_running_loop()
    if s.pebble:
        calls = [asyncio.wrap_future(s.submit(W.square, i)) for i in range(N)]
    else:
        calls = [loop.run_in_executor(s.ex, W.square, i) for i in range(N)]
    return await asyncio.gather(*calls)


def w_gather(lib: str) -> dict:
    with executor(lib) as s:
        t0 = time.perf_counter()
        out = asyncio.run(_gather(s))
        dt = time.perf_counter() - t0
    assert out[-1] == (N - 1) ** 2
    return {"time": dt, "per_task_us": dt / N * 1e6}


SHOAL = "shoal.Executor"
AHEAD = tuple(ahead_of_each(SHOAL, PEERS, "Executor"))
SUBMIT_US = Target("per submit ≤ 3 µs", lambda r: figure(r, SHOAL, "per_submit_us"), at_most(3.0))
GATHER_VS_PPE = faster_than(SHOAL, "concurrent.futures", 10, "PPE/Executor")

ROWS: dict[str, Row] = {
    "exec_submit": Row(
        w_submit, f"15. submit storm: {N // 1000}k submits, then wait", 5, 120, LIBS, (*AHEAD, SUBMIT_US)
    ),
    "exec_map": Row(w_map, f"16. Executor.map, {N // 1000}k ints, defaults", 3, 120, LIBS, AHEAD),
    "exec_as_completed": Row(
        w_as_completed, f"17. as_completed, {SKEWED} skewed tasks (2 ms, 1 in 10 60 ms)", 3, 120, LIBS, AHEAD
    ),
    "exec_gather": Row(
        w_gather, f"18. asyncio.gather over {N // 1000}k run_in_executor", 3, 120, LIBS, (*AHEAD, GATHER_VS_PPE)
    ),
}
