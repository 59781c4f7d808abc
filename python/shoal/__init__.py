"""shoal: run a function over many inputs in parallel worker processes.

``shoal.Pool`` is a drop-in for ``multiprocessing.Pool`` that never hangs
when a worker dies, reads ``imap`` input lazily, and takes any callable.
"""

from shoal._errors import PoolTerminatedError, RemoteUnpicklingError, WorkerLostError
from shoal._results import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult
from shoal.pool import Pool

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "Pool",
    "PoolTerminatedError",
    "RemoteUnpicklingError",
    "WorkerLostError",
]
__version__ = "0.1.0"
