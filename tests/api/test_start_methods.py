"""How workers come to exist, seen from plain scripts: the default start
method never forks a threaded parent, a pool leaks nothing under
``-X dev``, workers read ``/dev/null`` as standard input, and an
initializer that exits does not end the parent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

METHODS = ["fork", "spawn", "forkserver"]


def _run(
    code: str,
    *args: str,
    flags: tuple[str, ...] = (),
    cwd: Path,
    env: dict[str, str] | None = None,
    **kw: object,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=cwd,
        env=env,
        **kw,  # type: ignore[call-overload]
    )


# A script with a background thread (a logging listener, a progress thread,
# a web server): it runs for the whole life of the pool.
BACKGROUND_THREAD = r"""
import sys, threading, shoal

def square(x):
    return x * x

if __name__ == "__main__":
    stop = threading.Event()
    listener = threading.Thread(target=stop.wait, name="log-listener")
    listener.start()
    method = sys.argv[1] if sys.argv[1] != "default" else None
    with shoal.Pool(2, start_method=method) as pool:
        print("method", pool._start_method)
        print("result", pool.map(square, range(6)))
    stop.set()
    listener.join()
"""


@pytest.mark.parametrize("warnings", ["error::DeprecationWarning", "always::DeprecationWarning"])
def test_script_with_a_background_thread_gets_a_pool_that_does_not_fork_it(warnings: str, tmp_path: Path) -> None:
    # Under "error" CPython 3.12+ drops its fork warning silently; under
    # "always" it prints it: neither may show a fork of this threaded script.
    proc = _run(BACKGROUND_THREAD, "default", flags=("-W", warnings), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "method forkserver" in proc.stdout, proc.stdout
    assert "result [0, 1, 4, 9, 16, 25]" in proc.stdout
    assert "DeprecationWarning" not in proc.stderr, proc.stderr
    assert "multi-threaded" not in proc.stderr, proc.stderr


def test_script_with_a_background_thread_still_forks_when_asked_to(tmp_path: Path) -> None:
    proc = _run(BACKGROUND_THREAD, "fork", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "method fork" in proc.stdout, proc.stdout
    assert "result [0, 1, 4, 9, 16, 25]" in proc.stdout


# A thread Python does not know about, as a C library starts one (a BLAS
# thread pool, a gRPC poller): threading.active_count() stays 1.
NATIVE_THREAD = r"""
import ctypes, threading, shoal

def square(x):
    return x * x

libc = ctypes.CDLL(None)
start = ctypes.cast(libc.pause, ctypes.c_void_p)  # the thread sleeps in pause()
tid = ctypes.c_ulong()
assert libc.pthread_create(ctypes.byref(tid), None, start, None) == 0
assert threading.active_count() == 1
with shoal.Pool(2) as pool:
    print("method", pool._start_method)
    print("result", pool.map(square, range(4)))
"""


def test_thread_started_by_a_c_library_also_rules_out_fork(tmp_path: Path) -> None:
    proc = _run(NATIVE_THREAD, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "method forkserver" in proc.stdout, proc.stdout
    assert "result [0, 1, 4, 9]" in proc.stdout


# A thread that starts between shoal's look at the thread count and the
# fork: here an at-fork hook starts it, so it is running when fork() runs.
THREAD_AT_FORK = r"""
import os, threading, shoal

stop = threading.Event()
started = []

def start_a_thread():
    if not started:
        started.append(threading.Thread(target=stop.wait))
        started[0].start()

os.register_at_fork(before=start_a_thread)
with shoal.Pool(2) as pool:
    print("method", pool._start_method)
    print("result", pool.map(abs, [-1, -2]))
stop.set()
"""


def test_thread_started_just_before_the_fork_also_rules_out_fork(tmp_path: Path) -> None:
    proc = _run(THREAD_AT_FORK, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "method forkserver" in proc.stdout, proc.stdout
    assert "result [1, 2]" in proc.stdout


# numpy's OpenBLAS starts a thread pool as it loads, and stops it itself
# before any fork (pthread_atfork): a numpy script is single-threaded at the
# fork, forks, and its workers inherit numpy. Its BLAS works on after.
NUMPY_SCRIPT = r"""
import sys, numpy, shoal
from shoal import _platform

def has_numpy(_):
    return "numpy" in sys.modules

if _platform.os_threads() == 1:
    sys.exit("skip: this numpy starts no thread as it loads")
with shoal.Pool(2) as pool:
    print("method", pool._start_method, pool.map(has_numpy, range(2), chunksize=1))
