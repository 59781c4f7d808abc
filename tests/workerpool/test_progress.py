"""WorkerPool's progress bars: drawn in the parent with tqdm from the
engine's counters, closed right on success, failure, terminate and Ctrl-C,
with MPIRE's options, defaults and checks."""

from __future__ import annotations

import io
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tqdm import TqdmKeyError

import progress_tasks as pt
import shoal
from shoal import _progress


def wait_until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait for ``condition``, on an event that nobody sets (a bounded wait
    per look, not a sleep that decides the outcome)."""
    never = threading.Event()
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        never.wait(0.01)
    raise AssertionError("condition never held")


def last_line(out: io.StringIO) -> str:
    """What the bar shows now: tqdm redraws with carriage returns."""
    return out.getvalue().replace("\n", "\r").rstrip("\r").rsplit("\r", 1)[-1]


@pytest.mark.timeout(60)
def test_a_bar_runs_to_its_end(method: str) -> None:
    out = io.StringIO()
    with shoal.WorkerPool(2, start_method=method) as pool:
        got = pool.map(pt.square, range(100), progress_bar=True, progress_bar_options={"file": out, "desc": "sq"})
    assert got == [x * x for x in range(100)]
    line = last_line(out)
    assert line.startswith("sq: 100%")
    assert "100/100" in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", ["map", "map_unordered", "imap", "imap_unordered"])
def test_every_map_draws_a_bar(call: str) -> None:
    out = io.StringIO()
    with shoal.WorkerPool(2) as pool:
        got = getattr(pool, call)(pt.square, range(30), progress_bar=True, progress_bar_options={"file": out})
        assert sorted(got) == [x * x for x in range(30)]
    assert "30/30" in last_line(out)


@pytest.mark.timeout(60)
def test_an_input_of_unknown_length_gets_its_total_at_the_end() -> None:
    out = io.StringIO()
    with shoal.WorkerPool(2) as pool:
        got = list(pool.imap(pt.square, (x for x in range(40)), progress_bar=True, progress_bar_options={"file": out}))
    assert got == [x * x for x in range(40)]
    assert "40/40" in last_line(out)


@pytest.mark.timeout(60)
def test_the_bar_moves_while_the_map_runs(gates: Any) -> None:
    """Fed from the engine's counters: finished tasks show before the map
    ends, with no per-task callback."""
    out = io.StringIO()
    gate = gates.path("go")
    with shoal.WorkerPool(2) as pool:
        it = pool.imap(
            pt.wait_unless_first,
            [(x, gate) for x in range(10)],
            chunk_size=1,
            progress_bar=True,
            progress_bar_options={"file": out},
        )
        assert next(it) == 0
        wait_until(lambda: "1/10" in last_line(out))
        gates.open("go")
        assert list(it) == list(range(1, 10))
    assert "10/10" in last_line(out)


@pytest.mark.timeout(60)
def test_a_failed_map_shows_the_failure_and_the_pool_goes_on(method: str) -> None:
    out = io.StringIO()
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        with pytest.raises(ValueError, match="seven"):
            pool.map(pt.fail_on_seven, range(20), chunk_size=1, progress_bar=True, progress_bar_options={"file": out})
        line = last_line(out)
        assert line.startswith(_progress.FAILED)
        again = io.StringIO()
        assert pool.map(pt.square, range(5), progress_bar=True, progress_bar_options={"file": again}) == [
            0,
            1,
            4,
            9,
            16,
        ]
        assert "5/5" in last_line(again)


@pytest.mark.timeout(60)
def test_terminate_closes_the_bar(gates: Any) -> None:
    out = io.StringIO()
    gate = gates.path("never")
    pool = shoal.WorkerPool(2)
    it = pool.imap(
        pt.wait_unless_first,
        [(x, gate) for x in range(10)],
        chunk_size=1,
        progress_bar=True,
        progress_bar_options={"file": out},
    )
    assert next(it) == 0
    pool.terminate()
    assert last_line(out).startswith(_progress.TERMINATED)
    with pytest.raises(RuntimeError):
        next(it)
    gates.open("never")


@pytest.mark.timeout(60)
# A Ctrl-C that CPython drops inside a weakref callback (sent again: see
# progress_tasks.interrupt_or_wait) is reported as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_closes_the_bar(gates: Any) -> None:
    out = io.StringIO()
    gate = gates.path("after")
    armed = True

    def ctrl_c(signum: int, frame: object) -> None:
        # Ctrl-C's default handler while the map runs; the repeats the task
        # sends after the map has raised are ignored
        if armed:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        with shoal.WorkerPool(2) as pool:
            with pytest.raises(KeyboardInterrupt):
                pool.map(
                    pt.interrupt_or_wait,
                    [(x, os.getpid(), gate) for x in range(4)],
                    chunk_size=1,
                    progress_bar=True,
                    progress_bar_options={"file": out},
                )
            armed = False
            gates.open("after")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert last_line(out).startswith(_progress.INTERRUPTED)


@pytest.mark.timeout(60)
def test_a_reader_that_stops_leaves_the_bar_where_it_is(gates: Any) -> None:
    out = io.StringIO()
    gate = gates.path("later")
    with shoal.WorkerPool(2) as pool:
        it = pool.imap(
            pt.wait_unless_first,
            [(x, gate) for x in range(10)],
            chunk_size=1,
            progress_bar=True,
            progress_bar_options={"file": out},
        )
        assert next(it) == 0
        it.close()
        gates.open("later")
    line = last_line(out)
    assert "10/10" not in line
    assert _progress.FAILED not in line


@pytest.mark.timeout(60)
def test_dashboard_style_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with shoal.WorkerPool(2) as pool:
        assert pool.map(pt.square, range(20), progress_bar=True, progress_bar_style="dashboard") == [
            x * x for x in range(20)
        ]
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


@pytest.mark.timeout(60)
def test_notebook_style_outside_a_notebook_is_the_text_bar() -> None:
    out = io.StringIO()
    with shoal.WorkerPool(2) as pool:
        pool.map(
            pt.square, range(20), progress_bar=True, progress_bar_style="notebook", progress_bar_options={"file": out}
        )
    assert "20/20" in last_line(out)


@pytest.mark.timeout(60)
def test_rich_style() -> None:
    pytest.importorskip("rich")
    with shoal.WorkerPool(2) as pool:
        assert pool.map(pt.square, range(20), progress_bar=True, progress_bar_style="rich") == [
            x * x for x in range(20)
        ]


@pytest.mark.timeout(60)
def test_the_default_style_is_a_module_setting(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(_progress, "DEFAULT_STYLE", "dashboard")
    with shoal.WorkerPool(2) as pool:
        pool.map(pt.square, range(10), progress_bar=True)
    assert capsys.readouterr().err == ""


# -- options, as MPIRE checks them --------------------------------------------------


@pytest.mark.timeout(30)
def test_mpire_defaults_and_overrides() -> None:
    options = _progress.check_options(True, {"desc": "x", "mininterval": 1.0}, None, 7)
    assert options == {
        "position": 0,
        "dynamic_ncols": True,
        "mininterval": 1.0,
        "maxinterval": 0.5,
        "desc": "x",
        "total": 7,
        "leave": True,
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize("given", ["total", "leave"])
def test_total_and_leave_are_overwritten_with_a_warning(given: str) -> None:
    with pytest.warns(RuntimeWarning, match=given):
        options = _progress.check_options(True, {given: 3}, None, 10)
    assert (options["total"], options["leave"]) == (10, True)


@pytest.mark.timeout(30)
def test_a_bad_option_raises_at_the_call_before_workers_start() -> None:
    pool = shoal.WorkerPool(2)
    with pytest.raises(TqdmKeyError) as info:
        pool.map(pt.square, range(3), progress_bar=True, progress_bar_options={"no_such_option": 1})
    assert isinstance(info.value.__cause__, ValueError)
    assert pool._backend is None
    with pytest.raises(TypeError, match="progress_bar_options should be a dictionary"):
        pool.map(pt.square, range(3), progress_bar=True, progress_bar_options=[("desc", "x")])  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_options_are_checked_even_without_a_bar() -> None:
    with pytest.raises(TqdmKeyError):
        _progress.check_options(False, {"no_such_option": 1}, None, None)


@pytest.mark.timeout(30)
def test_rich_refuses_a_position() -> None:
    with pytest.raises(NotImplementedError, match="position"):
        _progress.check_options(True, {"position": 1}, "rich", None)


@pytest.mark.timeout(30)
def test_a_check_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _progress.check_options(True, {"desc": "quiet"}, "std", 5)
    assert capsys.readouterr() == ("", "")


@pytest.mark.timeout(60)
def test_no_bar_thread_is_left_behind() -> None:
    before = {t.name for t in threading.enumerate()}
    with shoal.WorkerPool(2) as pool:
        pool.map(pt.square, range(10), progress_bar=True, progress_bar_options={"file": io.StringIO()})
    after: Iterator[str] = (t.name for t in threading.enumerate())
    assert "shoal-progress" not in set(after) - before


@pytest.mark.timeout(30)
def test_outside_a_kernel_is_not_a_notebook() -> None:
    assert not _progress._in_notebook()
    assert _progress.bar_class("notebook") is _progress.bar_class("std")


@pytest.mark.timeout(30)
def test_in_a_kernel_the_notebook_style_is_the_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipywidgets", reason="the widget bar needs ipywidgets")
    from tqdm.notebook import tqdm_notebook

    monkeypatch.setattr(_progress, "_in_notebook", lambda: True)
    cls = _progress.bar_class("notebook")
    assert issubclass(cls, tqdm_notebook)
    _progress.check_options(True, {"desc": "w"}, "notebook", 3)
