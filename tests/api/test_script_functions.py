"""What a plain script's own functions do in a pool, as `multiprocessing`
users expect: under fork they travel by reference (the worker already has
the script's `__main__`), under spawn and forkserver by value once per pool;
what cannot be pickled fails with the stdlib's error or one that names the
culprit; remote tracebacks keep the script's file and source line; and a
cache never runs a callable with stale state."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import shoal
from callables import Multiplier, scaled

pytestmark = pytest.mark.timeout(120)


def _script(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=100, cwd=tmp_path)


def test_fork_runs_a_script_function_that_uses_a_module_level_lock_and_connection(tmp_path: Path) -> None:
    # The stdlib's fork pool runs this: the worker inherits the script's
    # globals. Pickled by value, the lock and the connection refused.
    proc = _script(
        tmp_path,
        """
        import sqlite3, sys, threading
        from shoal import Pool

        LOCK = threading.Lock()
        DB = sqlite3.connect(":memory:")

        def work(x):
            with LOCK:
                return DB.execute("select ?", (x,)).fetchone()[0]

        if __name__ == "__main__":
            with Pool(2, start_method="fork") as pool:
                print(pool.map(work, range(4)), [pool.apply_async(work, (5,)).get()])
            print("cloudpickle used:", "cloudpickle" in sys.modules)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[0, 1, 2, 3] [5]" in proc.stdout
    assert "cloudpickle used: False" in proc.stdout


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_script_function_is_pickled_once_per_pool_not_per_call(tmp_path: Path, method: str) -> None:
    # 20 apply_async calls of a function that reads a large global: pickled
    # with every call, the global travelled 20 times.
    proc = _script(
        tmp_path,
        """
        import sys
        import shoal._jobs as jobs
        from shoal import Pool

        BIG = list(range(300_000))
        calls = []
        real = jobs.dumps_func
        def counting(func, *args, **kwargs):
            calls.append(func)
            return real(func, *args, **kwargs)
        jobs.dumps_func = counting

        def total(i):
            return len(BIG) + i

        if __name__ == "__main__":
            with Pool(2, start_method=sys.argv[1]) as pool:
                out = [pool.apply_async(total, (i,)).get() for i in range(20)]
                out += pool.map(total, range(3))
            print(out[0], out[-1], "pickled", calls.count(total))
        """,
        method,
    )
    assert proc.returncode == 0, proc.stderr
    assert "300000 300002 pickled 1" in proc.stdout


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_by_value_failure_names_the_global_and_what_to_do(tmp_path: Path, method: str) -> None:
    proc = _script(
        tmp_path,
        """
        import sys, threading
        from shoal import Pool

        LOCK = threading.Lock()

        def work(x):
            with LOCK:
                return x

        if __name__ == "__main__":
            with Pool(2, start_method=sys.argv[1]) as pool:
                try:
                    pool.map(work, range(4))
                except Exception as exc:
                    print(type(exc).__name__, exc)
        """,
        method,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "TypeError" in out, out
    assert "'LOCK'" in out and "'work'" in out, out
    assert "initializer" in out and "module" in out, out


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_an_open_file_argument_raises_the_stdlib_type_error(tmp_path: Path, method: str) -> None:
    # cloudpickle would send a StringIO snapshot of the file; plain pickle,
    # like the stdlib, refuses it.
    proc = _script(
        tmp_path,
        """
        import sys
        from shoal import Pool

        def first_line(f):
            return f.readline()

        if __name__ == "__main__":
            with Pool(2, start_method=sys.argv[1]) as pool, open(__file__) as f:
                try:
                    print("got", repr(pool.apply(first_line, (f,))))
                except TypeError as exc:
                    print("TypeError", exc)
        """,
        method,
    )
    assert proc.returncode == 0, proc.stderr
    # The interpreter's own message: 3.13 changed it ("cannot pickle
    # 'TextIOWrapper' instances").
    with open(__file__) as f:
        with pytest.raises(TypeError) as stdlib:
            pickle.dumps(f)
    assert f"TypeError {stdlib.value}" in proc.stdout, proc.stdout


@pytest.mark.timeout(60)
def test_a_closure_over_a_lock_reports_the_lock_not_local_object() -> None:
    import threading

    def make():  # type: ignore[no-untyped-def]
        lock = threading.Lock()

        def locked(x):  # type: ignore[no-untyped-def]
            with lock:
                return x

        return locked

    with shoal.Pool(2) as pool:
        with pytest.raises(TypeError, match=r"_thread\.lock"):
            pool.map(make(), range(3))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_remote_traceback_names_the_script_file_and_line(tmp_path: Path, method: str) -> None:
    proc = _script(
        tmp_path,
        """
        import sys
        from shoal import Pool

        def parse(s):
            value = int(s)
            return value

        if __name__ == "__main__":
            with Pool(2, start_method=sys.argv[1]) as pool:
                try:
                    pool.map(parse, ["1", "x"])
                except ValueError as exc:
                    print(exc.__cause__)
        """,
        method,
    )
    assert proc.returncode == 0, proc.stderr
    script = str(tmp_path / "script.py")
    assert f'File "{script}", line 6, in parse' in proc.stdout, proc.stdout
    assert "value = int(s)" in proc.stdout, proc.stdout
    assert "<dynamic-code>" not in proc.stdout


@pytest.mark.timeout(60)
def test_a_mutated_partial_or_callable_runs_with_its_new_state() -> None:
    with shoal.Pool(2) as pool:
        cfg = {"k": 2}
        part = functools.partial(scaled, cfg=cfg)
        assert pool.map(part, range(3)) == [0, 2, 4]
        cfg["k"] = 10
        assert pool.map(part, range(3)) == [0, 10, 20]
        assert [pool.apply_async(part, (1,)).get() for _ in range(2)] == [10, 10]

        m = Multiplier(3)
        assert pool.map(m, range(3)) == [0, 3, 6]
        m.k = 5
        assert pool.map(m, range(3)) == [0, 5, 10]
        assert pool.apply_async(m, (2,)).get() == 10
        bound = m.times
        assert pool.map(bound, [1]) == [5]
        m.k = 7
        assert pool.map(bound, [1]) == [7]


def test_the_default_start_method_sends_script_functions_by_reference_when_it_forks(tmp_path: Path) -> None:
    # The default is settled at the fork (fork for a single-threaded
    # parent): the functions the workers inherited travel by reference then.
    proc = _script(
        tmp_path,
        """
        import sys, threading
        from shoal import Pool

        LOCK = threading.Lock()

        class Point:
            def __init__(self, x):
                self.x = x

        def work(p):
            with LOCK:
                return Point(p.x + 1)

        if __name__ == "__main__":
            with Pool(2) as pool:
                out = pool.map(work, [Point(1), Point(2)])
                print(pool._start_method, [type(p) is Point for p in out], [p.x for p in out])
            print("cloudpickle used:", "cloudpickle" in sys.modules)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fork [True, True] [2, 3]" in proc.stdout, proc.stdout


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_an_instance_of_a_script_class_is_an_instance_of_it_in_the_worker(tmp_path: Path, method: str) -> None:
    # isinstance in the task holds under every start method, on every route
    # arguments take; under fork the class goes by reference (the workers
    # have it), as with multiprocessing. A class defined, or a name rebound,
    # after the pool forked goes by value, as the workers do not have it.
    proc = _script(
        tmp_path,
        """
        import sys
        from shoal import Pool, Executor, WorkerPool

        class Point:
            def __init__(self, x):
                self.x = x

        def check(p, q=None):
            return isinstance(p, Point) and type(p) is Point and (q is None or isinstance(q, Point))

        def name(p):
            return type(p).__name__

        if __name__ == "__main__":
            m = sys.argv[1]
            with Pool(2, start_method=m) as pool:
                got = [
                    *pool.map(check, [Point(i) for i in range(300)]),
                    *pool.imap(check, (Point(i) for i in range(3)), chunksize=1),
                    *pool.imap_unordered(check, [Point(i) for i in range(3)], chunksize=2),
                    *pool.starmap(check, [(Point(1), Point(2))]),
                    pool.apply(check, (Point(3),), {"q": Point(4)}),
                    pool.apply_async(check, (Point(5),)).get(30),
                ]
                class Late:
                    pass
                late = pool.apply(name, (Late(),))
            with Executor(2, start_method=m) as ex:
                got.append(ex.submit(check, Point(6)).result(30))
            with WorkerPool(2, start_method=m) as wp:
                got.extend(wp.map(check, [(Point(7),)]))
            print(all(got), len(got), late)
        """,
        method,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "311", "Late"]
