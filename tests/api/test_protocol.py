"""The Python side and the engine agree on what a chunk's status means.

The frame codec is Rust's alone; what Python shares with it are the task
bits and the statuses, which it takes from the extension. Every status the
engine can report must decode to the error a user expects.
"""

from __future__ import annotations

import pickle

from shoal import PoolTerminatedError, WorkerLostError, _shoal
from shoal import _protocol as P
from shoal._results import decode


def test_the_numbers_are_the_extensions() -> None:
    statuses = sorted(getattr(_shoal, n) for n in dir(_shoal) if n.startswith("STATUS_"))
    assert statuses == list(range(6))
    assert [P.OK, P.ITEM_ERRORS, P.CHUNK_FAILED, P.WORKER_LOST, P.CANCELLED, P.TIMED_OUT] == statuses
    # Task bits are bits; a status is a number; they never share a field of
    # the same frame, so they may overlap without meaning the same thing.
    bits = [P.STAR, P.APPLY, P.SINGLE, P.ISOLATE]
    assert all(b and not b & (b - 1) for b in bits) and len(set(bits)) == len(bits)


def test_every_status_decodes_to_what_a_user_expects() -> None:
    assert decode(P.OK, True, pickle.dumps(3), 1) == ([3], None)
    assert decode(P.OK, False, pickle.dumps([1, 2]), 2) == ([1, 2], None)
    # As crates/shoal-core/src/supervise.rs `lost_message` lays it out.
    what = b"the worker process 123 running parse on input item 6 died with signal 9 (SIGKILL)"
    head = f"123 signal 9 {P.STAR | P.SINGLE} {len(what)} {len('parse')}\n".encode()
    lost = head + what + b"parse" + pickle.dumps(("x" * 500, 7))
    for status in (P.WORKER_LOST, P.TIMED_OUT):
        _, errors = decode(status, True, lost, 1)
        assert errors is not None
        e = errors[0]
        assert isinstance(e, WorkerLostError) and e.signal == 9 and e.pid == 123 and e.exitcode is None
        assert str(e).startswith(what.decode())
        # The call, its long argument shortened.
        note = str(e).split("\n")[-1]
        assert note.startswith("in the task parse('xxx") and note.endswith("', 7)") and len(note) < 120, note
    _, errors = decode(P.CANCELLED, False, b"the task was cancelled", 2)
    assert errors is not None and set(errors) == {0, 1}
    assert all(isinstance(e, PoolTerminatedError) for e in errors.values())
    _, errors = decode(200, True, b"", 1)
    assert errors is not None and "unknown chunk status 200" in str(errors[0])
