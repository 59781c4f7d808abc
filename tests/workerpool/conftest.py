"""WorkerPool tests run under every start method shoal has."""

from __future__ import annotations

import pytest

START_METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(params=START_METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)
