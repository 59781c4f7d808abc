"""WorkerPool insights: MPIRE's keys, types and formatting, from the
engine's counters, readable during an imap, under every start method."""

from __future__ import annotations

import re
from typing import Any

import pytest

import progress_tasks as pt
import shoal
from shoal import _insights

DURATION = re.compile(r"^\d+:\d\d:\d\d(\.\d{3})?$")
PARTS = ("start_up", "init", "waiting", "working", "exit")
# Every key MPIRE's get_insights() returns.
KEYS = {
    "n_completed_tasks",
    "top_5_max_task_durations",
    "top_5_max_task_args",
    "total_time",
    *(f"{p}_time" for p in PARTS),
    *(f"total_{p}_time" for p in PARTS),
    *(f"{p}_time_mean" for p in PARTS),
    *(f"{p}_time_std" for p in PARTS),
    *(f"{p}_ratio" for p in PARTS),
}


def seconds(duration: str) -> float:
    h, m, s = duration.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def check_shape(insights: dict[str, Any], n_jobs: int) -> None:
    """MPIRE's keys, each of the type and format MPIRE gives it."""
    assert set(insights) == KEYS
    assert len(insights["n_completed_tasks"]) == n_jobs
    assert all(isinstance(n, int) for n in insights["n_completed_tasks"])
    for part in PARTS:
        per_worker = insights[f"{part}_time"]
        assert len(per_worker) == n_jobs
        for value in [*per_worker, insights[f"total_{part}_time"], insights[f"{part}_time_mean"]]:
            assert DURATION.match(value), value
        assert DURATION.match(insights[f"{part}_time_std"])
        assert isinstance(insights[f"{part}_ratio"], float)
        assert 0.0 <= insights[f"{part}_ratio"] <= 1.0
    assert DURATION.match(insights["total_time"])
    assert sum(insights[f"{p}_ratio"] for p in PARTS) == pytest.approx(1.0, abs=1e-3)
    durations = insights["top_5_max_task_durations"]
    assert len(durations) == len(insights["top_5_max_task_args"]) <= 5
    assert all(DURATION.match(d) for d in durations)
    assert [seconds(d) for d in durations] == sorted((seconds(d) for d in durations), reverse=True)


@pytest.mark.timeout(120)
def test_mpire_documentation_example(method: str) -> None:
    """docs/usage/workerpool/worker_insights.rst: sleep_and_square."""
    with shoal.WorkerPool(n_jobs=4, enable_insights=True, start_method=method) as pool:
        pool.map(pt.sleep_and_square, range(100))
        insights = pool.get_insights()
    check_shape(insights, 4)
    assert sum(insights["n_completed_tasks"]) == 100
    # One task per chunk here (100 tasks, 4 workers), so each entry is a task.
    assert len(insights["top_5_max_task_args"]) == 5
    for args in insights["top_5_max_task_args"]:
        assert re.fullmatch(r"Arg 0: \d+", args), args
    # Workers stopped at the end of the map: their exit is counted too.
    assert seconds(insights["total_working_time"]) > 0


@pytest.mark.timeout(60)
def test_insights_are_readable_during_an_imap(method: str, gates: Any) -> None:
    gate = gates.path("rest")
    with shoal.WorkerPool(2, enable_insights=True, start_method=method) as pool:
        it = pool.imap(pt.wait_unless_first, [(x, gate) for x in range(6)], chunk_size=1)
        assert next(it) == 0
        during = pool.get_insights()
        check_shape(during, 2)
        # The engine counts a task before its result can be read.
        assert sum(during["n_completed_tasks"]) >= 1
        assert "Arg 0: 0 | Arg 1: " in during["top_5_max_task_args"][0]
        gates.open("rest")
        assert list(it) == [1, 2, 3, 4, 5]
        after = pool.get_insights()
    assert sum(after["n_completed_tasks"]) == 6


