"""The protocol's numbers the Python side uses: task bits, chunk statuses,
and the zygote's reply records.

The frame codec is Rust's (``crates/shoal-core/src/frame.rs``): the worker's
loop (``crates/shoal-py/src/worker_loop.rs``) reads and makes every frame,
so Python never packs or parses one. Task bits and statuses come from the
extension. No imports beyond ``struct`` and the extension, so the worker and
the zygote can use it without loading the rest of shoal.
"""

import struct

from shoal import _shoal as _x

# Task bits: how the worker calls the function.
STAR = _x.TASK_STAR
APPLY = _x.TASK_APPLY
SINGLE = _x.TASK_SINGLE  # one item, not a list; an OK result is one value
ISOLATE = _x.TASK_ISOLATE  # run alone: results flushed before and after (a crash suspect)
UNPACK = _x.TASK_UNPACK  # MPIRE's rule per item: tuple f(*item), dict f(**item), else f(item)

# A chunk's status: a worker reports the first three, the engine the rest.
OK = _x.STATUS_OK
ITEM_ERRORS = _x.STATUS_ITEM_ERRORS
CHUNK_FAILED = _x.STATUS_CHUNK_FAILED
WORKER_LOST = _x.STATUS_WORKER_LOST
CANCELLED = _x.STATUS_CANCELLED
TIMED_OUT = _x.STATUS_TIMED_OUT

# Zygote reply records (crates/shoal-core/src/launch.rs): tag, pid, value.
ZYGOTE_RECORD = struct.Struct("<Iii")
ZYGOTE_FORKED = 1
ZYGOTE_EXITED = 2
ZYGOTE_HEIR = 3  # an heir was forked: its control socket is attached
