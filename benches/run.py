"""The benchmark suite: `make bench`.

Every figure comes from a fresh interpreter per run (`--one`); each
workload runs several times and the median is kept. All libraries run in
the same invocation, so the table is a set of ratios taken on the same
machine at the same time. Output: benches/results/latest.md and
benches/results/latest.png.

  .venv/bin/python benches/run.py                      # everything
  .venv/bin/python benches/run.py --only imap_cs1 --libs shoal,multiprocessing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads as W  # noqa: E402

WORKERS = 2
# A run longer than this is not repeated: noise is small next to it, and
# the peers at chunksize 1 take minutes per run.
SLOW_RUN = 10.0
LIBS = ["serial", "multiprocessing", "concurrent.futures", "mpire", "loky", "shoal"]


# -- adapters: one small interface over every library -------------------------


class Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


class Serial:
    def map(self, f, it, chunksize=None):
        return list(map(f, it))

    def imap(self, f, it, chunksize=None):
        return map(f, it)

    imap_unordered = imap

    def apply_async(self, f, args):
        return Done(f(*args))


class StdPool:
    def __init__(self, pool) -> None:
        self.p = pool

    def map(self, f, it, chunksize=None):
        return self.p.map(f, it, chunksize)

    def imap(self, f, it, chunksize=None):
        return self.p.imap(f, it) if chunksize is None else self.p.imap(f, it, chunksize)

    def imap_unordered(self, f, it, chunksize=None):
        if chunksize is None:
            return self.p.imap_unordered(f, it)
        return self.p.imap_unordered(f, it, chunksize)

    def apply_async(self, f, args):
        return self.p.apply_async(f, args)


class Futures:
    """concurrent.futures.ProcessPoolExecutor and loky's executor."""

    class _Result:
        def __init__(self, fut) -> None:
            self.fut = fut

        def get(self):
            return self.fut.result()

    def __init__(self, ex) -> None:
        self.ex = ex

    def map(self, f, it, chunksize=None):
        return list(self.ex.map(f, it, chunksize=chunksize or 1))

    def imap(self, f, it, chunksize=None):
        return self.ex.map(f, it, chunksize=chunksize or 1)

    def imap_unordered(self, f, it, chunksize=None):
        from concurrent.futures import as_completed

        return (fut.result() for fut in as_completed([self.ex.submit(f, x) for x in it]))

    def apply_async(self, f, args):
        return self._Result(self.ex.submit(f, *args))


class Mpire:
    def __init__(self, pool) -> None:
        self.p = pool

    def map(self, f, it, chunksize=None):
        return self.p.map(f, it, chunk_size=chunksize)

    def imap(self, f, it, chunksize=None):
        return self.p.imap(f, it, chunk_size=chunksize)

    def imap_unordered(self, f, it, chunksize=None):
        return self.p.imap_unordered(f, it, chunk_size=chunksize)

    def apply_async(self, f, args):
        return self.p.apply_async(f, args=args)


@contextmanager
def pool(lib: str) -> Iterator[Any]:
    """A pool of WORKERS workers with the library's defaults, closed on exit."""
    if lib == "serial":
        yield Serial()
    elif lib == "multiprocessing":
        import multiprocessing

        p = multiprocessing.Pool(WORKERS)
        yield StdPool(p)
        p.close()
        p.join()
    elif lib == "shoal":
        import shoal

        p = shoal.Pool(WORKERS)
        yield StdPool(p)
        p.close()
        p.join()
    elif lib == "concurrent.futures":
        from concurrent.futures import ProcessPoolExecutor

        ex = ProcessPoolExecutor(WORKERS)
        yield Futures(ex)
        ex.shutdown(wait=True)
    elif lib == "loky":
        import loky

        ex = loky.get_reusable_executor(max_workers=WORKERS)
        yield Futures(ex)
        ex.shutdown(wait=True)
    elif lib == "mpire":
        import mpire

        p = mpire.WorkerPool(n_jobs=WORKERS)
        yield Mpire(p)
        p.terminate()
    else:
        raise ValueError(lib)


def preimport(lib: str) -> None:
    """Import the library before any timing starts."""
    mod = {"serial": None, "concurrent.futures": "concurrent.futures"}.get(lib, lib)
    if mod:
        __import__(mod)
    if lib == "shoal":
        import shoal

        shoal.Pool  # noqa: B018 - resolve the lazy export


@contextmanager
def warm(lib: str) -> Iterator[Any]:
    with pool(lib) as h:
        h.map(W.square, range(100))
        yield h


# -- workloads -------------------------------------------------------------------


def w_map_cold(lib: str) -> dict:
    t0 = time.perf_counter()
    with pool(lib) as h:
        out = h.map(W.square, range(1_000_000))
    dt = time.perf_counter() - t0
    assert out[-1] == 999_999**2
    return {"time": dt}


def w_map_warm(lib: str) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        out = h.map(W.square, range(1_000_000))
        dt = time.perf_counter() - t0
    assert out[-1] == 999_999**2
    return {"time": dt}


def _consume(it: Iterable[Any]) -> int:
    n = 0
    for _ in it:
        n += 1
    return n


