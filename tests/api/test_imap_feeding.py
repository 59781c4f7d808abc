"""imap reads its input on a thread of its own: a slow, blocking or failing
generator never blocks imap(), next(timeout) or the consumer's own loop."""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import threading

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_items_read_before_the_input_raised_are_all_delivered_then_the_error(
    pool: shoal.Pool, chunksize: int | None
) -> None:
    def gen():
        for i in range(100):
            if i == 50:
                raise RuntimeError("input broke at item 50")
            yield i

    got = []
    with pytest.raises(RuntimeError, match="input broke at item 50"):
        for value in pool.imap(tasks.identity, gen(), chunksize=chunksize):
            got.append(value)
    assert got == list(range(50))


def test_imap_returns_at_once_and_the_first_result_needs_only_the_first_item(pool: shoal.Pool) -> None:
    released = threading.Event()

    def gen():
        yield 0
        # imap() must have returned, and the first result come back, with
        # only item 0 read.
        if not released.wait(10):
            raise AssertionError("imap() or the first result waited for the second item")
        yield from range(1, 5)

    it = pool.imap(tasks.square, gen())
    assert it.next(timeout=30) == 0
    released.set()
    assert list(it) == [1, 4, 9, 16]


def test_next_with_a_timeout_gives_up_while_the_generator_blocks(pool: shoal.Pool) -> None:
    released = threading.Event()

    def gen():
        if not released.wait(10):
            raise AssertionError("next(timeout) waited for the generator")
        yield 3

    it = pool.imap(tasks.square, gen())
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.2)
    released.set()
    assert list(it) == [9]


def test_a_generator_fed_from_the_results_does_not_deadlock(pool: shoal.Pool) -> None:
    # The next input depends on the last result: only possible when the
    # generator does not run on the consumer's thread.
    inbox: queue.Queue[int | None] = queue.Queue()
    inbox.put(1)

    def gen():
        while (x := inbox.get(timeout=10)) is not None:
            yield x

    got = []
    for value in pool.imap(tasks.square, gen()):
        got.append(value)
        inbox.put(value + 1 if len(got) < 4 else None)
    assert got == [1, 4, 25, 676]


def test_a_generator_that_raises_base_exceptions_ends_the_input_there(pool: shoal.Pool) -> None:
    def gen():
        yield 1
        yield 2
        raise SystemExit(3)

    it = pool.imap(tasks.square, gen(), chunksize=1)
    assert [next(it), next(it)] == [1, 4]
    with pytest.raises(SystemExit):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_terminate_returns_while_the_generator_blocks_and_the_reader_gets_an_error() -> None:
    p = shoal.Pool(2)
    released = threading.Event()

    def gen():
        yield 1
        released.wait(30)
        yield 2

    it = p.imap(tasks.square, gen())
    assert it.next(timeout=30) == 1
    p.terminate()
    p.join()
    with pytest.raises(shoal.PoolTerminatedError, match="terminated"):
        it.next(timeout=30)
    released.set()


def test_an_iterator_several_threads_read_delivers_every_result_once(pool: shoal.Pool) -> None:
    it = pool.imap_unordered(tasks.square, (i for i in range(5000)), chunksize=1)
    seen: list[list[int]] = [[], [], []]

    def read(out: list[int]) -> None:
        out.extend(it)

    readers = [threading.Thread(target=read, args=(out,)) for out in seen]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert sorted(seen[0] + seen[1] + seen[2]) == [i * i for i in range(5000)]


def test_a_job_cancelled_in_the_engine_ends_its_feeder_and_its_reader(pool: shoal.Pool) -> None:
    # A front door may cancel an imap's job in the engine (WorkerPool ends a
    # map so); the feeder must stop, not spin on a job that takes no input.
    it = pool.imap(tasks.square, itertools.count(), chunksize=1)
    assert next(it) == 0
    pool._engine.cancel(it._job)
    feeder = it._lazy.feeder
    feeder.join(timeout=30)
    assert not feeder.is_alive()
    # Reading on ends in the cancelled chunks' errors, then the input's.
    with pytest.raises((shoal.PoolTerminatedError, RuntimeError), match=r"cancelled|no more input"):
        while True:
            it.next(timeout=30)
