"""The Python worker packs frames with ``struct``; the engine reads them with
the Rust codec. These tests hold the two to one layout."""

from __future__ import annotations

from shoal import _protocol as P
from shoal import _shoal


def test_every_number_comes_from_the_extension() -> None:
    assert P.HEADER_LEN == _shoal.HEADER_LEN == 24
    kinds = {name: getattr(_shoal, name) for name in dir(_shoal) if name.startswith("KIND_")}
    assert {getattr(P, name.removeprefix("KIND_")) for name in kinds} == set(kinds.values())
    statuses = [getattr(_shoal, n) for n in dir(_shoal) if n.startswith("STATUS_")]
    assert sorted(statuses) == list(range(len(statuses)))
    # Task bits are bits; a status is a number; they never share a field of
    # the same frame, so they may overlap without meaning the same thing.
    bits = [P.STAR, P.APPLY, P.SINGLE, P.ISOLATE]
    assert all(b and not b & (b - 1) for b in bits) and len(set(bits)) == len(bits)


def test_a_result_packed_in_python_reads_the_same_in_rust() -> None:
    header = P.HEADER.pack(5, P.RESULT, P.ITEM_ERRORS, 3, 0x01020304, 7, 123_456_789)
    assert _shoal.read_header(header) == (5, P.RESULT, P.ITEM_ERRORS, 3, 0x01020304, 7, 123_456_789)


def test_a_task_and_an_init_read_as_the_worker_unpacks_them() -> None:
    # The worker unpacks a Task as (len, kind, bits, _, job, index, func).
    task = P.HEADER.pack(9, P.TASK, P.STAR | P.SINGLE, 0, 11, 12, 13)
    assert _shoal.read_header(task) == (9, P.TASK, P.STAR | P.SINGLE, 0, 11, 12, 13)
    # An Init names the slot in `a` and the serial in `c`.
    init = P.HEADER.pack(0, P.INIT, 0, 0, 1, 0, 42)
    assert _shoal.read_header(init)[4::2] == (1, 42)
    # Ready carries the initializer's run time in `c`.
    ready = P.HEADER.pack(0, P.READY, 0, 0, 0, 0, 1_000)
    assert _shoal.read_header(ready)[-1] == 1_000
