"""Worker insights, as MPIRE reports them, from the engine's counters.

The engine times every worker slot as it goes (``Engine.stats``,
``crates/shoal-core/src/stats.rs``): from launch to ready (start-up, its
initializer included), in the initializer, idle, running chunks (as the
worker measured it) and exiting, plus the items it completed and its five
slowest chunks with their input (up to ``KEEP_INPUT_BYTES`` each). Nothing
is measured here, so insights cost nothing per task, on or off; this
module only turns a snapshot of those counters into MPIRE's dict (same
keys, same ``'0:00:01.142'`` strings) and a table.

Two differences from MPIRE, both from timing chunks rather than tasks: a
worker's working time is the time it spent running chunks, and an entry of
``top_5_max_task_durations`` is a chunk. With one task per chunk (what a
map of slow tasks gets) that is the task; for a chunk of several tasks the
duration is the chunk's and its arguments say how many tasks it held.
"""

from __future__ import annotations

import io
import math
import pickle

from shoal import _protocol as P
from shoal._shoal import unpack_one, unpack_values
from shoal.utils import is_ndarray

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PARTS = ("start_up", "init", "waiting", "working", "exit")
TOP = 5
# Tasks of one chunk whose arguments a top-5 entry shows.
SHOWN_TASKS = 3
NOT_KEPT = "<arguments not kept: too large, or held in shared memory>"


def format_seconds(seconds: float) -> str:
    """``seconds`` as MPIRE shows a duration: ``H:MM:SS`` and, when there
    is a fraction, its first three digits (``0:00:01.142``)."""
    # Imported here: datetime cost every program's first WorkerPool ~1.3 ms.
    from datetime import timedelta

    whole, _, fraction = str(timedelta(seconds=seconds)).partition(".")
    return f"{whole}.{fraction[:3]}" if fraction else whole


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


class _Unpickler(pickle.Unpickler):
    """Loads a kept input here, in the parent, for its repr. An input whose
    large buffers travelled in shared memory is refused: loading it would
    read (and free) blocks that belong to other chunks by now."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "shoal._shm":
            raise pickle.UnpicklingError("its buffers were in shared memory")
        return super().find_class(module, name)


def _load(payload: bytes, single: bool) -> Any:
    """A kept chunk input, as ``_pickling.loads_one``/``loads_chunk`` load
    it: a pickle, or numbers packed by the extension."""
    if payload[:1] == b"\x80":  # a pickle (protocol 2+)
        return _Unpickler(io.BytesIO(payload)).load()
    return unpack_one(payload) if single else unpack_values(payload)


def _task_args(item: Any) -> str:
    """One task's arguments as MPIRE shows them (``Arg 0: 5 | Arg 1: 2``),
    unpacked as a ``WorkerPool`` task unpacks them: a dict into keywords,
    another iterable (not a string, bytes or array) into positions."""
    if isinstance(item, dict):
        return " | ".join(f"Arg {k}: {v!r}" for k, v in item.items())
    if isinstance(item, (str, bytes)) or is_ndarray(item) or not hasattr(item, "__iter__"):
        return f"Arg 0: {item!r}"
    return " | ".join(f"Arg {i}: {v!r}" for i, v in enumerate(item))


def describe_input(task_bits: int, payload: bytes, items: int) -> str:
    """The arguments of a chunk the engine kept: one task's, or for a chunk
    of several, the first few tasks' and how many it held."""
    try:
        if task_bits & P.SINGLE:
            one = _load(payload, True)
            if task_bits & P.APPLY:  # (args, kwargs) of an apply
                args, kwargs = one
                parts = [f"Arg {i}: {v!r}" for i, v in enumerate(args)]
                parts += [f"Arg {k}: {v!r}" for k, v in kwargs.items()]
                return " | ".join(parts)
            return _task_args(one)
        tasks = list(_load(payload, False))
    except Exception:  # noqa: BLE001 - an input that does not load here is shown as not kept
        return NOT_KEPT
    if len(tasks) == 1:
        return _task_args(tasks[0])
    shown = " || ".join(_task_args(t) for t in tasks[:SHOWN_TASKS])
    more = " || ..." if len(tasks) > SHOWN_TASKS else ""
    return f"(a chunk of {len(tasks)} tasks) {shown}{more}"


