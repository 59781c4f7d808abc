"""shoal: run a function over many inputs in parallel worker processes.

``shoal.Pool`` is a drop-in for ``multiprocessing.Pool`` that never hangs
when a worker dies, reads ``imap`` input lazily, and takes any callable.
"""

from multiprocessing import TimeoutError
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

from shoal._errors import PoolTerminatedError, RemoteUnpicklingError, WorkerLostError
from shoal._results import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult
from shoal.pool import Pool

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "MaybeEncodingError",
    "Pool",
    "PoolTerminatedError",
    "RemoteTraceback",
    "RemoteUnpicklingError",
    "TimeoutError",
    "WorkerLostError",
]
__version__ = "0.1.0"
