"""Parameters are validated as MPIRE validates them (same exception types
and messages), before any worker starts; what shoal does not implement yet
is refused with NotImplementedError, never ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wp_tasks

import shoal


def children() -> set[int]:
    """This process's child processes."""
    kids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        kids.update(int(p) for p in (task / "children").read_text().split())
    return kids


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"chunk_size": "3"}, TypeError, "chunk_size should be of type"),
        ({"chunk_size": 0.5}, ValueError, "chunk_size should be >= 1"),
        ({"n_splits": 2.0}, TypeError, "n_splits should be of type"),
        ({"n_splits": 0}, ValueError, "n_splits should be >= 1"),
        ({"max_tasks_active": 1.5}, TypeError, "max_tasks_active should be of type"),
        ({"max_tasks_active": 0}, ValueError, "max_tasks_active should be >= 1"),
        ({"worker_lifespan": "1"}, TypeError, "worker_lifespan should be of type"),
        ({"worker_lifespan": 0}, ValueError, "worker_lifespan should be >= 1"),
        ({"task_timeout": "1"}, TypeError, "task_timeout should be of type"),
        ({"task_timeout": 0}, ValueError, "task_timeout should be >= 1e-08"),
        ({"worker_init_timeout": -1}, ValueError, "worker_init_timeout should be >= 1e-08"),
        ({"worker_exit_timeout": []}, TypeError, "worker_exit_timeout should be of type"),
        ({"iterable_len": -1}, ValueError, "iterable_len should be >= 0"),
        ({"progress_bar_options": [1]}, TypeError, "progress_bar_options should be a dictionary"),
        ({"progress_bar_style": "fancy"}, ValueError, "Invalid progress bar style"),
    ],
)
@pytest.mark.parametrize("call", ["map", "map_unordered", "imap", "imap_unordered"])
def test_map_parameters_are_checked_at_the_call(call: str, kwargs: dict, error: type, message: str) -> None:
    before = children()
    pool = shoal.WorkerPool(2)
    with pytest.raises(error, match=message):
        getattr(pool, call)(wp_tasks.square, range(3), **kwargs)
    assert children() == before  # nothing started


def test_unknown_start_method() -> None:
    with pytest.raises(ValueError, match="start_method"):
        shoal.WorkerPool(2, start_method="teleport")


def test_cpu_ids_are_validated_as_mpire_does() -> None:
    n = os.cpu_count() or 1
    with pytest.raises(ValueError, match=r"Number of CPU IDs \(2\) does not match number of jobs \(3\)"):
        shoal.WorkerPool(3, cpu_ids=[0, 0])
    with pytest.raises(TypeError, match="CPU ID\\(s\\) must be either a list or a single integer"):
        shoal.WorkerPool(1, cpu_ids=["0"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=f"CPU ID {n} exceeds the maximum CPU ID available on your system: {n - 1}"):
        shoal.WorkerPool(2, cpu_ids=[[0, n]])
    with pytest.raises(ValueError, match="CPU IDs cannot be negative"):
        shoal.WorkerPool(2, cpu_ids=[0, -1])
    shoal.WorkerPool(2, cpu_ids=[0])  # one entry for every worker
    shoal.WorkerPool(2, cpu_ids=[[0], 0])


def test_the_constructor_starts_nothing() -> None:
    before = children()
    pool = shoal.WorkerPool(2)
    assert children() == before
    pool.terminate()
