"""The worker process: read tasks from the channel, run them, send results.

A worker forked from a zygote that was itself forked from a threaded parent
must not touch the engine's Rust state. It uses two things from the
extension that hold none: ``worker_prelude`` (one ``prctl``) and
``WorkerLoop`` (crates/shoal-py/src/worker_loop.rs), the one loop over the
frames it receives: it times every task, makes and batches every result
frame, and runs a plain task (one item, or one argument tuple:
``chunksize=1`` and ``apply_async``) itself. This module reads and writes
the channel, and holds the stages the loop leaves to Python (``_Host``):
chunks of several items, failing stages, functions, start-up.

Chunks run strictly in the order they arrive. Results of short chunks go out
in batches (worker_loop.rs says when), so when a worker dies holding several
chunks the engine cannot tell which one was running: it runs each again
marked ``ISOLATE``, and such a chunk's result goes out alone, before and
after it. That is how a death fails exactly the chunk that caused it
(crates/shoal-core/src/supervise.rs).
"""

from __future__ import annotations

import _thread
import functools
import itertools
import os
import sys
import time
import types

from shoal import _protocol as P
from shoal import _shm
from shoal._errors import describe_call, func_name
from shoal._pickling import _dumps, detached, dumps, dumps_chunk, is_packed_chunk, loads, loads_chunk, loads_one
from shoal._shoal import SHAPE_MIXED, SHAPE_ONE, SHAPE_TUPLES, unpack_shape

TYPE_CHECKING = False  # typing costs ~15 ms of worker start-up
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from shoal import _shoal

# Where results' large buffers go: set by the pool's Init.
_result_oob: _shm.Outbound | None = None
# This worker's slot, 0..processes-1 (a replacement takes its predecessor's):
# set by Init.
slot: int | None = None
# What to run when the engine tells this worker to exit (``Exit``), set by a
# front door's initializer (``WorkerPool``'s ``worker_exit``): it returns the
# payload of the ``ExitResult`` frame, or None to send none. See run_exit_hook.
exit_hook: Callable[[], bytes | None] | None = None
# Whether a task's exception that pickles but cannot be loaded is sent in a
# form the parent can load (see _exception_pickle); WorkerPool's setup sets it.
remake_exceptions = False
# The channel to the engine: set by serve.
_channel: int | None = None
# Per thread: ``thread.worker`` is the host of the thread worker running on
# this thread (``_threads.ThreadHost``: its slot, exit hook and object
# table), where a process worker has the globals above. Unset elsewhere.
thread = _thread._local()


