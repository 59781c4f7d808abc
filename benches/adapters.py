"""One small pool interface over every library the pool rows compare.

The pool rows (rows_pool.py) are written once against ``map``, ``imap``,
``imap_unordered`` and ``apply_async``; each library is reached through an
adapter that calls its own API with its own defaults.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import workloads as W

WORKERS = 2

# Every library the pool rows can run, in table order.
POOL_LIBS = ["serial", "multiprocessing", "concurrent.futures", "mpire", "loky", "shoal", "shoal.WorkerPool"]
# The libraries with MPIRE's API: the same adapter serves both.
WORKERPOOL_LIBS = ("mpire", "shoal.WorkerPool")


class Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


class Serial:
    def map(self, f, it, chunksize=None):
        return list(map(f, it))

    def imap(self, f, it, chunksize=None):
        return map(f, it)

    imap_unordered = imap

    def apply_async(self, f, args):
        return Done(f(*args))


class StdPool:
    """multiprocessing.Pool and shoal.Pool (the same API)."""

    def __init__(self, pool) -> None:
        self.p = pool

    def map(self, f, it, chunksize=None):
        return self.p.map(f, it, chunksize)

    def imap(self, f, it, chunksize=None):
        return self.p.imap(f, it) if chunksize is None else self.p.imap(f, it, chunksize)

    def imap_unordered(self, f, it, chunksize=None):
        if chunksize is None:
            return self.p.imap_unordered(f, it)
        return self.p.imap_unordered(f, it, chunksize)

    def apply_async(self, f, args):
        return self.p.apply_async(f, args)


class Futures:
    """concurrent.futures.ProcessPoolExecutor and loky's executor."""

    class _Result:
        def __init__(self, fut) -> None:
            self.fut = fut

        def get(self):
            return self.fut.result()

    def __init__(self, ex) -> None:
        self.ex = ex

    def map(self, f, it, chunksize=None):
        return list(self.ex.map(f, it, chunksize=chunksize or 1))

    def imap(self, f, it, chunksize=None):
        return self.ex.map(f, it, chunksize=chunksize or 1)

    def imap_unordered(self, f, it, chunksize=None):
        from concurrent.futures import as_completed

        return (fut.result() for fut in as_completed([self.ex.submit(f, x) for x in it]))

    def apply_async(self, f, args):
        return self._Result(self.ex.submit(f, *args))


class WorkerPoolApi:
    """MPIRE's WorkerPool and shoal.WorkerPool (the same API)."""

    def __init__(self, pool) -> None:
        self.p = pool

    def map(self, f, it, chunksize=None):
        return self.p.map(f, it, chunk_size=chunksize)

    def imap(self, f, it, chunksize=None):
        return self.p.imap(f, it, chunk_size=chunksize)

    def imap_unordered(self, f, it, chunksize=None):
        return self.p.imap_unordered(f, it, chunk_size=chunksize)

    def apply_async(self, f, args):
        return self.p.apply_async(f, args=args)


def worker_pool_class(lib: str) -> Any:
    """``mpire.WorkerPool`` or ``shoal.WorkerPool``."""
    if lib == "mpire":
        import mpire

        return mpire.WorkerPool
    import shoal

    return shoal.WorkerPool


@contextmanager
def pool(lib: str, keep_alive: bool = False) -> Iterator[Any]:
    """A pool of WORKERS workers with the library's defaults, closed on exit.

    ``keep_alive`` matters only to the WorkerPools, whose default (False)
    starts and stops the workers for every map: a row that times a warm
    pool asks for True, as an MPIRE user who maps more than once would."""
    if lib == "serial":
        yield Serial()
    elif lib == "multiprocessing":
        import multiprocessing

        p = multiprocessing.Pool(WORKERS)
        yield StdPool(p)
        p.close()
        p.join()
    elif lib == "shoal":
        import shoal

        p = shoal.Pool(WORKERS)
        yield StdPool(p)
        p.close()
        p.join()
    elif lib == "concurrent.futures":
        from concurrent.futures import ProcessPoolExecutor

        ex = ProcessPoolExecutor(WORKERS)
        yield Futures(ex)
        ex.shutdown(wait=True)
    elif lib == "loky":
        import loky

        ex = loky.get_reusable_executor(max_workers=WORKERS)
        yield Futures(ex)
        ex.shutdown(wait=True)
    elif lib in WORKERPOOL_LIBS:
        p = worker_pool_class(lib)(n_jobs=WORKERS, keep_alive=keep_alive)
        yield WorkerPoolApi(p)
        # With keep_alive=False the map already stopped the workers; with
        # True this stops them (MPIRE's __exit__ is terminate too).
        p.terminate()
    else:
        raise ValueError(lib)


@contextmanager
def warm(lib: str) -> Iterator[Any]:
    """A pool whose workers are up and have run a map, and no garbage of
    the bench's own left for the collector (see :func:`settle`)."""
    with pool(lib, keep_alive=True) as h:
        h.map(W.square, range(100))
        settle()
        yield h


def settle() -> None:
    """A full garbage collection, before a row's timing starts. The bench's
    imports (every library's, for every row) leave objects that a full
    collection has yet to look at; it comes due after some thousands of
    allocations, ~15 ms on this host, inside whichever timed loop reaches
    that count first, which on a 40 ms loop was a third of its time."""
    gc.collect()


def preimport(lib: str) -> None:
    """Import the library before any timing starts."""
    mod = {
        "serial": None,
        "concurrent.futures": "concurrent.futures",
        "shoal.WorkerPool": "shoal",
        "shoal.Executor": "shoal",
        "pebble": "pebble",
    }.get(lib, lib)
    if mod:
        __import__(mod)
    if mod == "shoal":
        import shoal

        # Resolve the lazy exports.
        shoal.Pool  # noqa: B018
        shoal.WorkerPool  # noqa: B018
        shoal.Executor  # noqa: B018
