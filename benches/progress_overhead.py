"""What a progress bar and insights cost a map of a million tiny tasks.

Issue 14's target: under 5% more with a bar (or insights) than without.
Runs, alternating so that load on the machine hits every variant alike, a
map of ``N`` one-line tasks on a warm pool of 2 workers:

* ``shoal.WorkerPool.map`` without a bar, with one, with insights, and
  with both;
* ``shoal.Pool.map`` without a bar and with one.

Then what a bar costs per map, whatever its size (drawing it, its thread,
closing it), from maps of 10 tasks.

The bar draws to stderr; send it to /dev/null to keep the terminal quiet:

    .venv/bin/python benches/progress_overhead.py 2>/dev/null
"""

from __future__ import annotations

import statistics
import sys
import time

import shoal

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000


def task(x: int) -> int:
    return x + 1


def main() -> None:
    items = range(N)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def timed(name: str, call: object) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        got = call()  # type: ignore[operator]
        times.setdefault(name, []).append(time.perf_counter() - t0)
        cpu.setdefault(name, []).append(time.process_time() - c0)
        assert len(got) == N

    with (
        shoal.WorkerPool(2, keep_alive=True) as wp,
        shoal.WorkerPool(2, keep_alive=True, enable_insights=True) as wpi,
        shoal.Pool(2) as pool,
    ):
        # Warm: workers started, the function sent.
        wp.map(task, range(1000))
        wpi.map(task, range(1000))
        pool.map(task, range(1000))
        for _ in range(ROUNDS):
            timed("WorkerPool", lambda: wp.map(task, items))
            timed("WorkerPool + bar", lambda: wp.map(task, items, progress_bar=True))
            timed("WorkerPool + insights", lambda: wpi.map(task, items))
            timed("WorkerPool + bar + insights", lambda: wpi.map(task, items, progress_bar=True))
            timed("Pool", lambda: pool.map(task, items))
            timed("Pool + bar", lambda: pool.map(task, items, progress_bar=True))
        insights = wpi.get_insights()
        assert sum(insights["n_completed_tasks"]) == 2 * ROUNDS * N + 1000
    # Wall time, and the parent's CPU time (all its threads: the bar's is
    # where a bar costs anything), which a loaded machine disturbs less.
    print(f"{N:,} tasks, {ROUNDS} alternating rounds; ratios to the same front door without")
    print(f"  {'':<28} {'wall median':>11} {'ratio':>6} {'wall min':>9} {'ratio':>6} {'parent CPU':>11} {'ratio':>6}")
    for name, values in times.items():
        door = name.split(" ")[0]
        median, low, used = statistics.median(values), min(values), statistics.median(cpu[name])
        print(
            f"  {name:<28} {median:9.3f} s {median / statistics.median(times[door]):6.3f}"
            f" {low:7.3f} s {low / min(times[door]):6.3f} {used:9.3f} s {used / statistics.median(cpu[door]):6.3f}"
        )


def fixed_cost(maps: int = 50) -> None:
    """What a bar adds to one map, from many maps of 10 tasks."""
    with shoal.Pool(2) as pool, shoal.WorkerPool(2, keep_alive=True) as wp:
        calls = {
            "Pool": lambda: pool.map(task, range(10)),
            "Pool + bar": lambda: pool.map(task, range(10), progress_bar=True),
            "WorkerPool": lambda: wp.map(task, range(10)),
            "WorkerPool + bar": lambda: wp.map(task, range(10), progress_bar=True),
        }
        for call in calls.values():
            call()  # warm: workers, the function, tqdm imported
        per_map: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            for name, call in calls.items():
                t0 = time.perf_counter()
                for _ in range(maps):
                    call()
                per_map.setdefault(name, []).append((time.perf_counter() - t0) / maps)
    print("a map of 10 tasks, median ms per map")
    for name, values in per_map.items():
        print(f"  {name:<28} {statistics.median(values) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
    fixed_cost()
