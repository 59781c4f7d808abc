"""Time from a worker's death to the error in the parent.

Each task writes the system-wide monotonic clock to a file just before it
dies; the parent reads the clock when the WorkerLostError reaches it.
Run: .venv/bin/python benches/crash_latency.py
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import time

import shoal


def die(args: tuple[str, str]) -> None:
    how, stamp = args
    with open(stamp, "w") as f:
        f.write(repr(time.monotonic()))
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif how == "os_exit":
        os._exit(1)


def main() -> None:
    runs = 10
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        stamp = os.path.join(tmp, "stamp")
        for method in ("fork", "spawn", "forkserver"):
            with shoal.Pool(2, start_method=method) as pool:
                for how in ("sigkill", "sigterm", "segfault", "os_exit"):
                    lags = []
                    for _ in range(runs):
                        r = pool.apply_async(die, ((how, stamp),))
                        try:
                            r.get(timeout=30)
                        except shoal.WorkerLostError:
                            now = time.monotonic()
                        with open(stamp) as f:
                            lags.append(now - float(f.read()))
                    worst = max(worst, *lags)
                    print(
                        f"{method:10s} {how:9s} median {statistics.median(lags) * 1000:6.2f} ms  "
                        f"max {max(lags) * 1000:6.2f} ms"
                    )
    print(f"slowest fault-to-error: {worst * 1000:.2f} ms")


if __name__ == "__main__":
    main()
