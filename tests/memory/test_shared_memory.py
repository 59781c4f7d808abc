"""Large buffers travel through shared memory: correct, private, reused,
bounded, and gone with the pool."""

from __future__ import annotations

import gc
import os
import time

import pytest

import shoal
import tasks
from procfs import shm_held
from shoal import _shm

np = pytest.importorskip("numpy", reason="numpy is the common source of large buffers")

pytestmark = pytest.mark.timeout(60)

BIG = _shm.THRESHOLD // 8 * 4  # float64 items: four times the threshold


def _arrays(n: int, size: int = BIG) -> list:
    return [np.full(size, float(i)) for i in range(n)]


def _inside(array, arena: _shm.Arena) -> bool:
    """Whether ``array``'s data lies in a mapping of ``arena``."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) > 4 and int(fields[4]) == arena.ino:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= array.ctypes.data < end:
                    return True
    return False


def _memfd_inodes() -> set[int]:
    """Inodes of the shoal memfds this process holds open or mapped."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal"):
                out.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except OSError:
            continue
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "/memfd:shoal" in line:
                out.add(int(line.split()[4]))
    return out


def _wait_all_free(arena: _shm.Arena, limit: float = 10.0) -> None:
    """Workers free a block just after sending the result that used it."""
    deadline = time.monotonic() + limit
    while arena.busy():
        assert time.monotonic() < deadline, "argument blocks were never freed"
        time.sleep(0.001)


def test_arrays_travel_both_ways(pool: shoal.Pool) -> None:
    arrays = _arrays(12)
    assert pool.map(tasks.array_total, arrays) == [float(i) * BIG for i in range(12)]
    out = pool.map(tasks.filled, [(BIG, float(i)) for i in range(12)], chunksize=1)
    assert [float(a[0]) for a in out] == [float(i) for i in range(12)]
    assert all(a.shape == (BIG,) and a.flags.writeable for a in out)
    # They live in the pool's result arenas: no copy was made on the way in.
    assert all(any(_inside(a, arena) for arena in pool._buffers.results) for a in out)
    # apply_async and imap take the same path.
    assert pool.apply_async(tasks.array_total, (arrays[3],)).get() == 3.0 * BIG
    assert list(pool.imap(tasks.array_total, arrays[:4])) == [float(i) * BIG for i in range(4)]


def test_a_chunks_large_results_leave_the_worker_as_each_is_made(pool: shoal.Pool) -> None:
    # A chunk's results go out together, but each array is copied to shared
    # memory as its task returns and let go: the worker never holds a
    # chunk's worth (its malloc would give that heap back, then fault it in
    # again for the next chunk).
    out = pool.map(tasks.filled_after_last, [(BIG, float(i)) for i in range(16)], chunksize=4)
    assert [float(a[0]) for a in out] == [float(i) for i in range(16)]
    assert [float(a[-1]) for a in out] == [0.0] * 16  # no task saw its worker's previous array alive
    assert all(any(_inside(a, arena) for arena in pool._buffers.results) for a in out)


@pytest.mark.parametrize("first", ["array", "small"])
def test_a_chunk_of_large_results_keeps_each_items_outcome(pool: shoal.Pool, first: str) -> None:
    # A chunk whose first result is an array sends each array ahead as it is
    # made; its small results, failures and unpicklable results come out as
    # in a chunk that starts with a small one.
    items = [(BIG, 1.0) if first == "array" else "small", "small", (BIG, 2.0), "raise", (BIG, 3.0), "lock", (BIG, 4.0)]
    it = pool.imap(tasks.large_or_not, items, chunksize=len(items))
    got: list[object] = []
    for _ in items:
        try:
            r = next(it)
        except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
            got.append(type(exc).__name__)
        else:
            got.append(float(r[0]) if isinstance(r, np.ndarray) else r)
            if isinstance(r, np.ndarray) and first == "array":
                # (A chunk that holds a result that cannot be pickled, and
                # did not send its arrays ahead, sends them in band.)
                assert any(_inside(r, arena) for arena in pool._buffers.results)
    lead = 1.0 if first == "array" else 7
    assert got == [lead, 7, 2.0, "ValueError", 3.0, "MaybeEncodingError", 4.0]


def test_a_worker_changing_its_argument_changes_only_its_copy(pool: shoal.Pool) -> None:
    arrays = _arrays(4)
    assert pool.map(tasks.bump_and_total, arrays, chunksize=1) == [(i + 1.0) * BIG for i in range(4)]
    assert [float(a.sum()) for a in arrays] == [float(i) * BIG for i in range(4)]


