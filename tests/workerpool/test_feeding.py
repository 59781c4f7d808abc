"""How a map reads its input: ``map`` and ``map_unordered`` of an input in
memory read it on the calling thread, which also reads the results (no
feeder thread per map), with Pool.map's chunks unless the caller sizes them,
under every start method."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import shoal
import tasks


class Recorded:
    """A sized input that records the thread reading each item, and raises
    ``stop_with`` instead of yielding item ``stop_at``."""

    def __init__(self, items: list[Any], stop_at: int | None = None, stop_with: BaseException | None = None) -> None:
        self.items = items
        self.stop_at = stop_at
        self.stop_with = stop_with
        self.readers: set[str] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        for i, item in enumerate(self.items):
            self.readers.add(threading.current_thread().name)
            if i == self.stop_at and self.stop_with is not None:
                raise self.stop_with
            yield item


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("which", ["map", "map_unordered"])
def test_a_map_reads_its_input_on_the_calling_thread(method: str, which: str, chunk_size: int | None) -> None:
    items = Recorded(list(range(200)))
    with shoal.WorkerPool(2, start_method=method) as pool:
        got = getattr(pool, which)(tasks.square, items, chunk_size=chunk_size)
    assert sorted(got) == [x * x for x in range(200)]
    assert items.readers == {threading.current_thread().name}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk_size", [None, 1])
def test_ctrl_c_while_a_map_reads_its_input_is_raised_at_once(method: str, gates: Any, chunk_size: int | None) -> None:
    """The tasks already sent wait for a gate that only the caller opens,
    after the map has raised: Ctrl-C must not wait behind their results."""
    gate = gates.path("open")
    items = Recorded([(gate, i) for i in range(6)], stop_at=4, stop_with=KeyboardInterrupt())
    with shoal.WorkerPool(2, start_method=method) as pool:
        with pytest.raises(KeyboardInterrupt):
            pool.map(tasks.wait_for, items, chunk_size=chunk_size)
        gates.open("open")
        # The pool maps again.
        assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
