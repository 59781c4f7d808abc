"""The frame layout shared with ``crates/shoal-core/src/frame.rs``.

Kept in a module of its own, with no imports beyond ``struct``, so the worker
and the zygote can use it without loading the rest of shoal.
"""

import struct

# len u32 | kind u8 | flags u8 | reserved u16 | job u32 | index u32 | aux u64
HEADER = struct.Struct("<IBBHIIQ")
HEADER_LEN = HEADER.size

# Engine to worker.
INIT = 1
FUNC = 2
TASK = 3
FORGET = 4
EXIT = 5
# Worker to engine.
READY = 64
RESULT = 65
INIT_FAILED = 66

# Task flags.
STAR = 1
APPLY = 2
SINGLE = 4  # the payload is one item, not a list of items
ISOLATE = 8  # run alone: flush results before and after (a crash suspect)

# Result flags.
OK = 0
ITEM_ERRORS = 1
CHUNK_FAILED = 2
WORKER_LOST = 3
CANCELLED = 4
SINGLE_VALUE = 16  # with OK: the payload is one value, not a list

# Zygote reply records: tag, pid, value.
ZYGOTE_RECORD = struct.Struct("<Iii")
ZYGOTE_FORKED = 1
ZYGOTE_EXITED = 2
