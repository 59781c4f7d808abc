"""Functions the benchmarks run in workers (importable by every library)."""

from __future__ import annotations

import time


def square(x: int) -> int:
    return x * x


def cpu_5ms(seed: int) -> int:
    """About 5 ms of pure-Python arithmetic on this machine."""
    acc = seed
    for i in range(60_000):
        acc = (acc * 1_103_515_245 + i) % 2_147_483_648
    return acc


def skewed(x: int) -> int:
    """Most tasks take 2 ms, one in ten takes 60 ms (sleeping)."""
    time.sleep(0.060 if x % 10 == 9 else 0.002)
    return x


def skewed_duration(x: int) -> float:
    return 0.060 if x % 10 == 9 else 0.002


def array_sum(a) -> float:
    return float(a[0]) + float(a[-1])


def make_array(i: int):
    import numpy as np

    return np.full(1 << 17, float(i))  # 1 MiB of float64


def sleep_300ms(x: int) -> int:
    time.sleep(0.3)
    return x


def kib_items(n: int):
    """A generator of n items of 1 KiB each."""
    for i in range(n):
        yield i.to_bytes(8, "little") * 128


def length(b: bytes) -> int:
    return len(b)
