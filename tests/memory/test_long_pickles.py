"""Long pickles (a feeder's chunks, once one has pickled to LARGE bytes or
more) are written through a Sink, one buffer kept from pickle to pickle:
the same bytes to the workers, and no fresh pages for every page written
(see _pickling.Sink)."""

from __future__ import annotations

import pickle
import resource
import threading

import pytest

import shoal
import tasks
from shoal._chunks import Chunks
from shoal._pickling import LARGE, Sink, dumps, dumps_chunk, loads_chunk

pytestmark = pytest.mark.timeout(60)

KIB = bytes(range(256)) * 4


def _kib_items(n: int, start: int = 0) -> list[bytes]:
    return [i.to_bytes(4, "little") + KIB[4:] for i in range(start, start + n)]


def test_a_sink_writes_what_pickle_writes_long_then_short_then_long() -> None:
    sink = Sink()
    huge = [bytes(Sink.KEEP // 4) for _ in range(5)]  # past KEEP: the buffer is let go
    for obj in (_kib_items(3000), [1, "a"], huge, _kib_items(70, start=9), {"k": bytearray(200_000)}, ()):
        assert pickle.loads(sink(obj, 5)) == obj
        assert pickle.loads(dumps(obj, sink=sink)) == obj


def test_a_sink_lets_go_of_a_buffer_past_keep() -> None:
    sink = Sink()
    sink(_kib_items(100), 5)
    kept = sink._file
    sink([bytes(Sink.KEEP)], 5)
    assert sink._file is not kept and sink._file.getbuffer().nbytes == 0


def test_a_pickle_that_fails_in_a_sink_leaves_it_writing_the_next_whole() -> None:
    sink = Sink()
    with pytest.raises(RuntimeError, match="fault injected"):
        sink([*_kib_items(500), tasks.FaultOnPickle("error")], 5)
    short = _kib_items(3)
    assert pickle.loads(sink(short, 5)) == short


def test_chunks_switch_to_a_sink_after_a_long_chunk_and_keep_every_item() -> None:
    per_chunk = LARGE // 1024 + 1
    items = [*_kib_items(3 * per_chunk), 1, 2]
    chunks = Chunks(items, per_chunk)
    got: list[object] = []
    sinks = []
    while not chunks.exhausted:
        payloads, lens = chunks.read(1)
        sinks.append(chunks.sink)
        for payload, n in zip(payloads, lens, strict=True):
            part = loads_chunk(payload)
            assert len(part) == n
            got += part
    assert got == items
    assert sinks[0] is not None, "the first chunk was long"
    assert len({id(s) for s in sinks}) == 1, "one sink, kept"
    assert dumps_chunk([1, 2], None, sinks[0])[0] != 0x80, "plain ints still pack"


@pytest.mark.parametrize("pool", ["fork", "spawn", "forkserver"], indirect=True)
def test_long_chunks_round_trip_in_order_and_an_unpicklable_item_fails_there(pool: shoal.Pool) -> None:
    items = _kib_items(2000)
    assert list(pool.imap(tasks.identity, iter(items))) == items
    bad = [*_kib_items(600), tasks.FaultOnPickle("error"), *_kib_items(5, start=600)]
    got = []
    with pytest.raises(RuntimeError, match="fault injected"):
        for x in pool.imap(tasks.identity, iter(bad), chunksize=100):
            got.append(x)
    assert got == bad[:600]


def test_a_sink_writes_a_mebibyte_pickle_on_pages_it_already_has() -> None:
    # The cause it exists for: pickle.dumps faulted in each page of a
    # 1 MiB pickle (~240-340 faults a pickle on glibc). Counted on a thread,
    # whose heap (a glibc arena of its own) is where the feeder pickles.
    items = _kib_items(1000)
    faults: list[int] = []

    def run() -> None:
        sink = Sink()
        sink(items, 5)  # the buffer's first growth
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(20):
            sink(items, 5)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert faults[0] < 20 * 64, f"{faults[0] / 20:.0f} page faults a 1 MiB pickle"