a = numpy.arange(90000.0).reshape(300, 300)
assert (a @ numpy.eye(300) == a).all()
print("blas", _platform.os_threads() > 1)
"""


def test_numpy_script_still_forks_by_default(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    proc = _run(NUMPY_SCRIPT, cwd=tmp_path)
    if proc.stderr.startswith("skip: "):
        pytest.skip(proc.stderr[6:].strip())
    assert proc.returncode == 0, proc.stderr
    assert "method fork [True, True]" in proc.stdout, proc.stdout
    assert "blas True" in proc.stdout, proc.stdout


def test_single_threaded_script_still_forks_by_default(tmp_path: Path) -> None:
    code = "import shoal\nwith shoal.Pool(1) as p:\n    print('method', p._start_method, p.map(abs, [-2]))\n"
    proc = _run(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "method fork [2]" in proc.stdout, proc.stdout


# A script that used a pool of threads, or joined a thread, still gets fork
# for its next default pool. A thread already joined shows in the kernel's
# count for a moment after the join (up to a few ms on a loaded machine),
# and thread-pool workers reported their end a moment before their threads
# ended: the pool that came next sometimes found the script threaded and
# fell back to forkserver, pickling script functions by value.
AFTER_THREADS_SCRIPT = """
import threading
import shoal

def square(x):
    return x * x

def method_now():
    with shoal.Pool(1) as p:
        assert p.map(square, [3]) == [9]
        return p._start_method

if __name__ == "__main__":
    methods = []
    for _ in range(25):
        with shoal.ThreadPool(2) as pool:
            list(pool.imap(square, range(50)))
        methods.append(method_now())
        pool = shoal.ThreadPool(2)
        pool.map(square, range(50))
        pool.close()
        pool.join()
        methods.append(method_now())
        with shoal.WorkerPool(n_jobs=2, start_method="threading") as wp:
            wp.map(square, range(50))
        methods.append(method_now())
        with shoal.Executor(2, start_method="threading") as ex:
            list(ex.map(square, range(50)))
        methods.append(method_now())
        t = threading.Thread(target=square, args=(2,))
        t.start()
        t.join()
        methods.append(method_now())
    print("methods", sorted(set(methods)))
"""


def test_a_script_that_used_threads_still_forks_by_default(tmp_path: Path) -> None:
    proc = _run(AFTER_THREADS_SCRIPT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "methods ['fork']" in proc.stdout, proc.stdout


PLAIN = r"""
import sys, shoal

def square(x):
    return x * x

if __name__ == "__main__":
    with shoal.Pool(2, start_method=sys.argv[1]) as pool:
        print(pool.map(square, range(5)))
"""


@pytest.mark.parametrize("method", METHODS)
def test_pool_under_dev_mode_warns_of_no_unclosed_resource(method: str, tmp_path: Path) -> None:
    # The environment carries the same settings into spawned interpreters.
    env = {**os.environ, "PYTHONDEVMODE": "1", "PYTHONWARNINGS": "error::ResourceWarning"}
    proc = _run(PLAIN, method, flags=("-X", "dev", "-W", "error::ResourceWarning"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 4, 9, 16]"
    assert proc.stderr == "", proc.stderr


# The parent reads its first line, so the rest of its standard input is
# partly in sys.stdin's buffer and partly still in the pipe or file.
STDIN = r"""
import json, sys, shoal

def read_stdin(_):
    return sys.stdin.read()

if __name__ == "__main__":
    first = sys.stdin.readline()
    with shoal.Pool(1, start_method=sys.argv[1]) as pool:
        worker = pool.apply(read_stdin, (None,))
    rest = sys.stdin.read()
    print(json.dumps({"first": first, "worker": worker[:40], "rest": len(rest), "tail": rest[-5:]}))
"""


@pytest.mark.parametrize("source", ["pipe", "file"])
@pytest.mark.parametrize("method", METHODS)
def test_task_reading_stdin_gets_nothing_and_the_parent_keeps_its_input(
    method: str, source: str, tmp_path: Path
) -> None:
    body = "x" * 200_000 + "\nend\n"
    data = "first line\n" + body
    if source == "pipe":
        proc = _run(STDIN, method, cwd=tmp_path, input=data)
    else:
        path = tmp_path / "input.txt"
        path.write_text(data)
        with open(path) as f:
            proc = _run(STDIN, method, cwd=tmp_path, stdin=f)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    # What multiprocessing's workers get: an empty /dev/null.
    assert got["worker"] == ""
    assert got["first"] == "first line\n"
    assert (got["rest"], got["tail"]) == (len(body), "\nend\n")


INIT_EXIT = r"""
import sys, shoal

