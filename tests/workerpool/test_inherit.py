"""What forked workers need is inherited, not pickled: a WorkerPool's
settings (shared objects, worker_init, worker_exit) reach workers that fork
(asked for, or shoal's default in a single-threaded process) as the
parent's own objects, even ones that refuse to pickle, and a small map of a
script's function pickles nothing by value (no cloudpickle). Workers
started by spawn or forkserver still get the settings pickled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import shoal
from scripts import run_script


class Unpicklable:
    """Reaches a worker only by inheritance."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.pid = os.getpid()

    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable objects only travel by fork")


def read_shared(shared: Unpicklable, x: int) -> tuple[int, int]:
    return shared.value + x, shared.pid


def init_with(shared: Unpicklable) -> None:
    assert isinstance(shared, Unpicklable)


@pytest.mark.timeout(60)
def test_unpicklable_shared_objects_reach_forked_workers() -> None:
    shared = Unpicklable(100)
    with shoal.WorkerPool(2, start_method="fork", shared_objects=shared) as pool:
        got = pool.map(read_shared, range(5), worker_init=init_with)
    assert got == [(100 + x, os.getpid()) for x in range(5)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_shared_objects_fail_clearly_elsewhere(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method, shared_objects=Unpicklable(1)) as pool:
        with pytest.raises(RuntimeError, match=r"cannot be sent to its .* workers"):
            pool.map(read_shared, range(5))


SCRIPT = """
import os, sys
import shoal


class Unpicklable:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError("only by fork")


def read_shared(shared, x):
    return shared.value + x


def square(x):
    return x * x


if __name__ == "__main__":
    with shoal.WorkerPool(2, shared_objects=Unpicklable(10)) as pool:
        print("shared", pool.map(read_shared, range(3)))
    # The script's own function, no extra arguments: sent by reference.
    with shoal.WorkerPool(2) as pool:
        print("square", pool.map(square, range(4)))
    print("cloudpickle", "cloudpickle" in sys.modules)
"""


@pytest.mark.timeout(120)
def test_default_method_inherits_in_a_single_threaded_script(tmp_path: Path) -> None:
    assert run_script(tmp_path, SCRIPT).splitlines() == [
        "shared [10, 11, 12]",
        "square [0, 1, 4, 9]",
        "cloudpickle False",
    ]
