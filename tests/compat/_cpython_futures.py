"""CPython's ``test_concurrent_futures``, loaded from the interpreter's test
suite at test time and pointed at ``shoal.Executor``. Nothing of CPython's
tests is copied here.

Where the suite is: ``test.test_concurrent_futures`` of the running
interpreter if it has one, else Debian's ``libpython3.X-testsuite`` for the
same minor version (``/usr/lib/python3.X/test``), which ``.ci/run``
installs where Debian has it. ``LAYOUT`` is None when neither is found; the
test modules then skip, saying so (``MISSING``). On these machines pyenv's
3.11 and 3.12 ship their ``test`` package without it, 3.13 with it, and
Debian (bookworm) packages 3.11's only.

Two layouts:

* ``"module"`` (3.11): one file. Its source is executed in this module's
  namespace, so that the functions and classes the tests send to workers
  (``mul``, ``sleep_and_print``, the test classes' classmethods) pickle by
  reference as ``_cpython_futures.<name>``, which a worker of any start
  method can import: ``tests/compat`` is on the path the workers get. (The
  file may be Debian's, outside the interpreter's ``test`` package, so it
  cannot be imported under its own name.)
* ``"package"`` (3.12 and later): ``test.test_concurrent_futures`` and its
  modules are imported as they are; workers import them by name from the
  interpreter's own suite. The process-pool tests are in ``SUBMODULES``.

Three changes make it test shoal:

* ``ProcessPoolFork/Forkserver/SpawnMixin.executor_type`` is
  :class:`ProcessPoolExecutor` below, ``shoal.Executor`` under the stdlib's
  name (the child scripts of ``assert_python_ok`` import the executor by
  that name);
* each test module's ``futures`` is a copy of ``concurrent.futures`` whose
  ``ProcessPoolExecutor`` is the same class, for the tests that build their
  own executor;
* ``assert_python_ok`` runs its child scripts after a prologue that makes
  ``concurrent.futures.ProcessPoolExecutor`` shoal's (and, for the module
  layout, ``test.test_concurrent_futures`` this module).
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import shoal

HERE = Path(__file__).resolve().parent
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# The modules of the package layout that hold process-pool tests (issue 15).
SUBMODULES = ("test_process_pool", "test_as_completed", "test_wait", "test_shutdown", "test_init", "test_deadlock")
PACKAGE = "test.test_concurrent_futures"


def _find() -> tuple[str | None, Path | None]:
    """The layout of the suite found, and for the module layout its file."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except ModuleNotFoundError:
        spec = None  # no ``test`` package at all
    if spec is not None and spec.submodule_search_locations:
        return "package", None
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        return "module", Path(spec.origin)
    debian = Path("/usr/lib") / f"python{VERSION}" / "test" / "test_concurrent_futures.py"
    if sys.version_info < (3, 12) and debian.is_file():
        return "module", debian
    return None, None


LAYOUT, SOURCE = _find()
# What is missing, for the skip message.
MISSING = (
    None
    if LAYOUT is not None
    else (
        f"CPython {VERSION}'s test_concurrent_futures is not installed: this interpreter's `test` package "
        f"has no test_concurrent_futures (pyenv's builds here leave it out), and Debian's "
        f"libpython{VERSION}-testsuite, which .ci/run installs where Debian packages this version, "
        f"is not installed"
    )
)


class ProcessPoolExecutor(shoal.Executor):
    """``shoal.Executor`` under the name the tests' child scripts import."""


def _prologue() -> str:
    lines = [
        "import sys",
        f"sys.path.insert(0, {str(HERE)!r})",
        "import concurrent.futures, multiprocessing, shoal, _cpython_futures",
        "concurrent.futures.ProcessPoolExecutor = _cpython_futures.ProcessPoolExecutor",
    ]
    if LAYOUT == "module":
        lines.append("sys.modules['test.test_concurrent_futures'] = _cpython_futures")
    return "\n".join(lines) + "\n"


def _with_prologue(original: Any) -> Any:
    def assert_python_ok(*args: Any, **env: Any) -> Any:
        if len(args) >= 2 and args[0] == "-c":
            args = ("-c", _prologue() + args[1], *args[2:])
        return original(*args, **env)

    return assert_python_ok


