"""A read-only array, sent as an argument or returned as a result, arrives
writable and private on the other side, at every size, as it does with
``multiprocessing.Pool``: in-place code such as ``a -= a.mean()`` works."""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal
from shoal import _shm

np = pytest.importorskip("numpy", reason="numpy arrays are what users send read-only")

pytestmark = pytest.mark.timeout(60)

# One size that stays in the pickle stream, one that travels through shared memory.
SIZES = [16, _shm.THRESHOLD // 8 * 4]


def centre(a):
    """In-place code a user writes; raises ValueError on a read-only array."""
    a -= a.mean()
    return float(np.abs(a).sum())


def read_only(n: int):
    """A result that is read-only in the worker."""
    return np.frombuffer(np.arange(n, dtype=np.float64).tobytes())


def frozen(n: int):
    a = np.arange(n, dtype=np.float64)
    a.setflags(write=False)
    return a


def _read_only_arrays(n: int, tmp_path: Path) -> list:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(n, dtype=np.float64))
    return [
        np.frombuffer(np.arange(n, dtype=np.float64).tobytes()),
        frozen(n),
        np.load(path, mmap_mode="r"),
        np.asarray(np.load(path, mmap_mode="r")),
        frozen(2 * n).reshape(2, n).T,  # Fortran order
    ]


@pytest.mark.parametrize("n", SIZES)
def test_a_read_only_argument_arrives_writable(pool: shoal.Pool, n: int, tmp_path: Path) -> None:
    arrays = _read_only_arrays(n, tmp_path)
    expected = [centre(np.array(a)) for a in arrays]
    assert pool.map(centre, arrays, chunksize=1) == expected
    assert pool.map(centre, arrays, chunksize=5) == expected
    assert [pool.apply_async(centre, (a,)).get(timeout=30) for a in arrays] == expected
    assert list(pool.imap(centre, arrays)) == expected
    # The task changed its own copy only.
    assert [float(a.sum()) for a in arrays] == [float(np.array(a).sum()) for a in arrays]


@pytest.mark.parametrize("n", SIZES)
def test_a_read_only_result_arrives_writable_and_private(pool: shoal.Pool, n: int) -> None:
    for out in (
        pool.map(read_only, [n] * 4, chunksize=1),
        pool.map(frozen, [n] * 4, chunksize=2),
        [pool.apply_async(read_only, (n,)).get(timeout=30) for _ in range(2)],
    ):
        for a in out:
            assert a.flags.writeable
            centre(a)
        assert not np.shares_memory(out[0], out[1])
        assert float(out[0][1] - out[0][0]) == 1.0
