"""Type stubs for the ``shoal._shoal`` extension (crates/shoal-py).

``make lint`` checks them against the built extension with stubtest. The
classes are ``@final`` (no ``#[pyclass]`` here allows subclassing) and are
built by ``__new__``, which is where PyO3's ``#[new]`` puts the signature.
"""

from collections.abc import Callable
from typing import Any, Final, Literal, Self, final

from shoal._results import AsyncResult

__all__ = [
    "FLAG_APPLY",
    "FLAG_STAR",
    "HEADER_LEN",
    "RESULT_CANCELLED",
    "RESULT_CHUNK_FAILED",
    "RESULT_ITEM_ERRORS",
    "RESULT_OK",
    "RESULT_WORKER_LOST",
    "Engine",
    "PendingResult",
    "PlainApply",
    "PlainTasks",
    "__version__",
    "default_map_chunksize",
    "guided_map_chunks",
    "live_threads",
    "pack_each",
    "pack_one",
    "pack_values",
    "unpack_one",
    "unpack_values",
    "worker_prelude",
]

__version__: str
HEADER_LEN: Final = 24
FLAG_STAR: Final = 1
FLAG_APPLY: Final = 2
RESULT_OK: Final = 0
RESULT_ITEM_ERRORS: Final = 1
RESULT_CHUNK_FAILED: Final = 2
RESULT_WORKER_LOST: Final = 3
RESULT_CANCELLED: Final = 4

# A subclass of AsyncResult here because shoal._results registers it as one
# (AsyncResult.register), which type checkers cannot see.
@final
class PendingResult(AsyncResult[Any]):
    """The outcome of one ``apply_async`` call without callbacks."""

    def get(self, timeout: float | None = None) -> Any: ...
    def wait(self, timeout: float | None = None) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...

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
        decode: Callable[[int, bytes], tuple[bool, Any]],
    ) -> Self: ...
    def __call__(self, func: Callable[..., Any], args: Any) -> PendingResult | None: ...

@final
class PlainTasks:
    """A worker's native loop for plain tasks (one item, or one argument tuple)."""

    def __new__(
        cls,
        funcs: dict[int, Any],
        parts: list[bytes],
        pending: list[Any],
        loads: Callable[[Any], Any],
        dumps: Callable[..., bytes],
        buffer_callback: Callable[[Any], Any] | None,
        big: list[memoryview],
        load_error: type,
        run_task: Callable[[Any, int, memoryview], tuple[int, bytes]],
        fail_task: Callable[[BaseException, Any, Any, int], tuple[int, bytes]],
        careful: Callable[[Any, int], tuple[int, bytes]],
        flush_ns: int,
        flush_after_ns: int,
        flush_parts: int,
    ) -> Self: ...
    def run(self, buf: bytearray, pos: int, end: int, since: int) -> tuple[int, int, bool]: ...

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
        zygote_pid: int = 0,
        max_tasks: int | None = None,
        kill_grace: float = 0.2,
    ) -> Self: ...
    def register_func(self, payload: bytes) -> int: ...
    def release_func(self, func: int) -> None: ...
    def new_job(self, func: int, task_flags: int, ordered: bool, window: int | None = None) -> int: ...
    def apply(self, func: int, task_flags: int, payload: bytes) -> int: ...
    def apply_pending(
        self,
        func: int,
        task_flags: int,
        payload: bytes,
        loads: Callable[[bytes], Any],
        decode: Callable[[int, bytes], tuple[bool, Any]],
    ) -> PendingResult: ...
    def submit(self, job: int, chunks: list[bytes], items: list[int] | None = None) -> int: ...
    def chunk_hint(self, job: int) -> int: ...
    def finish_input(self, job: int) -> None: ...
    def room(self, job: int) -> int: ...
    def wait(self, job: int, finished: bool, timeout: float | None = None) -> bool: ...
    def take(self, job: int, max: int) -> list[tuple[int, int, bytes]]: ...
    def take_values(
        self, job: int, max: int, loads: Callable[[bytes], object]
    ) -> tuple[list[object], list[tuple[int, int, bytes]]]: ...
    def take_release(
        self, job: int, loads: Callable[[bytes], object]
    ) -> tuple[list[object], list[tuple[int, int, bytes]]]: ...
    def finished(self, job: int) -> bool: ...
    def release(self, job: int) -> None: ...
    def watch(self, job: int, callback: Callable[[int], object]) -> None: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def worker_pids(self) -> list[int]: ...
    def is_alive(self, pid: int) -> bool: ...
    @property
    def phase(self) -> Literal["running", "closing", "terminating", "stopped"]: ...

def default_map_chunksize(n: int, workers: int) -> int: ...
def guided_map_chunks(n: int, workers: int) -> list[int]: ...
def worker_prelude(parent_pid: int) -> bool: ...
def live_threads() -> int: ...
def pack_values(values: list[Any]) -> bytes | None: ...
def unpack_values(data: bytes | memoryview) -> list[Any]: ...
def pack_one(obj: Any) -> bytes | None: ...
def pack_each(items: list[Any]) -> list[bytes] | None: ...
def unpack_one(data: bytes | memoryview) -> Any: ...
