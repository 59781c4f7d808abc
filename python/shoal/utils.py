"""Helpers MPIRE programs import from ``mpire.utils``: ``from shoal.utils
import chunk_tasks, make_single_arguments`` is the one line to change."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Collection, Generator, Iterable, Sized

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal, overload
else:
    from shoal._generic import overload

__all__ = ["chunk_tasks", "make_single_arguments"]


def is_ndarray(obj: object) -> bool:
    """Whether ``obj`` is a numpy array, without importing numpy: if numpy
    was never imported, nothing can be one."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray)


def task_count(iterable_of_args: Iterable[Any], iterable_len: int | None) -> int | None:
    """How many tasks the input holds: ``iterable_len`` if given, else its
    ``len()``, else None (a generator)."""
    if iterable_len is not None:
        return iterable_len
    if isinstance(iterable_of_args, Sized):
        return len(iterable_of_args)
    return None


def chunk_tasks(
    iterable_of_args: Iterable[Any],
    iterable_len: int | None = None,
    chunk_size: float | None = None,
    n_splits: int | None = None,
) -> Generator[Collection[Any], None, None]:
    """Split ``iterable_of_args`` into chunks of ``chunk_size`` tasks, or
    into ``n_splits`` chunks of equal size, as MPIRE's ``chunk_tasks`` does.

    Chunks are tuples, or row slices of a numpy array. A fractional
    ``chunk_size`` carries its remainder over, so 2.5 gives chunks of 3, 2,
    3, 2...; every chunk holds at least one task. ``iterable_len`` caps the
    number of tasks read. Like MPIRE's, this is a generator: a missing
    length is reported when the first chunk is asked for.

    >>> list(chunk_tasks(range(10), chunk_size=2.5))
    [(0, 1, 2), (3, 4), (5, 6, 7), (8, 9)]
    """
    if chunk_size is None:
        if n_splits is None:
            raise ValueError("chunk_size and n_splits cannot both be None")
        n_tasks = task_count(iterable_of_args, iterable_len)
        if n_tasks is None:
            raise ValueError(
                "Either iterable_len or an iterable with a len() function should be provided when "
                "chunk_size and n_splits are None"
            )
        chunk_size = n_tasks / n_splits
    array: Any = iterable_of_args if is_ndarray(iterable_of_args) else None
    it = iter(iterable_of_args)
    # The size asked for this chunk; what rounding it up took beyond
    # chunk_size is taken off the next.
    wanted: float = chunk_size
    done = 0
    while True:
        size = max(1, math.ceil(wanted))
        if iterable_len is not None:
            size = min(size, iterable_len - done)
            if size <= 0:
                return
        chunk: Any = array[done : done + size] if array is not None else tuple(itertools.islice(it, size))
        if len(chunk) == 0:
            return
        yield chunk
        done += len(chunk)
        wanted = wanted + chunk_size - math.ceil(wanted)


@overload
def make_single_arguments(
    iterable_of_args: Iterable[Any], generator: Literal[True] = True
) -> Generator[tuple[Any], None, None]: ...
@overload
def make_single_arguments(iterable_of_args: Iterable[Any], generator: Literal[False]) -> list[tuple[Any]]: ...
@overload
def make_single_arguments(
    iterable_of_args: Iterable[Any], generator: bool = True
) -> Generator[tuple[Any], None, None] | list[tuple[Any]]: ...
def make_single_arguments(
    iterable_of_args: Iterable[Any], generator: bool = True
) -> Generator[tuple[Any], None, None] | list[tuple[Any]]:
    """Wrap each argument in a 1-tuple, so that ``WorkerPool`` passes a
    tuple, a dict or a list as one argument instead of unpacking it. A
    generator unless ``generator=False``, then a list."""
    wrapped = ((arg,) for arg in iterable_of_args)
    return wrapped if generator else list(wrapped)