def _patched_futures() -> types.ModuleType:
    patched = types.ModuleType("concurrent.futures")
    patched.__dict__.update(concurrent.futures.__dict__)
    patched.ProcessPoolExecutor = ProcessPoolExecutor  # type: ignore[attr-defined]
    return patched


_MIXIN_NAMES = ("ProcessPoolForkMixin", "ProcessPoolForkserverMixin", "ProcessPoolSpawnMixin")


def _load_module() -> list[dict[str, Any]]:
    assert SOURCE is not None
    code = compile(SOURCE.read_text(), str(SOURCE), "exec")
    # CPython's own test module, from the interpreter's install.
    exec(code, globals())
    g = globals()
    for mixin in _MIXIN_NAMES:
        g[mixin].executor_type = ProcessPoolExecutor
    g["futures"] = _patched_futures()
    g["assert_python_ok"] = _with_prologue(g["assert_python_ok"])
    return [g]


def _load_package() -> list[dict[str, Any]]:
    util = importlib.import_module(PACKAGE + ".util")
    for mixin in _MIXIN_NAMES:
        getattr(util, mixin).executor_type = ProcessPoolExecutor
    patched = _patched_futures()
    namespaces = []
    for name in ("util", "executor", *SUBMODULES):
        module = importlib.import_module(f"{PACKAGE}.{name}")
        if "futures" in vars(module):
            module.futures = patched  # type: ignore[attr-defined]
        if "assert_python_ok" in vars(module):
            module.assert_python_ok = _with_prologue(module.assert_python_ok)  # type: ignore[attr-defined]
        if name in SUBMODULES:
            namespaces.append(vars(module))
    return namespaces


ALL = ("fork", "forkserver", "spawn")
NOT_FORK = ("forkserver", "spawn")
_PRIVATE = "reads private attributes of the stdlib's implementation"
_BREAKS = "expects the whole pool to break"
_ON_DEMAND = "expects workers to start on demand; shoal starts them all with the executor"
_TASK_ERROR = (
    "; shoal fails only that future, with the error the task's data raised, and the executor goes on "
    "(tests/executor/test_errors.py asserts it)"
)

