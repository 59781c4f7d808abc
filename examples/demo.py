"""What shoal does, in one short run: `make demo`."""

import os
import signal
import sys
import time

import shoal


def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def numbers(n: int):
    """A generator: shoal reads it only as workers need more input."""
    yield from range(n)


def parse(text: str) -> int:
    return int(text)


def crash(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-task
    return x


def bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def main() -> None:
    with shoal.Pool(2) as pool:
        print("1. imap over a generator: results stream in, in order, as they finish")
        total = 40
        for done, value in enumerate(pool.imap(slow_square, numbers(total)), 1):
            sys.stdout.write(f"\r   {bar(done, total)}  last result {value:4d}")
            sys.stdout.flush()
        print()

        print("\n2. a lambda over a captured variable (multiprocessing.Pool refuses this)")
        k = 7
        print("  ", pool.map(lambda x: x * k, range(8)))

        print("\n3. an exception in a worker arrives with the worker's traceback")
        try:
            pool.map(parse, ["1", "2", "three"])
        except ValueError as exc:
            print(f"   {type(exc).__name__}: {exc}")
            print("   remote traceback:")
            for line in str(exc.__cause__).strip().strip('"').strip().splitlines():
                print("     " + line)

        print("\n4. a worker killed mid-task (SIGKILL) fails only its task; nothing hangs")
        t0 = time.monotonic()
        it = pool.imap(crash, range(6))
        for i in range(6):
            try:
                print(f"   item {i}: {next(it)}")
            except shoal.WorkerLostError as exc:
                print(f"   item {i}: WorkerLostError after {time.monotonic() - t0:.2f} s: {exc}")
        print(f"   the pool replaced the worker and goes on: {pool.map(abs, [-1, -2, -3])}")


if __name__ == "__main__":
    main()
