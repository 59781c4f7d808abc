"""What a benchmark row is, and the targets the issues set on it.

A row is a function run once per library in a fresh interpreter; it
returns a dict of figures (``time`` in seconds always, others as the row
needs). A target is a ratio taken from one row's medians, with the bound
the issue gives; benches report targets, they never assert them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# One row's medians: library -> figures, or None when it ran out of time.
Results = dict[str, "dict | None"]


@dataclass(frozen=True)
class Target:
    """``text`` names the target (``"WorkerPool ≤ 1.10x shoal.Pool"``);
    ``ratio`` computes it from the row's results (None when a side is
    missing); ``met`` says whether a ratio meets it."""

    text: str
    ratio: Callable[[Results], float | None]
    met: Callable[[float], bool]


@dataclass(frozen=True)
class Row:
    fn: Callable[[str], dict]
    title: str
    runs: int
    timeout: int
    libs: tuple[str, ...]
    targets: tuple[Target, ...] = ()
    # Extra environment for the row's interpreters.
    env: dict[str, str] = field(default_factory=dict)
    # Libraries a target compares closely, and their runs (more than
    # ``runs``: the extra rounds run only them).
    pair: tuple[str, ...] = ()
    pair_runs: int = 0


def usable(r: dict | None) -> bool:
    return r is not None and not r.get("failed")


def figure(results: Results, lib: str, key: str = "time") -> float | None:
    r = results.get(lib)
    if not usable(r) or key not in r:
        return None
    return r[key]


def ratio(results: Results, num: str, den: str, key: str = "time") -> float | None:
    """``num``'s figure over ``den``'s (a time ratio: below 1, ``num`` is faster)."""
    a, b = figure(results, num, key), figure(results, den, key)
    if a is None or b is None or b == 0:
        return None
    return a / b


def at_most(bound: float) -> Callable[[float], bool]:
    return lambda x: x <= bound


def at_least(bound: float) -> Callable[[float], bool]:
    return lambda x: x >= bound


def within(subject: str, reference: str, bound: float, label: str) -> Target:
    """``subject`` takes at most ``bound`` times ``reference``'s time."""
    return Target(f"{label} ≤ {bound:g}x", lambda r: ratio(r, subject, reference), at_most(bound))


def faster_than(subject: str, peer: str, by: float, label: str) -> Target:
    """``subject`` is at least ``by`` times faster than ``peer``."""
    return Target(f"{label} ≥ {by:g}x", lambda r: ratio(r, peer, subject), at_least(by))


# Short names of the peers, for target texts.
SHORT = {"concurrent.futures": "PPE", "multiprocessing": "mp.Pool"}


def ahead_of_each(subject: str, peers: tuple[str, ...], label: str) -> list[Target]:
    """``subject`` (called ``label``) faster than each of ``peers``."""
    return [faster_than(subject, p, 1.0, f"{SHORT.get(p, p)}/{label}") for p in peers]
