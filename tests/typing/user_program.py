"""A user's program, checked with ``mypy --strict`` by ``make lint``: shoal's
public API as a type checker sees it from outside. Not a test module (pytest
does not collect it); running it runs a small pool."""

from __future__ import annotations

import os
from typing import assert_type

from shoal import Pool, WorkerLostError, WorkerPool
from shoal.utils import chunk_tasks, make_single_arguments


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def label(n: int) -> str:
    return f"#{n}"


def crash(code: int) -> int:
    os._exit(code)


def main() -> None:
    with Pool(2) as pool:
        squares = pool.map(square, range(10))
        assert_type(squares, list[int])

        labels: list[str] = []
        for text in pool.imap(label, range(5)):
            assert_type(text, str)
            labels.append(text)
        unordered = sorted(pool.imap_unordered(square, range(5), chunksize=2))
        assert_type(unordered, list[int])

        sums = pool.starmap(add, [(1, 2), (3, 4)])
        assert_type(sums, list[int])

        total = pool.apply_async(add, (2, 3)).get(timeout=30)
        assert_type(total, int)

        try:
            pool.apply(crash, (3,))
        except WorkerLostError as exc:
            pid: int | None = exc.pid
            print(f"worker {pid} lost (exit code {exc.exitcode}); the pool goes on")

        print(squares, labels, unordered, sums, total)

    # The MPIRE-style front door.
    with WorkerPool(2) as wpool:
        mapped = wpool.map(add, [(1, 2), (3, 4)], chunk_size=1.5)
        one: int = wpool.apply(add, (1, 2))
        later = wpool.apply_async(square, 3)
        assert_type(later.get(timeout=30), int)
        streamed = [x for x in wpool.imap_unordered(square, make_single_arguments(range(4)), iterable_len=4)]
        print(mapped, one, streamed, wpool.get_exit_results(), list(chunk_tasks(range(5), n_splits=2)))


if __name__ == "__main__":
    main()
