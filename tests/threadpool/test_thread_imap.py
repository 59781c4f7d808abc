"""imap reads its input only as workers need it, as shoal.Pool's does."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Iterator

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)


def test_imap_reads_only_what_the_window_holds() -> None:
    read: list[int] = []
    release = threading.Event()

    def source() -> Iterator[int]:
        for i in range(100_000):
            read.append(i)
            yield i

    def work(x: int) -> int:
        release.wait(30)
        return x

    with shoal.ThreadPool(2) as p:
        it = p.imap(work, source())
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.05)  # every worker is blocked
        assert len(read) < 1000
        release.set()
        assert list(itertools.islice(it, 10)) == list(range(10))


def test_imap_of_an_endless_input_and_a_break() -> None:
    with shoal.ThreadPool(2) as p:
        total = 0
        for i, x in enumerate(p.imap(lambda x: x * 2, itertools.count())):
            total += x
            if i == 99:
                break
        assert total == sum(2 * x for x in range(100))


def test_imap_unordered_is_lazy_too() -> None:
    read: list[int] = []

    def source() -> Iterator[int]:
        for i in itertools.count():
            read.append(i)
            yield i

    with shoal.ThreadPool(2) as p:
        it = p.imap_unordered(abs, source())
        assert len(list(itertools.islice(it, 50))) == 50
        # Bounded by the window: 12 chunks for 2 workers, of at most 4,096
        # items each once tiny tasks have grown them; twice that, as slack
        # for a loaded machine. A CI run read 20,576 with a bound of
        # 10,000: within the design, over the test's old guess.
        window = shoal._shoal.window_chunks(2, True)
        assert len(read) <= 2 * window * 4096


def test_imap_next_with_timeout() -> None:
    release = threading.Event()
    with shoal.ThreadPool(1) as p:
        it = p.imap(lambda x: release.wait(30) and x, [1, 2])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.05)
        release.set()
        assert it.next(timeout=30) == 1
        assert list(it) == [2]
