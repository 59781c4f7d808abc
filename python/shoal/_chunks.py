"""Where a task is chunked: items from the caller's iterable become pickled
chunks, on the calling thread.

A chunk of one item travels as the bare item, flagged ``SINGLE``, rather
than as a one-element list: at ``chunksize=1`` that saves a list and its
pickle framing on both sides for every task.
"""

from __future__ import annotations

import itertools

from shoal import _protocol as P
from shoal._pickling import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def task_flags(size: int, base: int = 0) -> int:
    """The job's task flags for chunks of ``size`` items."""
    return base | P.SINGLE if size == 1 else base


class Chunks:
    """Pickled chunks read from ``iterable``, ``size`` items each."""

    __slots__ = ("_it", "error", "exhausted", "size")

    def __init__(self, iterable: Any, size: int) -> None:
        self._it: Iterator[Any] = iter(iterable)
        self.size = size
        self.exhausted = False
        # An exception raised by the iterable, or by pickling an item. It
        # ends the input and surfaces at this position, as in multiprocessing.
        self.error: BaseException | None = None

    def read(self, max_chunks: int) -> tuple[list[bytes], list[int]]:
        """Up to ``max_chunks`` pickled chunks and their lengths in items."""
        payloads: list[bytes] = []
        lens: list[int] = []
        if self.exhausted:
            return payloads, lens
        append = payloads.append
        try:
            if self.size == 1:
                for item in itertools.islice(self._it, max_chunks):
                    append(dumps(item))
                lens = [1] * len(payloads)
                if len(payloads) < max_chunks:
                    self.exhausted = True
            else:
                islice, size = itertools.islice, self.size
                for _ in range(max_chunks):
                    chunk = list(islice(self._it, size))
                    if not chunk:
                        self.exhausted = True
                        break
                    append(dumps(chunk))
                    lens.append(len(chunk))
        except Exception as exc:  # noqa: BLE001 - surfaces at its position
            self.error = exc
            self.exhausted = True
            if self.size == 1:
                lens = [1] * len(payloads)  # every chunk read before the error is whole
            else:
                del payloads[len(lens) :]
        return payloads, lens