def main() -> None:
    """Entry point of a spawned worker: its channel is standard input."""
    fd = os.dup(0)
    # Standard input must not be the channel: a subprocess started by a task
    # would inherit it and keep it open after this worker dies.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    parent = int(os.environ.get("SHOAL_PARENT_PID", "0"))
    code = serve(fd, parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _describe(exc: BaseException, where: str = "", oob: Any = None) -> tuple[bytes | None, str | None, str]:
    """What the parent needs to rebuild ``exc``: its pickle (None if it
    cannot be pickled), the formatted remote traceback, and its repr. A
    thread worker's (``oob`` is its pool's object table) is the exception
    itself, by reference, with no text: it keeps its own traceback."""
    if not _with_text(oob):
        return oob.put(exc), None, ""
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if where:
        tb += where
    blob = _exception_pickle(exc) if oob is None or not oob.by_reference else oob.put(exc)
    try:
        rep = repr(exc)
    except BaseException:  # noqa: BLE001
        rep = f"<{type(exc).__qualname__} with a failing repr>"
    return blob, '\n"""\n' + tb + '"""', rep


def _with_text(oob: Any) -> bool:
    """Whether a task's failure is described with its traceback as text,
    which the parent attaches as a ``RemoteTraceback`` cause: in a process
    worker, and in a thread worker whose pool asks for it (``WorkerPool``,
    as MPIRE does; a ``ThreadPool``'s exception goes as itself)."""
    return oob is None or not oob.by_reference or oob.tracebacks


def _exception_pickle(exc: BaseException) -> bytes | None:
    """``exc`` pickled for the parent, or None if it cannot be. With
    :data:`remake_exceptions`, one that pickles but does not load (its
    ``__init__`` takes other arguments than its ``args``) travels as its
    class, args and attributes instead (``_errors.reduce_exception``)."""
    try:
        blob = dumps(exc)
    except BaseException:  # noqa: BLE001 - the parent gets a stand-in
        return None
    if not remake_exceptions:
        return blob
    try:
        loads(blob)
        return blob
    except BaseException:  # noqa: BLE001 - the other form, below
        pass
    from shoal._errors import reduce_exception

    try:
        return dumps(_Reduced(reduce_exception(exc)))
    except BaseException:  # noqa: BLE001 - the parent gets a stand-in
        return None


class _Reduced:
    """Pickles as the reduction it holds."""

    __slots__ = ("reduced",)

    def __init__(self, reduced: tuple[Any, ...]) -> None:
        self.reduced = reduced

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reduced


def _task_note(func: Any, item: Any, flags: int) -> str:
    """A line naming the call that failed, with its arguments, shortened."""
    try:
        return f"\nin the task {describe_call(func_name(func), item, flags)}\n"
    except BaseException:  # noqa: BLE001 - a note is optional
        return ""


# Result types that hold no buffer: a chunk whose first result is one
# skips the test for large buffers (see _run_chunk).
_NO_BUFFERS = frozenset({int, float, bool, complex, str, type(None)})


def _run_chunk(func: Callable[..., Any], flags: int, items: Any, oob: Any = None) -> tuple[int, int, bytes]:
    results: list[Any] = []
    errors: list[tuple[int, bytes | None, str | None, str]] | None = None
    it = iter(items)
    calls: Iterator[Any]
    # extend(map(...)) runs the loop in C. When func raises on item k,
    # extend has kept results 0..k-1 and `it` has moved past item k, so the
    # error is recorded for k and the loop resumes after it, with nothing run twice.
    if flags & P.APPLY:
        calls = (func(*a, **k) for a, k in it)
    elif flags & P.STAR:
        calls = itertools.starmap(func, it)
    elif flags & P.UNPACK:
        calls = _unpacked_calls(func, items, it)
    else:
        calls = map(func, it)
    # Results with large buffers (numpy arrays) go to shared memory as each
    # is made, not as the chunk ends, so the worker holds one at a time:
    # holding a chunk's worth, glibc's malloc gives the freed top of its heap
    # back (past its trim threshold) after each chunk and faults it in again
    # for the next, which made a map of 1 MiB arrays in chunks of 2 or more
    # 1.7x slower than in chunks of 1. The chunk's first result says whether
    # its results are such; a chunk of small ones keeps the loop in C.
    shared = _result_oob if oob is None and not flags & P.SINGLE else None
    while True:
        try:
            if shared is not None and not results:
                for value in calls:  # the first result only
                    if type(value) in _NO_BUFFERS:
                        results.append(value)
                        break
                    results.append(detached(value, shared))
                    if results[0] is not value:
                        calls = map(functools.partial(detached, oob=shared), calls)
                    del value  # it may be a large buffer's only holder
                    break
            results.extend(calls)
            break
        except BaseException as exc:  # noqa: BLE001 - SystemExit too fails only this task
            k = len(results)
            if errors is None:
                errors = []
            note = _task_note(func, _item_at(items, k), flags) if _with_text(oob) else ""
            errors.append((k, *_describe(exc, note, oob)))
            results.append(None)
            if flags & P.APPLY:
                # A generator that raised is finished; start a fresh one after k.
                calls = (func(*a, **kw) for a, kw in it)
    return _encode(results, errors, flags, oob)


# Item types MPIRE's rule (UNPACK) passes as the one argument: not
# iterable, or str and bytes, which it does not unpack.
_ONE_ARGUMENT = frozenset({int, float, bool, complex, str, bytes, type(None)})


def call_parts(item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A task's arguments as MPIRE reads them: a dict is keywords; any
    other iterable but ``str``, ``bytes`` and a numpy array is unpacked
    into positional arguments; anything else is the one argument."""
    if isinstance(item, dict):
        return (), item
    if isinstance(item, (str, bytes)):
        return (item,), {}
    try:
        it = iter(item)
    except TypeError:
        return (item,), {}
    np = sys.modules.get("numpy")
    if np is not None and isinstance(item, np.ndarray):
        return (item,), {}
    return tuple(it), {}


def _call_unpacked(func: Callable[..., Any], item: Any) -> Any:
    """``func`` called on one item by MPIRE's rule."""
    kind = type(item)
    if kind is tuple:
        return func(*item)
    if kind is dict:
        return func(**item)
    if kind in _ONE_ARGUMENT:
        return func(item)
    args, kwargs = call_parts(item)
    return func(*args, **kwargs)


def _unpacked_calls(func: Callable[..., Any], items: Any, it: Iterator[Any]) -> Iterator[Any]:
    """The calls of an ``UNPACK`` chunk. Where its items all take one shape
    (scalars, or tuples), the loop runs in C as a plain map's or a
    starmap's does; else each item goes through :func:`_call_unpacked`.
    The shape of a list or a range is the extension's to tell (~1 ns an
    item); of any other chunk, one pass over its types (~20 ns an item)."""
    shape = unpack_shape(items)
    if shape == SHAPE_MIXED:
        kinds = set(map(type, items))
        if kinds <= _ONE_ARGUMENT:
            shape = SHAPE_ONE
        elif kinds == {tuple}:
            shape = SHAPE_TUPLES
    if shape == SHAPE_ONE:
        return map(func, it)
    if shape == SHAPE_TUPLES:
        return itertools.starmap(func, it)
    return map(functools.partial(_call_unpacked, func), it)


def _item_at(items: Any, k: int) -> Any:
    try:
        return items[k]
    except Exception:  # noqa: BLE001 - the note is optional
        return None


def _encode(results: list[Any], errors: list[Any] | None, flags: int, oob: Any = None) -> tuple[int, int, bytes]:
    """The status, the number of items that raised, and the payload for a
    chunk's results and failed items. ``oob``: where large buffers go, or a
    thread pool's object table; None: this process worker's. The payload
    goes to the outbox next: the blocks its results were written to are
    no longer staged (``_shm.commit``)."""
    outcome = _pickle_outcome(results, errors, flags, oob)
    if _shm._staged:
        _shm.commit()
    return outcome


def _pickle_outcome(results: list[Any], errors: list[Any] | None, flags: int, oob: Any) -> tuple[int, int, bytes]:
    if oob is None:
        oob = _result_oob
    try:
        if errors is None:
            if flags & P.SINGLE:
                return P.OK, 0, dumps(results[0], oob)
            return P.OK, 0, dumps_chunk(results, oob)
        return P.ITEM_ERRORS, len(errors), dumps((results, errors), oob)
    except BaseException:  # noqa: BLE001 - find the unpicklable items below
        pass
    # Some result cannot be pickled: fail those items, keep the others.
    if TYPE_CHECKING:
        from shoal._errors import MaybeEncodingError  # declared there: typeshed lacks it
    else:
        from multiprocessing.pool import MaybeEncodingError

    errors = errors or []
    failed = {e[0] for e in errors}
    for k, value in enumerate(results):
        if k in failed:
            continue
        try:
            dumps(value)
        except BaseException as exc:  # noqa: BLE001
            errors.append((k, *_describe(_encoding_error(MaybeEncodingError(exc, value), exc))))
            results[k] = None
    errors.sort(key=lambda e: e[0])
    return P.ITEM_ERRORS, len(errors), dumps((results, errors))


def _encoding_error(err: BaseException, exc: BaseException) -> BaseException:
    """``err`` (``Pool``'s ``MaybeEncodingError``) with the pickling error
    ``exc`` as its cause, so the remote traceback shows where pickling
    failed, and as its ``pickling_error``, if that pickles, for
    ``shoal.Executor``, which raises the pickling error itself, as
    ``ProcessPoolExecutor`` does."""
    err.__cause__ = exc
    try:
        dumps(exc)
    except BaseException:  # noqa: BLE001 - then only its repr travels, as before
        return err
    vars(err)["pickling_error"] = exc
    return err


def _chunk_failed(exc: BaseException, where: str, oob: Any = None) -> bytes:
    return dumps(_describe(exc, where, oob), oob)


def serve(fd: int, parent_pid: int) -> int:
    """Run the worker loop on channel ``fd``. Returns the exit code."""
    from shoal import _shoal

    if parent_pid and not _shoal.worker_prelude(parent_pid):
        return 1
    # Ctrl-C in a terminal reaches the whole process group; only the parent
    # should act on it.
    if TYPE_CHECKING:
        import signal as _signal  # the same functions; typeshed has no _signal
    else:
        import _signal  # the C module: `signal` would import enum, ~5 ms

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    global _channel
    _channel = fd
    inbox = _Inbox(fd)
    outbox = _Outbox(fd)
    # A task that forks (a nested pool, os.fork) forks a process of one
    # thread: the outbox's flusher stops first.
    os.register_at_fork(before=outbox.box.quiesce)
    try:
        return _loop(inbox, outbox, on_exit=mp_exit)
    finally:
        try:
            outbox.flush()
        except OSError:
            pass


class _Inbox:
    """Frames read from the channel into one reusable buffer: no allocation
    per read, and payloads are unpickled straight from a view of it."""

    def __init__(self, fd: int, size: int = 1 << 20) -> None:
        self.fd = fd
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0  # first byte not yet parsed
        self.end = 0  # one past the last byte read

    def fill(self) -> bool:
        """Read more bytes, blocking. False at end of stream."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            self._make_room()
        while True:
            try:
                n = os.readv(self.fd, [self.view[self.end :]])
            except InterruptedError:
                continue
            except OSError:
                return False
            self.end += n
            return n > 0

    def _make_room(self) -> None:
        """Move the partial frame at the end to the front, growing the
        buffer if one frame is larger than it."""
        partial = self.end - self.start
        if self.start > 0:
            self.buf[:partial] = self.buf[self.start : self.end]
        else:
            self.view.release()
            self.buf.extend(bytes(len(self.buf)))
            self.view = memoryview(self.buf)
        self.start, self.end = 0, partial


class _Outbox:
    """Result frames waiting to be written (``_shoal.Outbox``, which also
    sends them while a long task runs), and the shared blocks to free once
    they are out."""

    def __init__(self, fd: int) -> None:
        from shoal import _shoal

        self.box = _shoal.Outbox(fd)

    def flush(self) -> None:
        self.box.flush()
        if _shm._deferred:
            # The results of the chunks that used these blocks are out.
            _shm.free_deferred()


def _loop(inbox: _Inbox, outbox: _Outbox, host: Any = None, on_exit: Callable[[], None] | None = None) -> int:
    """Hand every frame to the native loop (crates/shoal-py/src/worker_loop.rs),
    which runs tasks and batches their results; write the batch when it
    says so, and before blocking on a read. ``host``: the stages the loop
    calls back into (a thread worker's own); by default this process's.
    ``on_exit`` runs when the parent tells the worker to exit (not when
    the parent is gone)."""
    from shoal import _shoal

    loop = _shoal.WorkerLoop(_Host(outbox.box) if host is None else host)
    while True:
        outbox.flush()  # about to block: send what is done
        if not inbox.fill():
            return 0  # the parent is gone
        pos, end = inbox.start, inbox.end
        while True:
            pos, action = loop.run(inbox.buf, pos, end)
            if action == _READ:
                break
            outbox.flush()
            if action == _EXIT:
                if on_exit is not None:
                    on_exit()
                return 0
            if action == _FAIL:
                return 1
        inbox.start = pos


# What WorkerLoop.run asks for next.
_READ, _FLUSH, _EXIT, _FAIL = 0, 1, 2, 3


class _Host:
    """What the native loop reads and calls back into: this worker's state,
    and the stages it leaves to Python."""

    def __init__(self, outbox: _shoal.Outbox) -> None:
        self.funcs: dict[int, Any] = {}
        self.outbox = outbox
        self.deferred = _shm._deferred
        # Filled by buffer_callback (set by Init) with the buffers that send a
        # result down the careful path: large or read-only ones.
        self.big: list[memoryview] = []
        self.buffer_callback: Callable[[Any], bool] | None = None
        self.loads = loads
        self.dumps = _dumps
        self.load_error = _LoadError
        self.run_task = _run_task
        self.fail_task = _fail_task
        self.careful = _careful_result
        self.chunk_failed = _chunk_failed

    def define(self, fid: int, payload: bytes) -> None:
        """``Func``: load a function from the parent."""
        try:
            self.funcs[fid] = adopt_main(loads(payload))
        except BaseException as exc:  # noqa: BLE001 - its tasks fail with this
            self.funcs[fid] = _LoadError(_chunk_failed(exc, "\nwhile unpickling the function in the worker\n"))

    def init(self, payload: bytes, slot_id: int) -> tuple[bool, int, bytes]:
        """``Init``: start up; returns ``(succeeded, initializer ns, failure)``."""
        reply = _initialise(payload, slot_id)
        if _result_oob is not None:
            self.buffer_callback = _result_oob.first_pass(self.big)
        return reply

    def exit(self) -> bytes | None:
        """``Exit``: the exit hook's payload for ``ExitResult``, if any."""
        return run_exit_hook()


def init_started() -> None:
    """Tell the engine that the user's initializer starts now, so that
    its init timeout (``WorkerPool``'s ``worker_init_timeout``) counts from
    here, not from the worker's launch. Called by an initializer, during
    ``Init``: the first frame this worker sends, so it is written at once,
    ahead of nothing."""
    from shoal import _shoal

    if _channel is not None:
        _write_all(_channel, _shoal.init_started_frame())


def mp_exit() -> None:
    """Run ``multiprocessing``'s exit routine once, as a process it started
    runs it as it ends, if this worker used ``multiprocessing`` at all: a
    ``Queue`` a task or initializer put into hands what it holds to its
    pipe (its feeder thread) before the worker exits, and child processes
    are joined. Its finalizers from the parent are skipped (each knows its
    pid). For process workers only: a thread worker's process is the parent."""
    global _mp_exited
    util = sys.modules.get("multiprocessing.util")
    if util is None or _mp_exited:
        return
    _mp_exited = True
    try:
        util._exit_function()
    except BaseException:  # noqa: BLE001 - the worker exits either way
        import traceback

        traceback.print_exc()


_mp_exited = False


def run_exit_hook() -> bytes | None:
    """Run :data:`exit_hook`, if one is set, once. The hook reports its own
    failures in its payload; one that escapes it (a bug) sends nothing
    rather than keep the worker from exiting."""
    global exit_hook
    hook, exit_hook = exit_hook, None
    if hook is None:
        return None
    try:
        return hook()
    except BaseException:  # noqa: BLE001 - the worker exits either way
        import traceback

        traceback.print_exc()
        return None


def _fail_task(exc: BaseException, func: Any, item: Any, flags: int, oob: Any = None) -> tuple[int, int, bytes]:
    """A plain task's call raised ``exc``."""
    note = _task_note(func, item, flags) if _with_text(oob) else ""
    return _encode([None], [(0, *_describe(exc, note, oob))], flags, oob)


def _careful_result(value: Any, flags: int, oob: Any = None) -> tuple[int, int, bytes]:
    """A plain task's result that needs more than the C pickler's first try."""
    return _encode([value], None, flags, oob)


def _run_task(func: Any, flags: int, payload: memoryview, oob: Any = None) -> tuple[int, int, bytes]:
    """Run one chunk on the full path: any flags, errors reported per item.
    ``oob``: a thread worker's object table (None in a process worker)."""
    if isinstance(func, _LoadError):
        return P.CHUNK_FAILED, 0, func.payload
    try:
        items = (loads_one(payload),) if flags & P.SINGLE else loads_chunk(payload)
    except BaseException as exc:  # noqa: BLE001
        return P.CHUNK_FAILED, 0, _chunk_failed(exc, "\nwhile unpickling the task in the worker\n", oob)
    if flags & P.UNPACK and not flags & P.SINGLE and is_packed_chunk(payload):
        # Plain numbers only: each is the one argument, by MPIRE's rule too.
        flags &= ~P.UNPACK
    return _run_chunk(func, flags, items, oob)


def adopt_main(obj: Any, _seen: dict[int, Any] | None = None) -> Any:
    """Give a function from the parent's ``__main__`` this worker's
    ``__main__`` namespace as its globals.

    cloudpickle rebuilds each by-value function with a private copy of the
    globals it uses, so an initializer that sets ``state["x"]`` and the task
    that reads it would see two different ``state`` dicts. Real module
    semantics need one namespace. Definitions (functions, classes) come
    from the parent, so they replace what is there: a class must be the one
    cloudpickle tracks, or results would come back as a different class.
    Other values already there are kept: they carry whatever the initializer
    or earlier tasks did.
    """
    seen = {} if _seen is None else _seen
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, functools.partial):
        inner = adopt_main(obj.func, seen)
        if inner is obj.func:
            return obj
        new_partial = functools.partial(inner, *obj.args, **obj.keywords)
        seen[id(obj)] = new_partial
        return new_partial
    if not isinstance(obj, types.FunctionType) or obj.__module__ != "__main__":
        return obj
    main = sys.modules["__main__"].__dict__
    if obj.__globals__ is main:
        return obj
    new = types.FunctionType(obj.__code__, main, obj.__name__, obj.__defaults__, obj.__closure__)
    seen[id(obj)] = new
    new.__kwdefaults__ = obj.__kwdefaults__
    new.__qualname__ = obj.__qualname__
    new.__doc__ = obj.__doc__
    new.__dict__.update(obj.__dict__)
    for name, value in obj.__globals__.items():
        if name not in main or isinstance(value, (type, types.FunctionType, functools.partial)):
            main[name] = adopt_main(value, seen)
    return new


class _LoadError:
    """Stands in for a function that could not be unpickled."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


def _adopt_authkey(authkey: bytes) -> None:
    """Make ``authkey`` this process's ``multiprocessing`` authkey: now if
    ``multiprocessing`` is imported, else as soon as it is. Importing it
    costs a spawned worker ~10 ms, and most tasks never use it."""
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        process.current_process().authkey = authkey
    else:
        sys.meta_path.insert(0, _AuthkeyOnImport(authkey))


class _AuthkeyOnImport:
    """An import hook for ``multiprocessing.process`` alone: the module is
    found and loaded as usual, then given the parent's authkey, before
    any code that imported it can use it. It removes itself on first use."""

    def __init__(self, authkey: bytes) -> None:
        self.authkey = authkey

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "multiprocessing.process":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module
        authkey = self.authkey

        def exec_module(module: Any) -> None:
            load(module)
            module.current_process().authkey = authkey

        # This spec's own loader: a fresh one per find.
        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _initialise(payload: bytes, slot_id: int) -> tuple[bool, int, bytes]:
    """Apply the parent's settings and run the initializer, in worker slot
    ``slot_id``. Returns whether it succeeded, how long the initializer took
    (ns), and what describes its failure."""
    global _result_oob, slot
    slot = slot_id
    initializer = None
    try:
        settings = loads(payload)
        sys.path[:] = settings["sys_path"]
        if "authkey" in settings:
            # The parent's, as the stdlib gives a child it spawns: manager
            # proxies in arguments and initargs authenticate with it.
            _adopt_authkey(settings["authkey"])
        _result_oob = _shm.attach(settings["shm"])
        if "inherit" in settings:
            # Forked: the parent's own objects, inherited (see _backend.inherited_init).
            from shoal._backend import inherited_init

            initializer, initargs = inherited_init[settings["inherit"]]
        else:
            initializer, initargs = loads(settings["initializer"])
            if initializer is not None:
                initializer = adopt_main(initializer)
        t0 = time.perf_counter_ns()
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        if not isinstance(exc, Exception):
            exc = _initializer_exited(initializer, exc)
        return False, 0, _chunk_failed(exc, "\nwhile running the pool's initializer\n")
    return True, time.perf_counter_ns() - t0, b""


def _initializer_exited(initializer: Any, exc: BaseException) -> RuntimeError:
    """What the parent raises for an initializer that raised ``SystemExit``,
    ``KeyboardInterrupt`` or another non-``Exception``: re-raised as they are,
    they would end the parent's program from every task's ``get()``."""
    name = getattr(initializer, "__qualname__", None) or repr(initializer)
    err = RuntimeError(
        f"the pool's initializer {name}() raised {exc!r}, so no worker could start to run this task; "
        "an initializer must return for its worker to start"
    )
    err.__cause__ = exc
    return err
