"""CPython's ``test_concurrent_futures`` (3.11 layout: one module), loaded
from the interpreter's test suite at import and pointed at ``shoal.Executor``.

Nothing of CPython's tests is copied here. The module's source is read from
the installed test suite and executed in this module's namespace, so that
the functions and classes the tests send to workers (``mul``,
``sleep_and_print``, the test classes' classmethods) pickle by reference
as ``_cpython_futures.<name>``, which a worker of any start method can
import: ``tests/compat`` is on the path the workers get.

Where the suite is: ``test.test_concurrent_futures`` of the running
interpreter if it has one, else Debian's ``libpython3.X-testsuite`` for the
same minor version (``/usr/lib/python3.X/test``); pyenv's builds here ship
without it. ``SOURCE`` is None when neither is found; the test modules then
skip. Python 3.12 split the module into a package, which this loader does
not read yet (``LAYOUT_SUPPORTED``).

Three changes make it test shoal:

* ``ProcessPoolFork/Forkserver/SpawnMixin.executor_type`` is
  :class:`ProcessPoolExecutor` below, ``shoal.Executor`` under the stdlib's
  name (the child scripts of ``assert_python_ok`` import the executor by
  that name);
* the module's ``futures`` is a copy of ``concurrent.futures`` whose
  ``ProcessPoolExecutor`` is the same class, for the tests that build their
  own executor;
* ``assert_python_ok`` runs its child scripts after a prologue that makes
  ``concurrent.futures.ProcessPoolExecutor`` shoal's and
  ``test.test_concurrent_futures`` this module.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import shoal

HERE = Path(__file__).resolve().parent


def _find_source() -> Path | None:
    spec = importlib.util.find_spec("test.test_concurrent_futures")
    if spec is not None and spec.origin and spec.origin.endswith(".py") and not spec.submodule_search_locations:
        return Path(spec.origin)
    if spec is not None:
        return None  # a package: the 3.12+ layout
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = Path("/usr/lib") / minor / "test" / "test_concurrent_futures.py"
    return candidate if candidate.is_file() else None


SOURCE = _find_source()
LAYOUT_SUPPORTED = sys.version_info[:2] == (3, 11)
# What is missing, for the skip message.
MISSING = (
    None
    if SOURCE is not None and LAYOUT_SUPPORTED
    else (
        f"CPython {sys.version_info.major}.{sys.version_info.minor}'s test_concurrent_futures is not installed "
        f"(pyenv's builds leave it out; Debian's libpython3.{sys.version_info.minor}-testsuite has it)"
        if SOURCE is None
        else "this loader reads the 3.11 layout of test_concurrent_futures (one module); 3.12 made it a package"
    )
)


class ProcessPoolExecutor(shoal.Executor):
    """``shoal.Executor`` under the name the tests' child scripts import."""


_PROLOGUE = (
    "import sys\n"
    f"sys.path.insert(0, {str(HERE)!r})\n"
    "import concurrent.futures, multiprocessing, shoal, _cpython_futures\n"
    "concurrent.futures.ProcessPoolExecutor = _cpython_futures.ProcessPoolExecutor\n"
    "sys.modules['test.test_concurrent_futures'] = _cpython_futures\n"
)


def _load() -> None:
    assert SOURCE is not None
    code = compile(SOURCE.read_text(), str(SOURCE), "exec")
    # CPython's own test module, from the interpreter's install.
    exec(code, globals())
    g = globals()
    for mixin in ("ProcessPoolForkMixin", "ProcessPoolForkserverMixin", "ProcessPoolSpawnMixin"):
        g[mixin].executor_type = ProcessPoolExecutor
    patched = types.ModuleType("concurrent.futures")
    patched.__dict__.update(concurrent.futures.__dict__)
    patched.ProcessPoolExecutor = ProcessPoolExecutor  # type: ignore[attr-defined]
    g["futures"] = patched
    original = g["assert_python_ok"]

    def assert_python_ok(*args: Any, **env: Any) -> Any:
        if len(args) >= 2 and args[0] == "-c":
            args = ("-c", _PROLOGUE + args[1], *args[2:])
        return original(*args, **env)

    g["assert_python_ok"] = assert_python_ok


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
        "passes a multiprocessing.Queue in initargs, which pickles only while the stdlib spawns a process "
        "(shoal sends the initializer as a pickle), then reads the private `_broken` and expects the pool to "
        "break; shoal fails each queued task with the initializer's exception instead",
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

    g = globals()
    mixin = g[_MIXINS[start_method]]
    prefix = mixin.__name__[: -len("Mixin")]
    for name, cls in list(g.items()):
        if isinstance(cls, type) and issubclass(cls, unittest.TestCase) and issubclass(cls, mixin):
            globs[name] = cls
            for (kind, test), (methods, reason) in KNOWN_DIFFERENCES.items():
                if name == prefix + kind and start_method in methods and hasattr(cls, test):
                    mark = unittest.skip(reason) if (kind, test) in SKIPPED else unittest.expectedFailure
                    setattr(cls, test, mark(_own(getattr(cls, test))))
    globs["setUpModule"] = g["setUpModule"]


if MISSING is None:
    _load()
