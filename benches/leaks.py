"""The full leak run: 1,000 create/map/close cycles, then 10 million tiny
tasks through one pool. Prints descriptors, threads, child processes,
zombies, shared-memory segments and RSS before and after.

Run: .venv/bin/python benches/leaks.py [--cycles N] [--tasks N]
(tests/memory/test_leaks.py runs the same checks with small counts in CI.)
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import shoal  # noqa: E402
from memory.test_leaks import rss_kib, snapshot  # noqa: E402
from workloads import square  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10_000_000)
    ap.add_argument("--method", default="forkserver")
    args = ap.parse_args()

    def cycle() -> None:
        p = shoal.Pool(2, start_method=args.method)
        p.map(square, range(20))
        p.close()
        p.join()

    cycle()
    gc.collect()
    before = snapshot()
    before["rss_kib"] = rss_kib()
    t0 = time.monotonic()
    for _ in range(args.cycles):
        cycle()
    gc.collect()
    after = snapshot()
    after["rss_kib"] = rss_kib()
    print(f"{args.cycles} cycles of create, map, close, join ({args.method}) in {time.monotonic() - t0:.1f} s")
    print(f"  before: {before}")
    print(f"  after:  {after}")

    with shoal.Pool(2, start_method=args.method) as p:
        workers = [w.pid for w in p._pool]
        marks = {args.tasks // 10, args.tasks}
        n = 0
        t0 = time.monotonic()
        for _ in p.imap_unordered(square, range(args.tasks), chunksize=1000):
            n += 1
            if n in marks:
                print(
                    f"  after {n:>10,} tasks: parent RSS {rss_kib() / 1024:.1f} MiB, "
                    f"workers {[round(rss_kib(w) / 1024, 1) for w in workers]} MiB"
                )
        print(f"{args.tasks:,} tiny tasks in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
