"""shoal.Pool's ``progress_bar=`` keyword (beyond multiprocessing): the map
family draws a tqdm bar from the engine's counters and closes it right."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from tqdm import TqdmKeyError

import progress_tasks as pt
import shoal
from shoal import _progress


def last_line(out: io.StringIO) -> str:
    """What the bar shows now: tqdm redraws with carriage returns."""
    return out.getvalue().replace("\n", "\r").rstrip("\r").rsplit("\r", 1)[-1]


def wait_until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    never = threading.Event()
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        never.wait(0.01)
    raise AssertionError("condition never held")


@pytest.mark.timeout(60)
def test_map_and_starmap(pool: shoal.Pool) -> None:
    out = io.StringIO()
    assert pool.map(pt.square, range(50), progress_bar=True, progress_bar_options={"file": out}) == [
        x * x for x in range(50)
    ]
    assert "50/50" in last_line(out)
    out = io.StringIO()
    got = pool.starmap(
        pt.keyword_task, [(x, 1) for x in range(20)], progress_bar=True, progress_bar_options={"file": out}
    )
    assert got == [x + 1 for x in range(20)]
    assert "20/20" in last_line(out)


@pytest.mark.timeout(60)
def test_a_generator_is_counted(pool: shoal.Pool) -> None:
    out = io.StringIO()
    assert pool.map(pt.square, (x for x in range(30)), progress_bar=True, progress_bar_options={"file": out}) == [
        x * x for x in range(30)
    ]
    assert "30/30" in last_line(out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", ["map_async", "starmap_async"])
def test_an_async_map_closes_its_bar_by_itself(pool: shoal.Pool, call: str) -> None:
    out = io.StringIO()
    items = [(x,) for x in range(40)] if call == "starmap_async" else range(40)
    result = getattr(pool, call)(pt.square, items, progress_bar=True, progress_bar_options={"file": out})
    assert result.get(timeout=30) == [x * x for x in range(40)]
    wait_until(lambda: "40/40" in last_line(out))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", ["imap", "imap_unordered"])
def test_imap_bars(pool: shoal.Pool, call: str) -> None:
    out = io.StringIO()
    it = getattr(pool, call)(pt.square, iter(range(25)), progress_bar=True, progress_bar_options={"file": out})
    assert sorted(it) == [x * x for x in range(25)]
    wait_until(lambda: "25/25" in last_line(out))


@pytest.mark.timeout(60)
def test_a_failed_map_shows_the_failure(pool: shoal.Pool) -> None:
    out = io.StringIO()
    with pytest.raises(ValueError, match="seven"):
        pool.map(pt.fail_on_seven, range(20), progress_bar=True, progress_bar_options={"file": out})
    assert last_line(out).startswith(_progress.FAILED)
    async_out = io.StringIO()
    result = pool.map_async(pt.fail_on_seven, range(20), progress_bar=True, progress_bar_options={"file": async_out})
    with pytest.raises(ValueError, match="seven"):
        result.get(timeout=30)
    wait_until(lambda: last_line(async_out).startswith(_progress.FAILED))


@pytest.mark.timeout(60)
def test_terminate_closes_open_bars(gates: Any) -> None:
    out = io.StringIO()
    gate = gates.path("never")
    p = shoal.Pool(2)
    it = p.imap(
        pt.star_wait_unless_first,
        [(x, gate) for x in range(6)],
        chunksize=1,
        progress_bar=True,
        progress_bar_options={"file": out},
    )
    assert next(it) == 0
    p.terminate()
    p.join()
    assert last_line(out).startswith(_progress.TERMINATED)
    gates.open("never")


@pytest.mark.timeout(60)
def test_options_are_checked_at_the_call(pool: shoal.Pool) -> None:
    with pytest.raises(TqdmKeyError):
        pool.map(pt.square, range(3), progress_bar=True, progress_bar_options={"no_such_option": 1})
    with pytest.raises(ValueError, match="Invalid progress bar style"):
        pool.imap(pt.square, range(3), progress_bar=True, progress_bar_style="fancy")
    with pytest.raises(TypeError, match="progress_bar_options should be a dictionary"):
        pool.map_async(pt.square, range(3), progress_bar=True, progress_bar_options=1)  # type: ignore[arg-type]
    # The pool is still good.
    assert pool.map(pt.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_without_the_keyword_nothing_changes(pool: shoal.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    assert pool.map(pt.square, range(10)) == [x * x for x in range(10)]
    assert list(pool.imap(pt.square, range(10))) == [x * x for x in range(10)]
    assert capsys.readouterr() == ("", "")
