"""WorkerPool tests run under every start method shoal has, threading too."""

from __future__ import annotations

import pytest

START_METHODS = ["fork", "spawn", "forkserver", "threading"]

_HOOK_TIMEOUT = (
    "worker_init_timeout and worker_exit_timeout kill the worker stuck in C code, and a thread cannot be "
    "killed: under threading they raise ValueError saying so"
)

# Tests that need a worker that can be killed, and why threads cannot run
# them. Skipped, not run as expected failures: their tasks kill their own
# process, which under threading is the test run itself.
NEEDS_KILLING = {
    "test_a_dead_worker_fails_only_its_task": (
        "its task kills its own process with SIGKILL to show a death fails only that task; a thread "
        "worker's process is the test run itself"
    ),
    "test_a_death_fails_only_its_task_and_the_rest_is_delivered": (
        "its task ends its own process with os._exit to show a death fails only that task; a thread "
        "worker's process is the test run itself"
    ),
    "test_a_failed_map_leaves_the_pool_usable": (
        "the map fails by a task that ends its own process with os._exit; a thread worker's process is the "
        "test run itself"
    ),
    "test_a_dead_workers_replacement_takes_its_chunks": (
        "its task ends its own process with os._exit; a thread worker's process is the test run itself"
    ),
    "test_worker_init_past_its_timeout_fails_the_map": _HOOK_TIMEOUT,
    "test_the_worker_stuck_in_init_is_replaced": _HOOK_TIMEOUT,
    "test_apply_with_a_stuck_worker_init": _HOOK_TIMEOUT,
    "test_worker_exit_past_its_timeout_fails_the_map": _HOOK_TIMEOUT,
    "test_a_kept_workers_stuck_exit_is_raised_by_stop_and_join": _HOOK_TIMEOUT,
    "test_a_lifespan_replacements_stuck_exit_fails_the_map": _HOOK_TIMEOUT,
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
    "test_insights_are_readable_during_an_imap": (
        "insights show a slow task's arguments from the bytes its worker was sent; under threading those "
        "are a reference to the arguments themselves, which are not kept to be shown"
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
        if request.node.module.__name__.endswith("test_shared_objects"):
            pytest.skip(
                "about multiprocessing primitives reaching worker processes under each start method; under "
                "threading a shared object is the object itself (tests/threadpool/test_thread_backends.py)"
            )
    return str(request.param)
