"""close(); join() with imaps in flight: what was submitted runs, nothing is
lost, and join returns, whoever reads the results and however long the input."""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(120)


def _marker(path: Path) -> Callable[[int], int]:
    """A task that records that it ran, by appending one byte to ``path``."""
    name = str(path)

    def mark(x: int) -> int:
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        return x

    return mark


def _ran(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _feeder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shoal-feeder")]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_close_join_runs_every_task_of_imaps_nobody_reads(tmp_path: Path, method: str) -> None:
    p = shoal.Pool(2, start_method=method)
    mark = _marker(tmp_path / "ran")
    p.imap_unordered(mark, range(3000))
    p.imap(mark, (i for i in range(3000)))
    p.close()
    p.join()
    assert _ran(tmp_path / "ran") == 6000
    assert _feeder_threads() == []


def test_an_imap_read_only_after_join_has_every_result() -> None:
    p = shoal.Pool(2)
    it = p.imap(tasks.square, (i for i in range(5000)), chunksize=1)
    p.close()
    p.join()
    assert list(it) == [i * i for i in range(5000)]


def _inside(thread: threading.Thread, func: Callable[..., object]) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is func.__code__:
            return True
        frame = frame.f_back
    return False


def test_close_join_from_another_thread_lets_the_reader_have_every_result() -> None:
    p = shoal.Pool(2)
    closer = threading.Thread(target=lambda: (p.close(), p.join()))

    def gen():
        for i in range(300):
            if i == 20:
                # Hold the input here until the closer is inside join().
                closer.start()
                while not _inside(closer, shoal.Pool.join):
                    assert closer.is_alive(), "join() returned before the input was read"
                    threading.Event().wait(0.005)
            yield i

    got = list(p.imap(tasks.square, gen(), chunksize=1))
    closer.join()
    assert got == [i * i for i in range(300)]


def test_close_join_after_a_break_on_an_endless_input_returns_and_reports_where_it_stopped() -> None:
    drawn = itertools.count()
    limit = 2_000_000

    def endless():
        for i in itertools.count():
            next(drawn)
            if i == limit:
                raise AssertionError("join() read the endless input on and on")
            yield i

    p = shoal.Pool(2)
    it = p.imap(tasks.square, endless())
    for value in it:
        if value >= 100:
            break
    p.close()
    p.join()
    read = next(drawn)
    assert read < limit
    # What was read before join() ran and is delivered; then the reader
    # learns that the rest was never read, and why.
    rest = []
    with pytest.raises(ValueError, match="join"):
        for value in it:
            rest.append(value)
    assert rest == [i * i for i in range(11, 11 + len(rest))]
    assert _feeder_threads() == []


def test_an_imap_left_by_a_break_is_not_read_further_by_close_join() -> None:
    drawn = itertools.count()

    def gen():
        for i in range(1_000_000):
            next(drawn)
            yield i

    p = shoal.Pool(2)
    for value in p.imap(tasks.square, gen(), chunksize=1):
        if value >= 100:
            break
    p.close()
    p.join()
    assert next(drawn) < 100_000
    assert _feeder_threads() == []