def w_imap_default(lib: str) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        n = _consume(h.imap(W.square, (i for i in range(200_000))))
        dt = time.perf_counter() - t0
    assert n == 200_000
    return {"time": dt}


def w_imap_cs1(lib: str) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        n = _consume(h.imap(W.square, (i for i in range(200_000)), chunksize=1))
        dt = time.perf_counter() - t0
    assert n == 200_000
    return {"time": dt, "per_task_us": dt / n * 1e6}


def w_apply_async(lib: str) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        rs = [h.apply_async(W.square, (i,)) for i in range(20_000)]
        out = [r.get() for r in rs]
        dt = time.perf_counter() - t0
    assert out[-1] == 19_999**2
    return {"time": dt, "per_task_us": dt / 20_000 * 1e6}


def w_cpu(lib: str) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        h.map(W.cpu_5ms, range(200))
        dt = time.perf_counter() - t0
    return {"time": dt}


def ideal_greedy(durations: list[float], workers: int) -> float:
    """Makespan of greedy list scheduling in input order with no overhead."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def w_skewed(lib: str) -> dict:
    n = 200
    with warm(lib) as h:
        t0 = time.perf_counter()
        _consume(h.imap_unordered(W.skewed, range(n)))
        dt = time.perf_counter() - t0
    ideal = ideal_greedy([W.skewed_duration(i) for i in range(n)], WORKERS)
    return {"time": dt, "vs_ideal": dt / ideal}


def w_numpy_args(lib: str) -> dict:
    import numpy as np

    arrays = [np.full(1 << 17, float(i)) for i in range(200)]
    with warm(lib) as h:
        t0 = time.perf_counter()
        out = h.map(W.array_sum, arrays)
        dt = time.perf_counter() - t0
    assert out[7] == 14.0
    return {"time": dt}


def w_numpy_results(lib: str) -> dict:
    import numpy as np  # imported before timing, as for every library

    with warm(lib) as h:
        t0 = time.perf_counter()
        out = h.map(W.make_array, range(100))
        dt = time.perf_counter() - t0
    # mpire concatenates numpy results into one array by default.
    assert float(np.asarray(out).reshape(100, -1)[7][5]) == 7.0
    return {"time": dt}


def w_startup(lib: str) -> dict:
    t0 = time.perf_counter()
    with pool(lib) as h:
        h.map(W.square, range(4))
    return {"time": time.perf_counter() - t0}


def _memory(lib: str, n: int) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        got = _consume(h.imap(W.length, W.kib_items(n)))
        dt = time.perf_counter() - t0
    assert got == n
    return {"time": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def w_memory_200k(lib: str) -> dict:
    return _memory(lib, 200_000)


def w_memory_2m(lib: str) -> dict:
    return _memory(lib, 2_000_000)


def w_latency(lib: str) -> dict:
    with warm(lib) as h:
        t0 = time.perf_counter()
        it = iter(h.imap(W.sleep_300ms, range(6)))
        next(it)
        dt = time.perf_counter() - t0
        _consume(it)
    return {"time": dt}


# name -> (function, title, runs, seconds allowed per run)
WORKLOADS: dict[str, tuple[Callable[[str], dict], str, int, int]] = {
    "map_cold": (w_map_cold, "1. map, 1M ints, cold (create, map, close)", 5, 60),
    "map_warm": (w_map_warm, "1. map, 1M ints, warm pool", 5, 60),
    "imap_default": (w_imap_default, "2. imap, generator of 200k ints, defaults", 3, 60),
    "imap_cs1": (w_imap_cs1, "2. imap, generator of 200k ints, chunksize=1", 3, 60),
    "apply_async": (w_apply_async, "3. 20k apply_async, then get", 3, 60),
    # More runs: the host's speed varies by more than the gaps between the pools.
    "cpu": (w_cpu, "4. CPU-bound, 200 tasks of ~5 ms", 9, 60),
    "skewed": (w_skewed, "5. skewed, 200 tasks (2 ms, 1 in 10 60 ms), imap_unordered", 5, 60),
    "numpy_args": (w_numpy_args, "6. numpy, 200 x 1 MiB arrays in", 3, 60),
    "numpy_results": (w_numpy_results, "6. numpy, 100 x 1 MiB arrays out", 3, 60),
    "startup": (w_startup, "7. start-up: create 2, map 4, close", 5, 60),
    "memory_200k": (w_memory_200k, "8. imap, 200k items of 1 KiB", 3, 60),
    "memory_2m": (w_memory_2m, "8. imap, 2M items of 1 KiB", 3, 60),
    "latency": (w_latency, "9. time to first imap result, 300 ms tasks", 3, 60),
}


def run_one(workload: str, lib: str, timeout: int) -> dict | None:
    """One run in a fresh interpreter; None if it exceeded ``timeout`` or failed."""
    # A session of its own, so that a run cut off by the timeout takes its
    # pool's workers with it (ProcessPoolExecutor's would otherwise linger).
    proc = subprocess.Popen(
        [sys.executable, __file__, "--one", workload, lib],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if out.returncode != 0:
        print(f"  {workload} {lib} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return {"failed": 1.0, "time": 0.0}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(workloads: list[str], libs: list[str]) -> dict[str, dict[str, dict | None]]:
    """Each workload's median per library. Runs go in rounds, one run of
    every library per round, and the order rotates from round to round: this
    host's speed drifts over minutes, and running all of one library's runs
    before the next would hand that drift to whichever ran later."""
    results: dict[str, dict[str, dict | None]] = {}
    for name in workloads:
        _fn, title, runs, timeout = WORKLOADS[name]
        todo = [lib for lib in libs if not (name == "startup" and lib == "serial")]
        samples: dict[str, list[dict]] = {lib: [] for lib in todo}
        done: dict[str, dict | None] = {}
        for round_no in range(runs):
            shift = round_no % len(todo)
            for lib in todo[shift:] + todo[:shift]:
                if lib in done:
                    continue
                r = run_one(name, lib, timeout)
                if r is None or r.get("failed"):
                    done[lib] = r  # too slow or failed: do not spend more runs on it
                    continue
                samples[lib].append(r)
                if r["time"] > SLOW_RUN:
                    done[lib] = r  # one run of a slow figure is enough to rank it
        results[name] = {}
        for lib in todo:
            if lib in done:
                results[name][lib] = done[lib]
            else:
                got = samples[lib]
                results[name][lib] = {k: statistics.median(s[k] for s in got) for k in got[0]}
            print(f"{title:60s} {lib:20s} {_fmt(results[name][lib], timeout)}", flush=True)
    return results


def _fmt(r: dict | None, timeout: int = 0) -> str:
    if r is None:
        return f"> {timeout} s" if timeout else "failed"
    if r.get("failed"):
        return "failed"
    t = r["time"]
    s = f"{t * 1000:.0f} ms" if t >= 0.1 else f"{t * 1000:.1f} ms"
    if "per_task_us" in r:
        s += f" ({r['per_task_us']:.1f} µs/task)"
    if "vs_ideal" in r:
        s += f" ({r['vs_ideal']:.2f}x ideal)"
    if "peak_rss_mb" in r:
        s += f", {r['peak_rss_mb']:.0f} MB peak"
    return s


def table(results: dict[str, dict[str, dict | None]], libs: list[str]) -> str:
    head = "| workload | " + " | ".join(libs) + " |"
    lines = [head, "|---" * (len(libs) + 1) + "|"]
    for name, per_lib in results.items():
        title, timeout = WORKLOADS[name][1], WORKLOADS[name][3]
        cells = []
        for lib in libs:
            if lib not in per_lib:
                cells.append("")
                continue
            cell = _fmt(per_lib[lib], timeout)
            cells.append(f"**{cell}**" if lib == "shoal" else cell)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, dict | None]], libs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [lib for lib in libs if lib != "serial"]
    names = [
        n for n in results if results[n].get("multiprocessing") and not results[n]["multiprocessing"].get("failed")
    ]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) * len(peers) / 2 + 1.5))
    height = 0.8 / len(peers)
    for k, lib in enumerate(peers):
        ys, xs = [], []
        for i, n in enumerate(names):
            r, base = results[n].get(lib), results[n]["multiprocessing"]
            if r is not None and base is not None and not r.get("failed") and not base.get("failed"):
                ys.append(i + k * height)
                xs.append(r["time"] / base["time"])
        ax.barh(ys, xs, height=height, label=lib)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))])
    ax.set_yticklabels([WORKLOADS[n][1] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("time relative to multiprocessing.Pool (log scale; lower is faster)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=2, metavar=("WORKLOAD", "LIB"), help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated workloads")
    ap.add_argument("--libs", help="comma-separated libraries")
    args = ap.parse_args()
    if args.one:
        name, lib = args.one
        preimport(lib)
        print(json.dumps(WORKLOADS[name][0](lib)))
        return
    workloads = args.only.split(",") if args.only else list(WORKLOADS)
    libs = args.libs.split(",") if args.libs else LIBS
    started = time.strftime("%Y-%m-%d %H:%M")
    results = measure(workloads, libs)
    runs = sorted({WORKLOADS[w][2] for w in workloads})
    runs_text = f"{runs[0]}-{runs[-1]}" if len(runs) > 1 else str(runs[0])
    header = (
        f"Run {started}: Python {platform.python_version()}, {os.cpu_count()} cores, {WORKERS} workers, "
        f"each library with its defaults (multiprocessing and mpire: fork; shoal: fork, as no other pool "
        f"runs). Median of {runs_text} runs, each in a fresh process; "
        f"a figure over {SLOW_RUN:.0f} s is one run. Lower is better."
    )
    text = header + "\n\n" + table(results, libs) + "\n"
    print("\n" + text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    if not args.only and not args.libs:
        (out / "latest.md").write_text(text)
        (out / "latest.json").write_text(json.dumps(results, indent=1))
        chart(results, libs, out / "latest.png")
    else:
        (out / "partial.md").write_text(text)


if __name__ == "__main__":
    main()
