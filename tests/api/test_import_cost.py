"""What a program pays at start-up for using shoal: modules it imports only
when a feature that needs them is used. Each costs an ordinary script's
first pool milliseconds (``python -X importtime``: typing ~3 ms, logging
~3 ms, datetime ~1.3 ms), where ``multiprocessing.Pool`` pays none of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import run_script

SCRIPT = """
import sys
import shoal
from shoal import WorkerPool

def square(x):
    return x * x

if __name__ == "__main__":
    with shoal.Pool(2) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
    with shoal.ThreadPool(2) as pool:
        assert list(pool.imap(square, range(100))) == [x * x for x in range(100)]
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
    print(sorted(name for name in ("typing", "logging", "datetime") if name in sys.modules))
    with WorkerPool(n_jobs=2, enable_insights=True) as pool:
        pool.map(square, range(10))
        pool.get_insights()
    print("datetime" in sys.modules)
"""


@pytest.mark.timeout(120)
def test_pools_import_neither_typing_nor_logging_nor_datetime(tmp_path: Path) -> None:
    out = run_script(tmp_path, SCRIPT).split("\n")
    assert out[0] == "[]"
    # Insights format durations with datetime, once asked for.
    assert out[1] == "True"
