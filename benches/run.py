"""The benchmark suite: `make bench`.

Every figure comes from a fresh interpreter per run (`--one`), several runs,
median; all libraries are measured in the same invocation so the table is a
set of ratios taken on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WORKERS = 2


def make_pool(lib: str):
    if lib == "shoal":
        import shoal

        return shoal.Pool(WORKERS)
    if lib == "multiprocessing":
        import multiprocessing

        return multiprocessing.Pool(WORKERS)
    raise ValueError(lib)


def w_map_500k(lib: str) -> float:
    from workloads import square

    pool = make_pool(lib)
    pool.map(square, range(100))  # workers up and warm
    t0 = time.perf_counter()
    out = pool.map(square, range(500_000))
    dt = time.perf_counter() - t0
    assert out[-1] == 499_999**2
    pool.terminate()
    return dt


def w_imap_cs1_100k(lib: str) -> float:
    from workloads import square

    pool = make_pool(lib)
    pool.map(square, range(100))
    t0 = time.perf_counter()
    n = 0
    for _ in pool.imap(square, range(100_000), chunksize=1):
        n += 1
    dt = time.perf_counter() - t0
    assert n == 100_000
    pool.terminate()
    return dt


WORKLOADS = {
    "map, 500,000 ints, trivial function (warm pool)": w_map_500k,
    "imap chunksize=1, 100,000 ints (warm pool)": w_imap_cs1_100k,
}
LIBS = ["multiprocessing", "shoal"]


def one(workload: str, lib: str) -> None:
    print(json.dumps(WORKLOADS[workload](lib)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, metavar=("WORKLOAD", "LIB"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if args.one:
        one(*args.one)
        return
    rows = []
    for workload in WORKLOADS:
        medians = {}
        for lib in LIBS:
            times = []
            for _ in range(args.runs):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", workload, lib], capture_output=True, text=True, check=True
                )
                times.append(float(out.stdout.strip().splitlines()[-1]))
            medians[lib] = statistics.median(times)
        rows.append((workload, medians))
    lines = [
        f"Python {platform.python_version()}, {WORKERS} workers, median of {args.runs} runs, each in a fresh process.",
        "",
        "| workload | " + " | ".join(LIBS) + " | shoal vs multiprocessing |",
        "|---|" + "---|" * (len(LIBS) + 1),
    ]
    for workload, m in rows:
        cells = " | ".join(f"{m[lib] * 1000:.1f} ms" for lib in LIBS)
        lines.append(f"| {workload} | {cells} | {m['multiprocessing'] / m['shoal']:.1f}x faster |")
    table = "\n".join(lines)
    print(table)
    (HERE / "results" / "latest.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