def setup():
    sys.exit(3)

def square(x):
    return x * x

if __name__ == "__main__":
    pool = shoal.Pool(2, initializer=setup, start_method=sys.argv[1])
    try:
        pool.map(square, range(4))
    except Exception as exc:
        print("error", type(exc).__name__, exc)
    pool.terminate()
    print("still running")
"""


@pytest.mark.parametrize("method", METHODS)
def test_initializer_calling_sys_exit_fails_the_tasks_and_the_program_goes_on(method: str, tmp_path: Path) -> None:
    proc = _run(INIT_EXIT, method, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "still running", proc.stdout
    error = next(line for line in lines if line.startswith("error "))
    assert "setup" in error and "SystemExit" in error and "3" in error, error


# What a forkserver zygote imports before it forks (shoal._start.PRELOAD):
# numpy, where the script has it, so that workers start with it as forked
# ones do; the zygote still forks only while it has a single thread.
PRELOADED = r"""
import json, os, sys, shoal
from shoal import _platform, _start

def loaded(names):
    # Only what the worker had before this task: it imports nothing.
    return {name: getattr(sys.modules.get(name), "__file__", None) for name in names}

if __name__ == "__main__":
    names = sys.argv[1:]
    _start.PRELOAD = tuple(names)
    for name in names:
        __import__(name)
    with shoal.Pool(2, start_method="forkserver") as pool:
        workers = pool.map(loaded, [names] * 2, chunksize=1)
        zygote = pool._backend.zygote_pid
        with open(f"/proc/{zygote}/stat", "rb") as f:
            stat = f.read()
        threads = int(stat[stat.rindex(b")") + 2 :].split()[17])
    parent = {name: sys.modules[name].__file__ for name in names}
    print(json.dumps({"workers": workers, "parent": parent, "zygote_threads": threads}))
"""


def test_forkserver_workers_start_with_numpy_when_the_script_has_it(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    proc = _run(PRELOADED, "numpy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["workers"] == [got["parent"]] * 2, got
    assert got["zygote_threads"] == 1, got


def test_a_preloaded_module_whose_thread_outlives_a_fork_is_not_preloaded(tmp_path: Path) -> None:
    # A thread no at-fork handler stops (OpenBLAS's pool stops its own):
    # the zygote starts over without the module, and forks single-threaded.
    (tmp_path / "threaded_mod.py").write_text(
        "import ctypes\n"
        "libc = ctypes.CDLL(None)\n"
        "tid = ctypes.c_ulong()\n"
        "assert libc.pthread_create(ctypes.byref(tid), None, ctypes.cast(libc.pause, ctypes.c_void_p), None) == 0\n"
    )
    proc = _run(PRELOADED, "threaded_mod", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["workers"] == [{"threaded_mod": None}] * 2, got
    assert got["zygote_threads"] == 1, got


def test_a_module_the_zygote_finds_elsewhere_is_not_preloaded(tmp_path: Path) -> None:
    # The script imports its own copy; the zygote, a fresh interpreter,
    # would find another first: workers must not start with that one.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dup_mod.py").write_text("WHICH = 'other'\n")
    (tmp_path / "dup_mod.py").write_text("WHICH = 'zygote'\n")
    first = "import sys\nsys.path.insert(0, 'other')\nimport json, os, shoal"
    code = PRELOADED.replace("import json, os, sys, shoal", first)
    proc = _run(code, "dup_mod", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["parent"]["dup_mod"].endswith(os.path.join("other", "dup_mod.py")), got
    assert got["workers"] == [{"dup_mod": None}] * 2, got


def authkey_seen(_: object) -> tuple[bool, bytes]:
    """Whether this worker had imported multiprocessing, and its authkey."""
    had = "multiprocessing" in sys.modules
    import multiprocessing

    return had, bytes(multiprocessing.current_process().authkey)


@pytest.mark.parametrize("method", METHODS)
def test_workers_take_the_parents_authkey_when_they_use_multiprocessing(method: str) -> None:
    # As stdlib children do, so manager proxies authenticate. A spawned
    # worker takes it as it imports multiprocessing, which it does only
    # when a task needs it (the import is ~10 ms of its start).
    import multiprocessing

    import shoal

    with shoal.Pool(1, start_method=method) as pool:
        had, authkey = pool.apply(authkey_seen, (None,))
    assert authkey == bytes(multiprocessing.current_process().authkey)
    if method == "spawn":
        assert not had
