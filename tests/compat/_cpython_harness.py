"""Run CPython's own Pool tests against ``shoal.Pool``.

The tests come from ``test._test_multiprocessing``, installed with the
interpreter, loaded at test time; nothing of them is copied here. Their
helper ``install_tests_in_module_dict`` builds one ``unittest`` class per
test class and start method; we keep the three Pool classes (31 tests) and
point the ``Pool`` they use at shoal's:

* ``ProcessesMixin.Pool`` is what ``_TestPool`` calls as ``self.Pool``;
* ``multiprocessing.Pool`` is what ``_TestPoolWorkerErrors`` and
  ``_TestPoolWorkerLifetime`` call directly;
* ``test_worker_finalization_via_atexit_handler_of_multiprocessing`` runs
  ``from multiprocessing import Pool`` in a child interpreter, so its code
  gets a two-line prologue that makes that import give shoal's Pool.

The generated classes must live in an importable module, because some tests
pass bound classmethods to the pool and those pickle by reference; each
start method therefore has its own ``test_pool_<method>.py``.
"""

from __future__ import annotations

import multiprocessing
import unittest
from typing import Any

import shoal

POOL_CLASSES = ("WithProcessesTestPool", "WithProcessesTestPoolWorkerErrors", "WithProcessesTestPoolWorkerLifetime")

# Tests that cannot pass, and why. Each is run as an expected failure, so
# one that starts passing is reported.
KNOWN_DIFFERENCES = {
    ("WithProcessesTestPoolWorkerErrors", "test_unpickleable_result"): (
        "the result is `lambda: 42`; shoal carries lambdas by value (cloudpickle), so the result arrives "
        "instead of failing with MaybeEncodingError. tests/api/test_errors.py checks MaybeEncodingError "
        "with a result that nothing can pickle"
    ),
    ("WithProcessesTestPool", "test_imap_handle_iterable_exception"): (
        "its last case, chunksize=2 over a generator that raises at item 7, expects the error right after "
        "item 5: multiprocessing drops item 6, read into the chunk the error broke. shoal runs and delivers "
        "every item read before the error (item 6), then raises it. tests/api/test_imap_feeding.py checks this"
    ),
}

_PROLOGUE = "import multiprocessing, shoal\nmultiprocessing.Pool = shoal.Pool\n"


def _patch() -> Any:
    import test._test_multiprocessing as tm
    from test.support import script_helper

    tm.ProcessesMixin.Pool = staticmethod(shoal.Pool)
    multiprocessing.Pool = shoal.Pool  # type: ignore[misc, assignment]
    if not getattr(script_helper.assert_python_ok, "_shoal", False):
        original = script_helper.assert_python_ok

        def assert_python_ok(*args: Any, **env: Any) -> Any:
            if len(args) >= 2 and args[0] == "-c":
                args = ("-c", _PROLOGUE + args[1], *args[2:])
            return original(*args, **env)

        assert_python_ok._shoal = True  # type: ignore[attr-defined]
        script_helper.assert_python_ok = assert_python_ok
        # The test module imported the function by name from test.support.
        tm.test.support.script_helper.assert_python_ok = assert_python_ok
    return tm


def install(globs: dict[str, Any], start_method: str) -> None:
    """Put CPython's Pool test classes for ``start_method`` into ``globs``."""
    tm = _patch()
    generated: dict[str, Any] = {"__name__": globs["__name__"]}
    tm.install_tests_in_module_dict(generated, start_method, only_type="processes")
    for name in POOL_CLASSES:
        globs[name] = generated[name]
    for (cls, method), _reason in KNOWN_DIFFERENCES.items():
        test = getattr(globs[cls], method)
        setattr(globs[cls], method, unittest.expectedFailure(test))
    globs["setUpModule"] = generated["setUpModule"]
    globs["tearDownModule"] = generated["tearDownModule"]
