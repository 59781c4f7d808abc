"""An executor per start method, shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import shoal

START_METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(scope="module", params=START_METHODS)
def executor(request: pytest.FixtureRequest) -> Iterator[shoal.Executor]:
    """A two-worker executor, per start method."""
    ex = shoal.Executor(2, start_method=request.param)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)
