"""shoal's public names: ``__all__`` is a literal list for type checkers,
and must name exactly what ``_EXPORTS`` imports on use."""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.pool

import shoal


def test_all_matches_exports() -> None:
    assert sorted(shoal.__all__) == sorted(shoal._EXPORTS)
    assert len(set(shoal.__all__)) == len(shoal.__all__)


def test_every_name_resolves_to_its_module() -> None:
    for name in shoal.__all__:
        value = getattr(shoal, name)
        assert value is getattr(importlib.import_module(shoal._EXPORTS[name]), name)
    # The stdlib's own classes, not copies: `except` clauses written for
    # multiprocessing catch what shoal raises.
    assert shoal.TimeoutError is multiprocessing.TimeoutError
    assert shoal.MaybeEncodingError is multiprocessing.pool.MaybeEncodingError
    assert shoal.RemoteTraceback is multiprocessing.pool.RemoteTraceback


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from shoal import *", namespace)
    assert set(shoal.__all__) <= set(namespace)
