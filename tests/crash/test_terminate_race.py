"""terminate() from another thread, racing join() or terminate(), returns
cleanly in both threads: nothing is closed twice, no zygote is left."""

from __future__ import annotations

import threading

import pytest

import shoal

ROUNDS = 150


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(180)
def test_terminate_from_a_timer_thread_racing_join_or_terminate() -> None:
    # Before the fix, 4-7 rounds in 60 raised OSError(EBADF) in one of the
    # two threads: each closed the shared-memory descriptors, and the second
    # close could hit a number already reused by something else.
    errors: list[str] = []
    zygotes: list[int] = []
    for i in range(ROUNDS):
        # Six workers: six result arenas, so the two threads' closes overlap
        # long enough to race on most machines.
        p = shoal.Pool(6, start_method="forkserver" if i % 3 == 2 else None)
        assert p.map(abs, range(-6, 0)) == [6, 5, 4, 3, 2, 1]
        if p._backend is not None and p._backend.zygote_pid is not None:
            zygotes.append(p._backend.zygote_pid)
        both = threading.Barrier(2)

        def timer(pool: shoal.Pool = p, both: threading.Barrier = both, i: int = i) -> None:
            both.wait()
            try:
                pool.terminate()
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                errors.append(f"round {i}, timer thread: {exc!r}")

        t = threading.Thread(target=timer)
        t.start()
        both.wait()
        try:
            if i % 2:
                p.terminate()
            else:
                p.close()
                p.join()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(f"round {i}, main thread: {exc!r}")
        t.join()
        p.join()  # after both, join still returns
    assert errors == []
    # Every zygote exits once its engine has stopped, and has been reaped.
    assert [z for z in zygotes if _running(z)] == []
