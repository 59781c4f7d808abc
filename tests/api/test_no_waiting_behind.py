"""A task never waits behind another it does not depend on: neither a
result in a worker's batch behind the task that worker runs next, nor a
short task behind a task of unknown length while another worker frees.

Each test makes a task wait for something only an earlier result lets
happen, as a program does when it opens a gate or submits more work on
seeing a result: held back, it would wait forever (here, until the test's
own limit). Which chunks may queue behind a running one is tested in
crates/shoal-core/src/scheduler.rs."""

from __future__ import annotations

import pytest

import shoal
import tasks
from conftest import START_METHODS

pytestmark = pytest.mark.timeout(90)


def quick(x: int) -> int:
    return x


def opened(path: str) -> str:
    tasks.wait_for(path)
    return "opened"


def held(path: str) -> str:
    tasks.wait_for(path)
    return "held"


@pytest.mark.parametrize("method", START_METHODS)
def test_a_result_goes_out_while_the_task_after_it_runs(method: str, gates) -> None:
    with shoal.Pool(1, start_method=method) as pool:
        # Both functions measured short, so the engine sends the next two
        # tasks to the one worker back to back.
        gates.open("warm")
        assert pool.map(opened, [gates.path("warm")] * 20, chunksize=1) == ["opened"] * 20
        assert pool.map(quick, range(20), chunksize=1) == list(range(20))
        blocker = pool.apply_async(held, (gates.path("hold"),))
        first = pool.apply_async(quick, (1,))
        second = pool.apply_async(opened, (gates.path("second"),))
        gates.open("hold")
        assert blocker.get(timeout=30) == "held"
        # `first` ran in a few microseconds; its result must not wait in
        # the worker's batch until `second` ends.
        assert first.get(timeout=30) == 1
        gates.open("second")
        assert second.get(timeout=30) == "opened"


@pytest.mark.parametrize("method", START_METHODS)
def test_a_short_task_waits_for_a_free_worker_not_behind_a_long_task(method: str, gates) -> None:
    with shoal.Pool(2, start_method=method) as pool:
        assert pool.map(quick, range(20), chunksize=1) == list(range(20))  # measured short
        # started_then_wait has never run here: how long it takes is
        # unknown, so nothing may queue behind it.
        a = pool.apply_async(tasks.started_then_wait, (gates.path("a-started"), gates.path("a"), "a"))
        b = pool.apply_async(tasks.started_then_wait, (gates.path("b-started"), gates.path("b"), "b"))
        tasks.wait_for(gates.path("a-started"))
        tasks.wait_for(gates.path("b-started"))
        short = pool.apply_async(quick, (7,))
        gates.open("b")
        assert b.get(timeout=30) == "b"
        # It runs on b's worker, freed; a's stays blocked until it has.
        assert short.get(timeout=30) == 7
        assert not a.ready()
        gates.open("a")
        assert a.get(timeout=30) == "a"


def fork_and_report(_: object) -> list[str]:
    """Fork, as a task starting its own pool does; the warnings it got."""
    import os
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return [str(w.message) for w in seen]


@pytest.mark.parametrize("method", START_METHODS)
def test_a_task_that_forks_forks_a_process_of_one_thread(method: str) -> None:
    # The thread that sends a worker's results during a long task stops
    # before the worker forks: CPython 3.12+ warns of forking a threaded
    # process (and a lock held by another thread stays held in the child).
    with shoal.Pool(1, start_method=method) as pool:
        # Tiny tasks, so results wait in batches and that thread is running.
        assert sum(pool.imap(quick, range(20_000), chunksize=1)) == sum(range(20_000))
        forked = pool.apply_async(fork_and_report, (None,))
        assert sum(pool.imap(quick, range(2_000), chunksize=1)) == sum(range(2_000))
        assert forked.get(timeout=30) == []