@pytest.mark.timeout(60)
def test_insights_off_give_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with shoal.WorkerPool(2) as pool:
        pool.map(pt.square, range(10))
        assert pool.get_insights() == {}
        pool.print_insights()
    assert "No insights" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_nothing_before_the_first_map() -> None:
    assert shoal.WorkerPool(2, enable_insights=True).get_insights() == {}


@pytest.mark.timeout(60)
def test_a_map_can_turn_insights_on() -> None:
    with shoal.WorkerPool(2) as pool:
        pool.map(pt.square, range(10), enable_insights=True)
        check_shape(pool.get_insights(), 2)


@pytest.mark.timeout(60)
def test_insights_add_up_across_maps_with_keep_alive() -> None:
    with shoal.WorkerPool(2, enable_insights=True, keep_alive=True) as pool:
        pool.map(pt.square, range(10))
        pool.map(pt.square, range(15))
        assert sum(pool.get_insights()["n_completed_tasks"]) == 25
        pool.apply(pt.square, (3,))
        assert sum(pool.get_insights()["n_completed_tasks"]) == 26


@pytest.mark.timeout(60)
def test_the_slowest_tasks_arguments_as_mpire_writes_them() -> None:
    with shoal.WorkerPool(2, enable_insights=True) as pool:
        pool.map(pt.keyword_task, [{"a": 1, "b": 2}, (3, 4)], chunk_size=1)
        args = set(pool.get_insights()["top_5_max_task_args"])
    assert args == {"Arg a: 1 | Arg b: 2", "Arg 0: 3 | Arg 1: 4"}


@pytest.mark.timeout(60)
def test_a_chunk_of_several_tasks_says_so() -> None:
    with shoal.WorkerPool(1, enable_insights=True) as pool:
        pool.map(pt.square, range(10), chunk_size=5)
        args = pool.get_insights()["top_5_max_task_args"]
    assert len(args) == 2
    assert all(a.startswith("(a chunk of 5 tasks) Arg 0: ") for a in args)


@pytest.mark.timeout(60)
def test_large_arguments_are_not_kept() -> None:
    with shoal.WorkerPool(1, enable_insights=True) as pool:
        assert pool.map(pt.long_arg, ["x" * (1 << 20)]) == [1 << 20]
        assert pool.get_insights()["top_5_max_task_args"] == [_insights.NOT_KEPT]


@pytest.mark.timeout(60)
def test_print_insights_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    with shoal.WorkerPool(2, enable_insights=True) as pool:
        pool.map(pt.square, range(20))
        pool.print_insights()
    out = capsys.readouterr().out
    assert out.startswith("WorkerPool insights")
    assert "Tasks completed: 20" in out
    assert "Top 5 longest tasks" in out
    for part in ("start-up", "init", "waiting", "working", "exit"):
        assert part in out


@pytest.mark.timeout(30)
def test_seconds_are_formatted_as_mpire_formats_them() -> None:
    assert _insights.format_seconds(1.142857) == "0:00:01.142"
    assert _insights.format_seconds(0) == "0:00:00"
    assert _insights.format_seconds(3661.5) == "1:01:01.500"
    assert _insights.format_seconds(0.0005) == "0:00:00.000"


@pytest.mark.timeout(60)
def test_arguments_in_shared_memory_are_not_loaded_again(method: str) -> None:
    """A large array travels in shared memory; the parent never loads the
    kept input of such a chunk (its blocks belong to other chunks by then),
    and the arrays after it arrive intact."""
    np = pytest.importorskip("numpy")
    big = np.arange(8 * 200_000, dtype=np.float64).reshape(8, 200_000)
    with shoal.WorkerPool(2, enable_insights=True, start_method=method, keep_alive=True) as pool:
        sums = pool.map(pt.row_sums, big, n_splits=8)
        assert np.array_equal(sums, big.sum(axis=1))
        args = pool.get_insights()["top_5_max_task_args"]
        assert args and all(a == _insights.NOT_KEPT for a in args)
        again = pool.map(pt.row_sums, big + 1, n_splits=8)
        assert np.array_equal(again, (big + 1).sum(axis=1))
