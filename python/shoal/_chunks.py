"""Where a task is chunked: items from the caller's iterable become pickled
chunks, on the thread that reads the input (the caller's for ``map``, a
feeder thread for ``imap``).

A chunk of one item travels as the bare item, flagged ``SINGLE``, rather
than as a one-element list: at ``chunksize=1`` that saves a list and its
pickle framing on both sides for every task.
"""

from __future__ import annotations

import itertools

from shoal._pickling import LARGE, Sink, dumps, dumps_chunk, dumps_many

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from shoal._shm import Outbound


class Chunks:
    """Pickled chunks read from ``iterable``, ``size`` items each."""

    __slots__ = (
        "_it",
        "_range",
        "error",
        "exhausted",
        "oob",
        "packed",
        "pending",
        "pickling_failed",
        "single",
        "sink",
        "size",
    )

    def __init__(self, iterable: Any, size: int, single: bool | None = None, oob: Outbound | None = None) -> None:
        self._it: Iterator[Any] = iter(iterable)
        # A range is chunked into sub-ranges: a few bytes to pickle per chunk
        # instead of one pickled int per item, on both sides.
        self._range: range | None = iterable if type(iterable) is range else None
        # Items per chunk; a caller may change it between reads (adaptive).
        self.size = size
        # Chunks of one item travel bare (SINGLE). Only for a size fixed at 1:
        # a job's chunks all share its flags.
        self.single = size == 1 if single is None else single
        self.exhausted = False
        # Where large buffers go (shared memory), if anywhere.
        self.oob = oob
        # An exception raised by the iterable, or by pickling an item. It
        # ends the input and surfaces at this position, as in multiprocessing.
        self.error: BaseException | None = None
        # Items read by the last fill(); the first `packed` of them are
        # pickled. fill() appends them one by one as the iterable yields them
        # (list.extend does), so while the iterable blocks, another thread
        # may pack() the ones already read. Only pack(done=True) removes
        # items, so a fill() counts what it read by the list's growth.
        self.pending: list[Any] = []
        self.packed = 0
        # A pack() failed: the items after the one that failed are dropped.
        self.pickling_failed = False
        # Set once a chunk pickled to LARGE bytes or more: later chunks are
        # pickled through it. pack() runs on one thread at a time (the
        # reader's, or under its feeder's lock).
        self.sink: Sink | None = None

    @property
    def sliced(self) -> bool:
        """Whether reads pickle sub-ranges of a range: no user code runs, and
        nothing is pending."""
        return self._range is not None and not self.single

    def read(self, max_chunks: int) -> tuple[list[bytes], list[int]]:
        """Up to ``max_chunks`` pickled chunks and their lengths in items."""
        if self.exhausted:
            return [], []
        if self.sliced:
            return self._read_range(max_chunks)
        self.fill(max_chunks)
        return self.pack(done=True)

    def fill(self, max_chunks: int) -> None:
        """Read the items of up to ``max_chunks`` chunks into ``pending``."""
        if self.exhausted:
            return
        want = max_chunks if self.single else max_chunks * self.size
        pending = self.pending
        before = len(pending)
        try:
            # extend() keeps what was read before an exception.
            pending.extend(itertools.islice(self._it, want))
        except Exception as exc:  # noqa: BLE001 - surfaces at its position
            if self.error is None:  # a failed pickling came before it
                self.error = exc
            self.exhausted = True
            return
        if len(pending) - before < want:
            self.exhausted = True

    def pack(self, done: bool) -> tuple[list[bytes], list[int]]:
        """Pickle the items of ``pending`` not pickled yet: bare (single), or
        in chunks of ``size`` items, the last maybe shorter. ``done``: the
        reader's own call after a fill(), which empties ``pending``; without
        it, another thread's while the fill() blocks in the iterable."""
        pending = self.pending
        items = pending[self.packed :]
        if done:
            pending.clear()
            self.packed = 0
        else:
            self.packed += len(items)
        if not items or self.pickling_failed:
            return [], []
        if self.single:
            try:
                payloads = dumps_many(items, self.oob)
            except Exception as exc:  # noqa: BLE001 - surfaces at its position
                payloads = getattr(exc, "shoal_done", [])
                self._pickling_failed(exc)
            return payloads, [1] * len(payloads)
        size = self.size
        payloads, lens = [], []
        for i in range(0, len(items), size):
            chunk = items[i : i + size]
            try:
                payload = dumps_chunk(chunk, self.oob, self.sink)
            except Exception as exc:  # noqa: BLE001 - surfaces at its position
                self._pickling_failed(exc)
                break
            if self.sink is None and len(payload) >= LARGE:
                self.sink = Sink()
            payloads.append(payload)
            lens.append(len(chunk))
        return payloads, lens

    def _pickling_failed(self, exc: BaseException) -> None:
        # Before any error the iterable raised: every pending item was read
        # before it.
        self.error = exc
        self.exhausted = True
        self.pickling_failed = True

    def _read_range(self, max_chunks: int) -> tuple[list[bytes], list[int]]:
        r, size = self._range, self.size
        assert r is not None
        parts = [r[i : i + size] for i in range(0, min(len(r), size * max_chunks), size)]
        self._range = r[size * len(parts) :]
        if not self._range:
            self.exhausted = True
        return [dumps(p) for p in parts], [len(p) for p in parts]