def test_a_result_is_private_to_the_parent(pool: shoal.Pool) -> None:
    first, second = pool.map(tasks.filled, [(BIG, 1.0), (BIG, 2.0)], chunksize=1)
    first += 10
    # Later results never reuse a block a live array still uses.
    later = pool.map(tasks.filled, [(BIG, 3.0)] * 8, chunksize=1)
    assert float(first[0]) == 11.0 and float(second[0]) == 2.0
    assert all(float(a[-1]) == 3.0 for a in later)


def _blocks_for(n_buffers: int, nbytes: int) -> int:
    """Bytes an arena spans when it holds ``n_buffers`` blocks of ``nbytes``."""
    return _shm.PAYLOAD + n_buffers * _shm._round(nbytes)


def test_blocks_are_reused_not_grown() -> None:
    # However the rounds interleave, an arena never spans more blocks than
    # one round has buffers: freed blocks are written again.
    with shoal.Pool(2) as p:
        arrays = _arrays(16)
        expected = [float(i) * BIG for i in range(16)]
        for _ in range(4):
            assert p.map(tasks.array_total, arrays) == expected
            _wait_all_free(p._buffers.args)
        assert p._buffers.args.end <= _blocks_for(16, BIG * 8)
        for _ in range(4):
            p.map(tasks.filled, [(BIG, 1.0)] * 8, chunksize=1)
        assert all(a.end <= _blocks_for(8, BIG * 8) for a in p._buffers.results)


def test_results_outlive_the_workers() -> None:
    p = shoal.Pool(2)
    r = p.map_async(tasks.filled, [(BIG, float(i)) for i in range(6)], chunksize=1)
    p.close()
    p.join()
    del p
    gc.collect()
    assert [float(a[7]) for a in r.get(timeout=30)] == [float(i) for i in range(6)]


def test_a_crash_loses_only_its_task() -> None:
    arrays = _arrays(10)
    arrays[4][0] = -1
    with shoal.Pool(2) as p:
        it = p.imap(tasks.total_or_die, arrays, chunksize=1)
        for i in range(10):
            if i == 4:
                with pytest.raises(shoal.WorkerLostError):
                    next(it)
            else:
                # Chunks queued behind the crash are sent again with their
                # buffers intact.
                assert next(it) == float(i) * BIG
        assert p.map(tasks.array_total, arrays[:3]) == [0.0, float(BIG), 2.0 * BIG]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_crash_frees_the_blocks_of_results_it_never_sent(method: str) -> None:
    # The worker writes three arrays to its result arena and dies on the
    # chunk's fourth task: their blocks never reach the parent. After each
    # crash, the worker that takes the arena over frees them.
    with shoal.Pool(1, start_method=method) as p:
        crashed = [(BIG, 1.0), (BIG, 2.0), (BIG, 3.0), (BIG, -1.0)]
        for _ in range(3):
            with pytest.raises(shoal.WorkerLostError):
                p.map(tasks.filled_or_die, crashed, chunksize=4)
            out = p.map(tasks.filled, [(BIG, 5.0)] * 2, chunksize=1)
            assert [float(a[0]) for a in out] == [5.0, 5.0]
            held = sum(len(a.busy()) for a in p._buffers.results)
            assert held == 2, "blocks a crash kept from being sent are still held"
            del out
            gc.collect()
            assert all(not a.busy() for a in p._buffers.results)


def test_a_full_arena_falls_back_to_the_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shm, "CAPACITY", _shm.PAYLOAD + (1 << 20))
    with shoal.Pool(2, start_method="spawn") as p:
        arrays = _arrays(8, 1 << 16)  # 512 KiB each: two fit, the rest do not
        assert p.map(tasks.array_total, arrays) == [float(i) * (1 << 16) for i in range(8)]
        out = p.map(tasks.filled, [(1 << 16, float(i)) for i in range(8)], chunksize=1)
        assert [float(a[0]) for a in out] == [float(i) for i in range(8)]


@pytest.mark.parametrize("ending", ["close", "terminate"])
def test_no_segment_outlives_the_pool(ending: str) -> None:
    shm_before = shm_held()
    p = shoal.Pool(2, start_method="spawn")
    mine = {a.ino for a in (p._buffers.args, *p._buffers.results)}
    assert mine <= _memfd_inodes()
    out = p.map(tasks.filled, [(BIG, 1.0)] * 4, chunksize=1)
    assert p.map(tasks.array_total, out) == [float(BIG)] * 4
    getattr(p, ending)()
    p.join()
    assert float(out[0][0]) == 1.0  # results outlive the pool's workers
    del p, out
    gc.collect()
    # A memfd goes with its last descriptor and mapping, and has no name to leak.
    assert not mine & _memfd_inodes()
    assert shm_held() <= shm_before
