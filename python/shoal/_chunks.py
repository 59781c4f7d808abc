"""Where a task is chunked: items from the caller's iterable become pickled
chunks, on the calling thread.

A chunk of one item travels as the bare item, flagged ``SINGLE``, rather
than as a one-element list: at ``chunksize=1`` that saves a list and its
pickle framing on both sides for every task.
"""

from __future__ import annotations

import itertools

from shoal._pickling import dumps, dumps_chunk, dumps_many

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from shoal._shm import Outbound


class Chunks:
    """Pickled chunks read from ``iterable``, ``size`` items each."""

    __slots__ = ("_it", "_range", "error", "exhausted", "oob", "single", "size")

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

    def read(self, max_chunks: int) -> tuple[list[bytes], list[int]]:
        """Up to ``max_chunks`` pickled chunks and their lengths in items."""
        if self.exhausted:
            return [], []
        if self.single:
            return self._read_single(max_chunks)
        if self._range is not None:
            return self._read_range(max_chunks)
        payloads: list[bytes] = []
        lens: list[int] = []
        islice, size = itertools.islice, self.size
        try:
            for _ in range(max_chunks):
                chunk = list(islice(self._it, size))
                if not chunk:
                    self.exhausted = True
                    break
                payloads.append(dumps_chunk(chunk, self.oob))
                lens.append(len(chunk))
        except Exception as exc:  # noqa: BLE001 - surfaces at its position
            self.error = exc
            self.exhausted = True
            del payloads[len(lens) :]
        return payloads, lens

    def _read_range(self, max_chunks: int) -> tuple[list[bytes], list[int]]:
        r, size = self._range, self.size
        assert r is not None
        parts = [r[i : i + size] for i in range(0, min(len(r), size * max_chunks), size)]
        self._range = r[size * len(parts) :]
        if not self._range:
            self.exhausted = True
        return [dumps(p) for p in parts], [len(p) for p in parts]

    def _read_single(self, max_chunks: int) -> tuple[list[bytes], list[int]]:
        items: list[Any] = []
        try:
            # extend() keeps what was read before an exception.
            items.extend(itertools.islice(self._it, max_chunks))
        except Exception as exc:  # noqa: BLE001 - surfaces at its position
            self.error = exc
        if self.error is not None or len(items) < max_chunks:
            self.exhausted = True
        try:
            payloads = dumps_many(items, self.oob)
        except Exception as exc:  # noqa: BLE001 - surfaces at its position
            payloads = getattr(exc, "shoal_done", [])
            self.error = exc
            self.exhausted = True
        return payloads, [1] * len(payloads)
