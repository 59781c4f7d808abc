"""What reading the engine's counters costs a run of a million tiny tasks.

A progress bar or an insights view reads ``Engine.stats()`` about ten times
a second while work runs. This runs a million one-item tasks (``imap`` at
``chunksize=1``) on a warm pool of 2 workers with no reader, with a reader
at 10 Hz, and with one at 1 kHz (to make any cost visible), alternating, and
times one ``stats()`` call.

    .venv/bin/python benches/stats_poll.py
"""

from __future__ import annotations

import collections
import statistics
import threading
import time

import shoal

ROUNDS = 5
N = 1_000_000


def run(pool: shoal.Pool, hz: float | None) -> tuple[float, int]:
    stop = threading.Event()
    polls = 0

    def poll() -> None:
        nonlocal polls
        while True:
            pool._engine.stats()
            polls += 1
            if stop.wait(1 / hz if hz else 0):
                return

    reader = threading.Thread(target=poll) if hz else None
    if reader:
        reader.start()
    t0 = time.perf_counter()
    collections.deque(pool.imap(abs, range(N), chunksize=1), maxlen=0)
    elapsed = time.perf_counter() - t0
    stop.set()
    if reader:
        reader.join()
    return elapsed, polls


def main() -> None:
    with shoal.Pool(2) as pool:
        collections.deque(pool.imap(abs, range(10_000), chunksize=1), maxlen=0)  # warm
        times: dict[str, list[float]] = {"none": [], "10 Hz": [], "1 kHz": []}
        polls: dict[str, list[int]] = {k: [] for k in times}
        for _ in range(ROUNDS):
            for name, hz in (("none", None), ("10 Hz", 10.0), ("1 kHz", 1000.0)):
                t, n = run(pool, hz)
                times[name].append(t)
                polls[name].append(n)
        calls = 10_000
        t0 = time.perf_counter()
        for _ in range(calls):
            pool._engine.stats()
        per_call = (time.perf_counter() - t0) / calls
    base = statistics.median(times["none"])
    print(f"{N:,} one-item tasks (imap, chunksize=1), 2 workers, median of {ROUNDS} alternating runs")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"  reader {name:>5}: {med * 1e3:7.1f} ms ({med / base:.3f}x), {statistics.median(polls[name])} reads a run"
        )
    print(f"one stats() call on an idle pool: {per_call * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
