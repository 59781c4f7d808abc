"""A task whose worker died names what it was running: the function, the
input index and the call, as the remote traceback of an exception does,
not the engine's job and chunk numbers."""

from __future__ import annotations

import pytest

import shoal
from tasks import fault_on_item

pytestmark = pytest.mark.timeout(60)


def test_a_lost_task_names_the_function_the_input_index_and_the_call(pool: shoal.Pool) -> None:
    with pytest.raises(shoal.WorkerLostError) as info:
        pool.map(fault_on_item, [(i, "os_exit" if i == 6 else "") for i in range(10)], chunksize=1)
    message = str(info.value)
    assert "fault_on_item on input item 6" in message, message
    assert "in the task fault_on_item((6, 'os_exit'))" in message, message
    assert "job" not in message, message


def test_a_lost_chunk_names_its_input_range_and_its_calls(pool: shoal.Pool) -> None:
    items = [(i, "os_exit" if i == 5 else "") for i in range(8)]
    with pytest.raises(shoal.WorkerLostError) as info:
        pool.map(fault_on_item, items, chunksize=2)
    message = str(info.value)
    assert "fault_on_item on input items 4 to 5" in message, message
    assert "in one of the tasks fault_on_item((4, '')), fault_on_item((5, 'os_exit'))" in message, message


def test_a_lost_apply_names_its_call(pool: shoal.Pool) -> None:
    with pytest.raises(shoal.WorkerLostError) as info:
        pool.apply(fault_on_item, ((3, "os_exit"),))
    assert "in the task fault_on_item((3, 'os_exit'))" in str(info.value)
