"""The frame layout, for the Python worker and the zygote.

The codec is Rust's (``crates/shoal-core/src/frame.rs``); every number here
comes from the extension, and only the ``struct`` layout is spelled out
again, which ``tests/api/test_protocol.py`` checks against the Rust reader.
No imports beyond ``struct`` and the extension, so the worker and the zygote
can use it without loading the rest of shoal.
"""

import struct

from shoal import _shoal as _x

# len u32 | kind u8 | flags u8 | failed u16 | a u32 | b u32 | c u64
# (what a, b and c hold for each kind: frame.rs)
HEADER = struct.Struct("<IBBHIIQ")
HEADER_LEN = HEADER.size

# Engine to worker.
INIT = _x.KIND_INIT
FUNC = _x.KIND_FUNC
TASK = _x.KIND_TASK
FORGET = _x.KIND_FORGET
EXIT = _x.KIND_EXIT
# Worker to engine.
READY = _x.KIND_READY
RESULT = _x.KIND_RESULT
INIT_FAILED = _x.KIND_INIT_FAILED
EXIT_RESULT = _x.KIND_EXIT_RESULT

# Task bits: how the worker calls the function.
STAR = _x.TASK_STAR
APPLY = _x.TASK_APPLY
SINGLE = _x.TASK_SINGLE  # one item, not a list; an OK result is one value
ISOLATE = _x.TASK_ISOLATE  # run alone: flush results before and after (a crash suspect)

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
