"""Results waiting for a slow consumer are bounded in bytes, not only in
chunks: large results do not pile up in the parent."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A user's script: imap over large results, a consumer that stalls at the
# first result until everything read so far has run (as slow as a consumer
# can be), then takes the rest. Each task appends a byte to a file, so the
# script knows how many have run; the generator counts what was read.
SCRIPT = """
import os, resource, sys, time
from shoal import Pool

N, ran_path = int(sys.argv[1]), sys.argv[2]
read = 0

def items():
    global read
    for i in range(N):
        read += 1
        yield i

def task(i):
    with open(ran_path, "ab") as f:
        f.write(b".")
    return bytes(1 << 20)  # 1 MB, in the pickle stream

with Pool(2) as pool:
    it = pool.imap(task, items(), chunksize=8)
    total = len(next(it))
    while os.path.getsize(ran_path) < read:
        time.sleep(0.001)  # wait for a condition: the workers caught up
    total += sum(len(r) for r in it)
assert total == N << 20, total
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
"""


@pytest.mark.timeout(120)
def test_large_results_do_not_pile_up_behind_a_slow_consumer(tmp_path) -> None:
    n = 600
    ran = tmp_path / "ran"
    ran.touch()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(n), str(ran)], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1])
    # Before results counted in bytes, all 600 MB waited in the parent
    # (and a copy of some, as they were decoded): 1.2 GB here. The window's
    # budget is 64 MB, plus what the first chunks bring before results are
    # measured and what the consumer has taken.
    assert peak_mb < 400, f"peak RSS {peak_mb} MB"
