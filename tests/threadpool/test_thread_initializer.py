"""The initializer runs once on each worker thread, before its tasks."""

from __future__ import annotations

import threading

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)


def test_initializer_runs_once_per_worker_thread() -> None:
    local = threading.local()
    idents: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(3)

    def init(tag: str) -> None:
        local.tag = tag
        with lock:
            idents.append(threading.get_ident())

    def task(_: int) -> tuple[str, int]:
        ready.wait(30)  # each of the three workers holds one task
        return local.tag, threading.get_ident()

    with shoal.ThreadPool(3, initializer=init, initargs=("ok",)) as p:
        got = p.map(task, range(3), chunksize=1)
    assert {tag for tag, _ in got} == {"ok"}
    assert len(idents) == 3 and len(set(idents)) == 3
    assert {ident for _, ident in got} == set(idents)


def test_initargs_are_the_objects_themselves() -> None:
    shared: list[object] = []
    seen: list[bool] = []

    def init(target: list[object]) -> None:
        seen.append(target is shared)

    with shoal.ThreadPool(2, initializer=init, initargs=(shared,)) as p:
        p.map(abs, range(4))
    assert seen and all(seen)
