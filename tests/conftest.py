"""Shared fixtures: pools per start method, and gates to synchronise on."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Worker-side helpers live in tests/tasks.py; workers import it by name.
sys.path.insert(0, str(Path(__file__).parent))

import shoal

START_METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(scope="module", params=START_METHODS)
def pool(request: pytest.FixtureRequest) -> Iterator[shoal.Pool]:
    """A two-worker pool shared by a module's tests, per start method."""
    p = shoal.Pool(2, start_method=request.param)
    yield p
    p.terminate()
    p.join()


class Gates:
    """Files a task waits for, so a test decides when each task may finish."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: object) -> str:
        return str(self.root / f"gate-{name}")

    def open(self, name: object) -> None:
        Path(self.path(name)).touch()


@pytest.fixture
def gates(tmp_path: Path) -> Gates:
    return Gates(tmp_path)


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    yield
    # Reap anything a test left behind so one test's zombies do not show up in another's.
    try:
        while os.waitpid(-1, os.WNOHANG) != (0, 0):
            pass
    except ChildProcessError:
        pass