def insights(stats: dict[str, Any]) -> dict[str, Any]:
    """MPIRE's insights dict from an ``Engine.stats()`` snapshot."""
    workers = stats["workers"]
    parts: dict[str, list[float]] = {
        # Start-up as MPIRE counts it: up to the worker's own code, the
        # initializer (counted as init) excluded.
        "start_up": [max(0.0, w["start_up"] - w["init"]) for w in workers],
        "init": [w["init"] for w in workers],
        "waiting": [w["idle"] for w in workers],
        "working": [w["busy"] for w in workers],
        "exit": [w["exit"] for w in workers],
    }
    slowest = sorted((s for w in workers for s in w["slowest"]), key=lambda s: s[0], reverse=True)[:TOP]
    durations, args = [], []
    for seconds, _job, _chunk, _first, items, kept in slowest:
        if seconds <= 0:
            break
        durations.append(format_seconds(seconds))
        args.append(NOT_KEPT if kept is None else describe_input(kept[0], kept[1], items))
    totals = {part: sum(values) for part, values in parts.items()}
    total_time = sum(totals.values())
    out: dict[str, Any] = {"n_completed_tasks": [w["tally"]["done"][1] for w in workers]}
    for part in PARTS:
        out[f"{part}_time"] = [format_seconds(v) for v in parts[part]]
    for part in PARTS:
        out[f"total_{part}_time"] = format_seconds(totals[part])
    out["top_5_max_task_durations"] = durations
    out["top_5_max_task_args"] = args
    out["total_time"] = format_seconds(total_time)
    for part in PARTS:
        mean, std = _mean_std(parts[part])
        # MPIRE's guard against a zero total, kept so ratios match its.
        out[f"{part}_ratio"] = totals[part] / (total_time + 1e-8)
        out[f"{part}_time_mean"] = format_seconds(mean)
        out[f"{part}_time_std"] = format_seconds(std)
    return out


def table(found: dict[str, Any]) -> str:
    """``insights()``'s dict as a readable table."""
    if not found:
        return "No insights available: enable_insights=True, then run a map or apply first."
    names = {"start_up": "start-up", "init": "init", "waiting": "waiting", "working": "working", "exit": "exit"}
    lines = [
        "WorkerPool insights",
        "-------------------",
        f"Tasks completed: {sum(found['n_completed_tasks'])}",
        f"Total time: {found['total_time']}",
        "",
        f"{'':<10}{'total':>16}{'mean':>16}{'std':>16}{'ratio':>9}",
    ]
    for part in PARTS:
        lines.append(
            f"{names[part]:<10}{found[f'total_{part}_time']:>16}{found[f'{part}_time_mean']:>16}"
            f"{found[f'{part}_time_std']:>16}{found[f'{part}_ratio'] * 100:>8.2f}%"
        )
    if found["working_ratio"] < 0.8:
        lines += ["", "Efficiency warning: working ratio is < 80%!"]
    lines += ["", f"{'worker':<8}{'tasks':>8}" + "".join(f"{names[p]:>16}" for p in PARTS)]
    for i, n in enumerate(found["n_completed_tasks"]):
        lines.append(f"{i:<8}{n:>8}" + "".join(f"{found[f'{p}_time'][i]:>16}" for p in PARTS))
    lines += ["", "Top 5 longest tasks", "-------------------"]
    for rank, (duration, args) in enumerate(
        zip(found["top_5_max_task_durations"], found["top_5_max_task_args"], strict=True), start=1
    ):
        lines.append(f"{rank}. {duration}  {args}")
    return "\n".join(lines)
