"""WorkerPool tests run under every start method shoal has, threading too."""

from __future__ import annotations

import pytest

START_METHODS = ["fork", "spawn", "forkserver", "threading"]

# Tests that need a worker that can be killed, and why threads cannot run
# them. Skipped, not run as expected failures: their tasks kill their own
# process, which under threading is the test run itself.
NEEDS_KILLING = {
    "test_a_dead_worker_fails_only_its_task": (
        "its task kills its own process with SIGKILL to show a death fails only that task; a thread "
        "worker's process is the test run itself"
    ),
    "test_a_task_past_its_timeout_is_killed_even_in_c_code": (
        "task_timeout kills the worker, and a thread cannot be killed: under threading a task_timeout "
        "raises ValueError saying so (test_threading_refuses_what_needs_killing checks it)"
    ),
}

# Tests of what only processes have.
PROCESSES_ONLY = {
    "test_daemon_workers_cannot_start_processes": (
        "daemon says whether a worker process may have children; a thread worker is not a process, and "
        "may start processes whatever daemon says (as under MPIRE's threading)"
    ),
}


@pytest.fixture(params=START_METHODS)
def method(request: pytest.FixtureRequest) -> str:
    if request.param == "threading":
        name = request.node.originalname
        if name in NEEDS_KILLING:
            pytest.skip(f"needs a worker that can be killed: {NEEDS_KILLING[name]}")
        if name in PROCESSES_ONLY:
            pytest.skip(f"about worker processes: {PROCESSES_ONLY[name]}")
    return str(request.param)
