"""Type stubs for the ``shoal._shoal`` extension (crates/shoal-py).

``make lint`` checks them against the built extension with stubtest. The
classes are ``@final`` (no ``#[pyclass]`` here allows subclassing) and are
built by ``__new__``, which is where PyO3's ``#[new]`` puts the signature.
"""

from collections.abc import Callable
from typing import Any, Final, Literal, Self, final

from shoal._results import AsyncResult

__all__ = [
    "STATUS_CANCELLED",
    "STATUS_CHUNK_FAILED",
    "STATUS_ITEM_ERRORS",
    "STATUS_OK",
    "STATUS_TIMED_OUT",
    "STATUS_WORKER_LOST",
    "TASK_APPLY",
    "TASK_ISOLATE",
    "TASK_SINGLE",
    "TASK_STAR",
    "Engine",
    "JobResult",
    "PlainApply",
    "WorkerLoop",
    "__version__",
    "check_kernel",
    "dumpable",
    "live_threads",
    "map_chunks",
    "pack_each",
    "pack_one",
    "pack_values",
    "unpack_one",
    "unpack_values",
    "window_chunks",
    "worker_prelude",
]

__version__: str
STATUS_OK: Final = 0
STATUS_ITEM_ERRORS: Final = 1
STATUS_CHUNK_FAILED: Final = 2
STATUS_WORKER_LOST: Final = 3
STATUS_CANCELLED: Final = 4
STATUS_TIMED_OUT: Final = 5
TASK_STAR: Final = 1
TASK_APPLY: Final = 2
TASK_SINGLE: Final = 4
TASK_ISOLATE: Final = 8

# `decode(status, single, payload, n_items) -> (values, errors by item or None)`
_Decode = Callable[[int, bool, bytes, int], tuple[list[Any], dict[int, BaseException] | None]]

# A subclass of AsyncResult here because shoal._results registers it as one
# (AsyncResult.register), which type checkers cannot see.
@final
class JobResult(AsyncResult[Any]):
    """The result of one ``apply_async`` (one value) or ``map_async`` (a list)."""

    @staticmethod
    def failed(
        exc: BaseException,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> JobResult: ...
    def get(self, timeout: float | None = None) -> Any: ...
    def wait(self, timeout: float | None = None) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...
    @property
    def job(self) -> int | None: ...
    def _resolve(self, _job: int) -> None: ...

@final
class PlainApply:
    """``apply_async(func, args)`` without keywords or callbacks, in Rust."""

    def __new__(
        cls,
        engine: Engine,
        funcs: dict[int, tuple[Any, int]],
        dumps_one: Callable[[Any, Any], bytes],
        oob: Any,
        loads: Callable[[bytes], Any],
        decode: _Decode,
    ) -> Self: ...
    def __call__(self, func: Callable[..., Any], args: Any) -> JobResult | None: ...

@final
class WorkerLoop:
    """A worker's loop over the frames it receives (see python/shoal/_worker.py)."""

    def __new__(cls, host: Any) -> Self: ...
    def run(self, buf: bytearray, pos: int, end: int, since: int) -> tuple[int, int, int]: ...

@final
class Engine:
    """A pool's engine: worker processes, scheduling, ordering and the window."""

    def __new__(
        cls,
        processes: int,
        init_payload: bytes,
        *,
        argv: list[str] | None = None,
        zygote_fd: int | None = None,
        threads: Callable[[int, int], int] | None = None,
        lifespan_chunks: int | None = None,
        lifespan_items: int | None = None,
        kill_grace: float = 0.2,
        exit_grace: float = 10.0,
    ) -> Self: ...
    def register_func(self, payload: bytes, name: str = ...) -> int: ...
    def release_func(self, func: int) -> None: ...
    def new_job(
        self, func: int, task_bits: int, ordered: bool, window: int | None = None, timeout: float | None = None
    ) -> int: ...
    def apply(self, func: int, task_bits: int, payload: bytes) -> int: ...
    def result(
        self,
        job: int,
        lens: list[int] | None,
        loads: Callable[[bytes], Any],
        decode: _Decode,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> JobResult: ...
    def submit(self, job: int, chunks: list[bytes], items: list[int] | None = None) -> int: ...
    def chunk_hint(self, job: int) -> int: ...
    def finish_input(self, job: int) -> None: ...
    def room(self, job: int) -> int: ...
    def wait(self, job: int, finished: bool, timeout: float | None = None) -> bool: ...
    def wait_ready(self, job: int, timeout: float | None = None) -> bool: ...
    def wait_room(self, job: int, chunks: int = 1, timeout: float | None = None) -> bool: ...
    def take_values(
        self, job: int, max: int, loads: Callable[[bytes], object]
    ) -> tuple[list[object], list[tuple[int, int, bool, bytes]]]: ...
    def finished(self, job: int) -> bool: ...
    def abandon(self, job: int) -> None: ...
    def cancel(self, job: int, kill_running: bool = False) -> int: ...
    def stats(self, job: int | None = None) -> dict[str, Any]: ...
    def take_exit_results(self) -> list[tuple[int, bytes]]: ...
    def keep(self, obj: object) -> None: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def worker_pids(self) -> list[int]: ...
    def is_alive(self, pid: int) -> bool: ...
    @property
    def phase(self) -> Literal["running", "closing", "terminating", "stopped"]: ...

def map_chunks(n: int, workers: int, chunksize: int | None = None, equal: bool = False) -> list[int]: ...
def window_chunks(workers: int, adaptive: bool) -> int: ...
def worker_prelude(parent_pid: int) -> bool: ...
def check_kernel() -> None: ...
def dumpable() -> bool: ...
def live_threads() -> int: ...
def pack_values(values: list[Any]) -> bytes | None: ...
def unpack_values(data: bytes | memoryview) -> list[Any]: ...
def pack_one(obj: Any) -> bytes | None: ...
def pack_each(items: list[Any]) -> list[bytes] | None: ...
def unpack_one(data: bytes | memoryview) -> Any: ...
