"""The result object's behaviour at its edges: callbacks that ask about
their own result, interrupted calls, and lifespans counted in tasks."""

from __future__ import annotations

import os
import threading

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


def test_a_callback_asking_about_its_own_result_is_told_not_ready(pool: shoal.Pool) -> None:
    # As in multiprocessing, a result is ready only once its callback ran;
    # asking from inside the callback must answer, not wait for itself.
    seen: list[object] = []
    holder: list[object] = []
    held = threading.Event()

    def callback(value: object) -> None:
        # The task may finish before apply_async returns; wait for the
        # result object to be in hand rather than race its assignment.
        assert held.wait(30)
        r = holder[0]
        seen.append(r.ready())  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="own callback"):
            r.get()  # type: ignore[attr-defined]
        seen.append(value)

    r = pool.apply_async(tasks.square, (4,), callback=callback)
    holder.append(r)
    held.set()
    assert r.get(timeout=30) == 16
    assert seen == [False, 16]
    assert r.ready() and r.successful()


def test_ctrl_c_while_map_pickles_its_input_leaves_close_and_join_working() -> None:
    p = shoal.Pool(2)
    with pytest.raises(KeyboardInterrupt):
        p.map(tasks.identity, [1, 2, tasks.FaultOnPickle("keyboard_interrupt"), 4], chunksize=1)
    assert p.map(tasks.square, range(4)) == [0, 1, 4, 9]
    p.close()
    p.join()  # would wait forever for the interrupted map's job


def test_imap_runs_one_item_per_task_when_workers_live_a_number_of_tasks() -> None:
    # multiprocessing's imap sends one item per task; with maxtasksperchild
    # that is what replaces workers.
    with shoal.Pool(1, maxtasksperchild=1) as p:
        pids = list(p.imap(tasks.pid_of, range(4)))
    assert len(set(pids)) == 4
    assert os.getpid() not in pids
