"""How imap reads its input: nothing read is lost."""

from __future__ import annotations

import pytest

import shoal
import tasks

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_items_read_before_the_input_raised_are_all_delivered_then_the_error(
    pool: shoal.Pool, chunksize: int | None
) -> None:
    def gen():
        for i in range(100):
            if i == 50:
                raise RuntimeError("input broke at item 50")
            yield i

    got = []
    with pytest.raises(RuntimeError, match="input broke at item 50"):
        for value in pool.imap(tasks.identity, gen(), chunksize=chunksize):
            got.append(value)
    assert got == list(range(50))
