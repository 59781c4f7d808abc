"""The median of several runs of the suite, as one table.

On a shared or busy host one invocation's medians still move from run to
run; this takes the results files of several (``--json`` copies of
results/partial.json or latest.json) and prints, per row and library, the
median of each figure over the runs that produced one.

  .venv/bin/python benches/combine.py run1.json run2.json run3.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import run
from rows import Results, usable


def combine(runs: list[dict[str, Results]]) -> dict[str, Results]:
    out: dict[str, Results] = {}
    for name in dict.fromkeys(n for r in runs for n in r):
        out[name] = {}
        for lib in dict.fromkeys(lib for r in runs for lib in r.get(name, {})):
            got = [r[name][lib] for r in runs if lib in r.get(name, {})]
            good = [g for g in got if usable(g)]
            if good:
                keys = [k for k in good[0] if all(k in g for g in good)]
                out[name][lib] = {k: statistics.median(g[k] for g in good) for k in keys}
            else:
                # Every run timed out or failed: say which.
                out[name][lib] = got[-1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    results = combine([json.loads(f.read_text()) for f in args.files])
    libs = run.all_libs()
    print(f"Median of {len(args.files)} runs of the suite.\n")
    print(run.table(results, libs))


if __name__ == "__main__":
    main()
