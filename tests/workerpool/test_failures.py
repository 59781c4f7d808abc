"""What fails, and how: a task's own exception arrives unwrapped, a dead
worker fails only its task, a task past its deadline is killed even in C
code; the pool goes on after each."""

from __future__ import annotations

import pytest
import wp_tasks

import shoal


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep_alive", [False, True])
def test_the_tasks_own_exception_with_the_remote_traceback(method: str, keep_alive: bool) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=keep_alive) as pool:
        with pytest.raises(wp_tasks.CustomError, match="bad item 5") as info:
            pool.map(wp_tasks.fail_on_five, range(10))
        # Rebuilt without its __init__ (which takes other arguments), with
        # its attributes, and the worker's traceback as the cause.
        assert info.value.code == 5
        cause = info.value.__cause__
        assert isinstance(cause, shoal.RemoteTraceback)
        assert "fail_on" in cause.tb and "fail_on_five(5)" in cause.tb
        # A failed map leaves the pool usable.
        assert pool.map(wp_tasks.square, range(5)) == [0, 1, 4, 9, 16]
        results = pool.imap_unordered(wp_tasks.fail_on_five, range(10), chunk_size=1)
        with pytest.raises(wp_tasks.CustomError):
            list(results)
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
def test_imap_delivers_what_comes_before_the_failure(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        got = []
        with pytest.raises(wp_tasks.CustomError):
            for value in pool.imap(wp_tasks.fail_on_five, range(10), chunk_size=1):
                got.append(value)
        assert got == [0, 1, 2, 3, 4]


@pytest.mark.timeout(60)
def test_system_exit_in_a_task_is_raised_as_such(method: str) -> None:
    with shoal.WorkerPool(2, start_method=method) as pool:
        with pytest.raises(SystemExit) as info:
            pool.map(wp_tasks.exits, range(5))
        assert info.value.code == 3
        assert pool.map(wp_tasks.square, range(3)) == [0, 1, 4]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep_alive", [False, True])
def test_a_dead_worker_fails_only_its_task(method: str, keep_alive: bool) -> None:
    with shoal.WorkerPool(2, start_method=method, keep_alive=keep_alive) as pool:
        got = []
        with pytest.raises(shoal.WorkerLostError, match=r"signal 9 \(SIGKILL\)") as info:
            for value in pool.imap(wp_tasks.die_on_two, range(10), chunk_size=1):
                got.append(value)
        assert got == [0, 1]
        assert "die_on_two(2)" in str(info.value)
        # MPIRE programs catch RuntimeError for a dead worker.
        with pytest.raises(RuntimeError):
            pool.map(wp_tasks.die_on_two, range(5))
        assert pool.map(wp_tasks.square, range(20)) == [x * x for x in range(20)]


@pytest.mark.timeout(60)
def test_a_task_past_its_timeout_is_killed_even_in_c_code(method: str) -> None:
    # Task 3 sleeps in libc for an hour: only a kill ends it before the
    # test's own timeout.
    with shoal.WorkerPool(2, start_method=method, keep_alive=True) as pool:
        with pytest.raises(TimeoutError, match=r"sleep_in_c_on_three\(3\)") as info:
            pool.map(wp_tasks.sleep_in_c_on_three, range(6), task_timeout=1.0)
        assert isinstance(info.value, shoal.TaskTimeoutError)
        assert isinstance(info.value, shoal.WorkerLostError)
        assert "timeout of 1.000 s" in str(info.value)
        # The worker was replaced; the pool goes on.
        assert pool.map(wp_tasks.square, range(10), task_timeout=5) == [x * x for x in range(10)]
        got = list(pool.imap_unordered(wp_tasks.sleep_in_c_on_three, range(3), task_timeout=5))
        assert sorted(got) == [0, 1, 2]
        with pytest.raises(TimeoutError):
            pool.apply(wp_tasks.sleep_in_c_on_three, (3,), task_timeout=1.0)
        assert pool.apply(wp_tasks.add, (1, 2), task_timeout=5) == 3