# Tests that cannot pass, by test class (without its start method) and
# name: the start methods where they fail, and why. Each runs there as an
# expected failure, so one that starts passing is reported.
KNOWN_DIFFERENCES: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("FailingInitializerTest", "test_initializer"): (
        ALL,
        "reads the private `_broken` and expects the pool to break when its initializer fails; shoal fails "
        "each queued task with the initializer's exception instead (the Queue it passes in initargs reaches "
        "the workers under every start method: tests/api/test_fork_initargs.py)",
    ),
    ("ProcessPoolShutdownTest", "test_del_shutdown"): (ALL, _PRIVATE + " (`_executor_manager_thread`, `_call_queue`)"),
    ("ProcessPoolShutdownTest", "test_shutdown_no_wait"): (
        ALL,
        _PRIVATE + " (`_executor_manager_thread`, `_call_queue`)",
    ),
    ("ExecutorDeadlockTest", "test_shutdown_deadlock_pickle"): (ALL, _PRIVATE + " (`_executor_manager_thread`)"),
    ("ProcessPoolShutdownTest", "test_processes_terminate"): (NOT_FORK, _ON_DEMAND + " (it counts 3 of 5)"),
    ("ProcessPoolExecutorTest", "test_idle_process_reuse_one"): (NOT_FORK, _ON_DEMAND),
    ("ProcessPoolExecutorTest", "test_idle_process_reuse_multiple"): (NOT_FORK, _ON_DEMAND),
    ("ProcessPoolShutdownTest", "test_cancel_futures"): (
        ALL,
        "expects some of 50 queued tasks to escape shutdown(cancel_futures=True): the stdlib's call queue "
        "claims a few at once; shoal cancels every task no worker holds, and when its workers are still "
        "starting that is all 50 (so it passes or not by timing; tests/executor/test_futures.py checks "
        "that a task a worker holds completes)",
    ),
    ("ProcessPoolExecutorTest", "test_killed_child"): (
        ALL,
        _BREAKS + " when any worker is killed, here an idle one; shoal replaces it and the task completes "
        "(tests/executor/test_crash.py asserts a killed worker fails only its own future)",
    ),
    ("ProcessPoolExecutorTest", "test_max_tasks_per_child"): (
        ("fork",),
        "expects ValueError for max_tasks_per_child with fork, which is unsafe in the stdlib; shoal forks "
        "replacement workers from a single-threaded zygote, so it accepts it",
    ),
    ("ProcessPoolExecutorTest", "test_max_tasks_per_child_defaults_to_spawn_context"): (
        ALL,
        "expects max_tasks_per_child to switch the default start method to spawn; shoal keeps its default "
        "(fork, or forkserver beside another pool), which replaces workers safely",
    ),
    ("ProcessPoolExecutorTest", "test_python_finalization_error"): (
        ALL,
        "(3.13) makes threading's thread creation fail after the first thread, to break the stdlib's "
        "executor, whose feeder thread cannot start, and expects BrokenProcessPool; shoal submits through "
        "the engine's own threads, none of them Python's, so the map runs and mul's TypeError reaches the "
        "caller",
    ),
    ("ExecutorDeadlockTest", "test_error_at_task_unpickle"): (ALL, _BREAKS + " (BrokenProcessPool)" + _TASK_ERROR),
    ("ExecutorDeadlockTest", "test_exit_at_task_unpickle"): (ALL, _BREAKS + " (BrokenProcessPool)" + _TASK_ERROR),
    ("ExecutorDeadlockTest", "test_error_during_result_unpickle_in_result_handler"): (
        ALL,
        _BREAKS + " (BrokenProcessPool)" + _TASK_ERROR,
    ),
    ("ExecutorDeadlockTest", "test_exit_during_result_unpickle_in_result_handler"): (
        ALL,
        _BREAKS + " (BrokenProcessPool); shoal fails only that future with shoal.RemoteUnpicklingError "
        "(SystemExit while unpickling a result must not exit the caller)",
    ),
}
# Known differences skipped (with the reason) rather than run as expected
# failures: their setUp fails, or they pass or fail by timing.
SKIPPED = {("FailingInitializerTest", "test_initializer"), ("ProcessPoolShutdownTest", "test_cancel_futures")}

_MIXINS = {"fork": "ProcessPoolForkMixin", "forkserver": "ProcessPoolForkserverMixin", "spawn": "ProcessPoolSpawnMixin"}


def _own(test: Any) -> Any:
    """A copy of a test method for one class: ``expectedFailure`` marks the
    function it is given, which the classes of every start method share."""

    @functools.wraps(test)
    def own(self: Any) -> Any:
        return test(self)

    return own


def install(globs: dict[str, Any], start_method: str) -> None:
    """Put the suite's process-pool test classes for ``start_method`` into
    ``globs`` (a test module's globals), or skip that module."""
    if MISSING is not None:
        import pytest

        pytest.skip(MISSING, allow_module_level=True)
    import unittest

    mixin = _UTIL[_MIXINS[start_method]]
    for namespace in _NAMESPACES:
        prefix = mixin.__name__[: -len("Mixin")]
        for name, cls in list(namespace.items()):
            if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase) and issubclass(cls, mixin)):
                continue
            if cls.__module__ != namespace["__name__"]:
                continue  # imported from another module of the suite: collected there
            assert name not in globs, f"two test classes named {name}"
            globs[name] = cls
            for (kind, test), (methods, reason) in KNOWN_DIFFERENCES.items():
                if name == prefix + kind and start_method in methods and hasattr(cls, test):
                    mark = unittest.skip(reason) if (kind, test) in SKIPPED else unittest.expectedFailure
                    setattr(cls, test, mark(_own(getattr(cls, test))))
        globs.setdefault("setUpModule", namespace["setUpModule"])


# The namespaces holding the test classes, and the one holding the mixins.
_NAMESPACES: list[dict[str, Any]] = []
_UTIL: dict[str, Any] = {}
if LAYOUT == "module":
    _NAMESPACES = _load_module()
    _UTIL = globals()
elif LAYOUT == "package":
    _NAMESPACES = _load_package()
    _UTIL = vars(importlib.import_module(PACKAGE + ".util"))
