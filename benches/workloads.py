"""Functions the benchmarks run in workers (importable by every library)."""


def square(x: int) -> int:
    return x * x
