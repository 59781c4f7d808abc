"""Start-up cost per start method, shoal beside multiprocessing.

Run: .venv/bin/python benches/start_methods.py. The figures behind the
default start method (python/shoal/_start.py).
"""

import os
import statistics
import subprocess
import sys

code = r"""
HERE = %r

import sys, time
lib, method = sys.argv[1], sys.argv[2]
sys.path.insert(0, HERE)
from workloads import square
if lib == "shoal":
    import shoal
    shoal.Pool  # import outside the timed region, as for multiprocessing
    t0 = time.perf_counter()
    p = shoal.Pool(2, start_method=method)
else:
    import multiprocessing as mp
    ctx = mp.get_context(method)
    t0 = time.perf_counter()
    p = ctx.Pool(2)
t1 = time.perf_counter()
p.map(square, range(4))
t2 = time.perf_counter()
p.close(); p.join()
t3 = time.perf_counter()
# replacement cost: maxtasksperchild=1, 20 tasks -> 20 worker starts
if lib == "shoal":
    q = shoal.Pool(2, start_method=method, maxtasksperchild=1)
else:
    q = ctx.Pool(2, maxtasksperchild=1)
q.map(square, range(4))
t4 = time.perf_counter()
q.map(square, range(40), chunksize=1)
t5 = time.perf_counter()
q.close(); q.join()
print(t1-t0, t2-t0, t3-t0, (t5-t4)/40)
"""
for lib, method in [
    ("multiprocessing", "fork"),
    ("multiprocessing", "forkserver"),
    ("multiprocessing", "spawn"),
    ("shoal", "fork"),
    ("shoal", "forkserver"),
    ("shoal", "spawn"),
]:
    rs = []
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", code % os.path.dirname(os.path.abspath(__file__)), lib, method],
            capture_output=True,
            text=True,
        )
        rs.append([float(x) for x in out.stdout.split()])
    med = [statistics.median(c) for c in zip(*rs, strict=True)]
    create, first_map, joined, replace = (m * 1000 for m in med)
    print(
        f"{lib:16s} {method:10s} create {create:7.1f} ms  first map done {first_map:7.1f} ms  "
        f"close+join {joined:7.1f} ms  per replacement {replace:6.1f} ms"
    )
