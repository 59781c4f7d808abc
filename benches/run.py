"""The benchmark suite: `make bench`.

Every figure comes from a fresh interpreter per run (`--one`); each row
runs several times and the median is kept. All libraries run in the same
invocation, so the table is a set of ratios taken on the same machine at
the same time. Each row says how shoal compares with the best peer, and
whether the issues' targets are met (reported, never asserted: benches are
not tests). Output: benches/results/latest.{md,json,png} for a full run,
partial.{md,json} otherwise.

Sections (each a group for --only):
  pool        every pool library on the classic rows (rows_pool.py)
  workerpool  keep_alive=False small map, progress bar, insights (rows_workerpool.py)
  mpire       MPIRE's three published workloads (rows_mpire.py)
  executor    shoal.Executor vs ProcessPoolExecutor, loky, pebble (rows_executor.py)

  .venv/bin/python benches/run.py                      # everything
  .venv/bin/python benches/run.py --only executor
  .venv/bin/python benches/run.py --only imap_cs1 --libs shoal,shoal.WorkerPool,mpire
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rows_executor  # noqa: E402
import rows_mpire  # noqa: E402
import rows_pool  # noqa: E402
import rows_workerpool  # noqa: E402
from adapters import WORKERS, preimport  # noqa: E402
from rows import Results, Row, usable  # noqa: E402

SECTIONS: dict[str, dict[str, Row]] = {
    "pool": rows_pool.ROWS,
    "workerpool": rows_workerpool.ROWS,
    "mpire": rows_mpire.ROWS,
    "executor": rows_executor.ROWS,
}
ROWS: dict[str, Row] = {name: row for rows in SECTIONS.values() for name, row in rows.items()}
SUBJECTS = {"shoal": "Pool", "shoal.WorkerPool": "WorkerPool", "shoal.Executor": "Executor"}
# A run longer than this is not repeated: noise is small next to it, and
# the peers at chunksize 1 take minutes per run.
SLOW_RUN = 10.0


def script_square(x: int) -> int:
    """A function of the script a user runs, so it lives in ``__main__``
    (rows_workerpool's small map sends it)."""
    return x * x


def run_one(name: str, lib: str) -> dict | None:
    """One run in a fresh interpreter; None if it exceeded the row's timeout."""
    row = ROWS[name]
    # A session of its own, so that a run cut off by the timeout takes its
    # pool's workers with it (ProcessPoolExecutor's would otherwise linger).
    proc = subprocess.Popen(
        [sys.executable, __file__, "--one", name, lib],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **row.env},
    )
    try:
        stdout, stderr = proc.communicate(timeout=row.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    if proc.returncode != 0:
        print(f"  {name} {lib} failed:\n{stderr[-2000:]}", file=sys.stderr)
        return {"failed": 1.0, "time": 0.0}
    return json.loads(stdout.strip().splitlines()[-1])


def measure(names: list[str], libs: list[str]) -> dict[str, Results]:
    """Each row's median per library. Runs go in rounds, one run of every
    library per round, and the order rotates from round to round: this
    host's speed drifts over minutes, and running all of one library's runs
    before the next would hand that drift to whichever ran later. A row's
    ``pair`` runs on in rounds of its own until it has ``pair_runs``."""
    results: dict[str, Results] = {}
    for name in names:
        row = ROWS[name]
        todo = [lib for lib in row.libs if lib in libs]
        samples: dict[str, list[dict]] = {lib: [] for lib in todo}
        done: dict[str, dict | None] = {}
        for round_no in range(max(row.runs, row.pair_runs)):
            these = todo if round_no < row.runs else [lib for lib in todo if lib in row.pair]
            shift = round_no % max(1, len(these))
            for lib in these[shift:] + these[:shift]:
                if lib in done:
                    continue
                r = run_one(name, lib)
                if r is None or r.get("failed"):
                    done[lib] = r  # too slow or failed: no more runs
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
            print(f"{row.title[:70]:70s} {lib:20s} {fmt(results[name][lib], row.timeout)}", flush=True)
    return results


def _ms(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t >= 0.1 else f"{t * 1000:.1f} ms"


def fmt(r: dict | None, timeout: int = 0) -> str:
    if r is None:
        return f"> {timeout} s" if timeout else "failed"
    if r.get("failed"):
        return "failed"
    if "with_over_without" in r:
        return f"{_ms(r['base'])} → {_ms(r['time'])} ({r['with_over_without']:.3f}x)"
    s = _ms(r["time"])
    for key, unit in (("per_task_us", "µs/task"), ("per_submit_us", "µs/submit")):
        if key in r:
            s += f" ({r[key]:.1f} {unit})"
    if "vs_ideal" in r:
        s += f" ({r['vs_ideal']:.2f}x ideal)"
    if "peak_rss_mb" in r:
        s += f", {r['peak_rss_mb']:.0f} MB peak"
    return s


def _x(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}x"


def vs_best_peer(row: Row, per_lib: Results) -> str:
    """How many times faster each shoal front door is than the fastest peer
    on this row (serial is no peer). When every peer ran out of time, the
    time limit gives a lower bound."""
    ran = {lib: r for lib, r in per_lib.items() if lib not in SUBJECTS and lib != "serial"}
    peers = {lib: r["time"] for lib, r in ran.items() if usable(r)}
    if peers:
        best = min(peers, key=peers.__getitem__)
        best_time, above, against = peers[best], "", f"vs {best}"
    elif ran and all(r is None for r in ran.values()):
        best_time, above, against = float(row.timeout), "> ", f"every peer over {row.timeout} s"
    else:
        return "—"
    cells = []
    for lib, short in SUBJECTS.items():
        r = per_lib.get(lib)
        if lib in per_lib:
            cells.append(f"{short} {above}{_x(best_time / r['time'])}" if usable(r) and r["time"] else f"{short} —")
    return ", ".join(cells) + f" ({against})"


def targets(row: Row, per_lib: Results) -> str:
    cells = []
    for t in row.targets:
        value = t.ratio(per_lib)
        if value is None:
            cells.append(f"{t.text}: n/a")
        else:
            # Three decimals near 1, where two would print a miss as "1.00".
            shown = f"{value:.3f}" if 0.95 < value < 1.05 else f"{value:.2f}"
            cells.append(f"{t.text}: {shown} {'✓' if t.met(value) else '✗ MISSED'}")
    return "; ".join(cells) or "—"


def table(results: dict[str, Results], libs: list[str]) -> str:
    """One table per section, with the section's libraries as columns."""
    out = []
    for section, rows in SECTIONS.items():
        names = [n for n in rows if n in results]
        if not names:
            continue
        cols = [
            lib
            for lib in dict.fromkeys(lib for n in names for lib in rows[n].libs)
            if lib in libs and any(lib in results[n] for n in names)
        ]
        head = "| row | " + " | ".join(cols) + " | shoal vs best peer | targets |"
        lines = [f"### {section}", "", head, "|---" * (len(cols) + 3) + "|"]
        for n in names:
            row, per_lib = rows[n], results[n]
            cells = []
            for lib in cols:
                cell = fmt(per_lib[lib], row.timeout) if lib in per_lib else ""
                cells.append(f"**{cell}**" if lib in SUBJECTS and cell else cell)
            lines.append(
                f"| {row.title} | " + " | ".join(cells) + f" | {vs_best_peer(row, per_lib)} | {targets(row, per_lib)} |"
            )
        out.append("\n".join(lines))
    return "\n\n".join(out)


def chart(results: dict[str, Results], libs: list[str], path: Path) -> None:
    """Time relative to multiprocessing.Pool, for the rows it runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if usable(results[n].get("multiprocessing"))]
    peers = [lib for lib in libs if lib != "serial" and any(lib in results[n] for n in names)]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) * len(peers) / 2 + 1.5))
    height = 0.8 / len(peers)
    for k, lib in enumerate(peers):
        ys, xs = [], []
        for i, n in enumerate(names):
            r, base = results[n].get(lib), results[n]["multiprocessing"]
            if usable(r) and r["time"] > 0:
                ys.append(i + k * height)
                xs.append(r["time"] / base["time"])
        ax.barh(ys, xs, height=height, label=lib)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))])
    ax.set_yticklabels([ROWS[n].title[:70] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("time relative to multiprocessing.Pool (log scale; lower is faster)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def selected(only: str | None) -> list[str]:
    """Row names from ``--only`` (section names and row names, comma-separated)."""
    if not only:
        return list(ROWS)
    names: list[str] = []
    for item in only.split(","):
        if item in SECTIONS:
            names += SECTIONS[item]
        elif item in ROWS:
            names.append(item)
        else:
            raise SystemExit(f"unknown section or row {item!r}; sections: {', '.join(SECTIONS)}")
    return list(dict.fromkeys(names))


def all_libs() -> list[str]:
    return list(dict.fromkeys(lib for row in ROWS.values() for lib in row.libs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=2, metavar=("ROW", "LIB"), help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated sections or rows: " + ", ".join(SECTIONS) + ", " + ", ".join(ROWS))
    ap.add_argument("--libs", help="comma-separated libraries: " + ", ".join(all_libs()))
    args = ap.parse_args()
    if args.one:
        name, lib = args.one
        preimport(lib)
        print(json.dumps(ROWS[name].fn(lib)))
        return
    names = selected(args.only)
    libs = args.libs.split(",") if args.libs else all_libs()
    started, t0, load0 = time.strftime("%Y-%m-%d %H:%M"), time.monotonic(), os.getloadavg()[0]
    results = measure(names, libs)
    elapsed, load1 = time.monotonic() - t0, os.getloadavg()[0]
    runs = sorted({ROWS[n].runs for n in names})
    runs_text = f"{runs[0]}-{runs[-1]}" if len(runs) > 1 else str(runs[0])
    pair_runs = max(ROWS[n].pair_runs for n in names)
    if pair_runs:
        runs_text += f" ({pair_runs} of shoal.Pool and shoal.WorkerPool where a target compares the two)"
    header = (
        f"Run {started} ({elapsed / 60:.1f} min; 1-minute load average {load0:.1f} at the start, {load1:.1f} at "
        f"the end): Python {platform.python_version()}, {os.cpu_count()} cores, {WORKERS} workers, each library "
        f"with its defaults (multiprocessing and mpire: fork; shoal: fork while the process has one thread). "
        f"Median of {runs_text} runs, each in a fresh process; a figure over {SLOW_RUN:.0f} s is one run. "
        f"Lower is better; 'shoal vs best peer' is the best peer's time over shoal's (above 1: shoal is faster)."
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
        (out / "partial.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
