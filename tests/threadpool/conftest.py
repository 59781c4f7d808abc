"""ThreadPool fixtures: a pool shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import shoal


@pytest.fixture(scope="module")
def tpool() -> Iterator[shoal.ThreadPool]:
    """A three-thread pool shared by a module's tests."""
    p = shoal.ThreadPool(3)
    yield p
    p.terminate()
    p.join()
