"""Callables with state, importable by workers (``tests/`` is on their path):
a cache that reused their pickle would run them with stale state."""

from __future__ import annotations

from typing import Any


def scaled(x: int, cfg: dict[str, int]) -> int:
    return x * cfg["k"]


class Multiplier:
    """A callable instance whose factor a caller may change between calls."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, x: int) -> int:
        return x * self.k

    def times(self, x: int) -> int:
        return x * self.k


def identity(x: Any) -> Any:
    return x
