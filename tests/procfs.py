"""What /proc says about this process, for tests that check nothing leaks."""

from __future__ import annotations

import os


def shm_held() -> set[str]:
    """The files under /dev/shm (POSIX shared memory, named semaphores) this
    process maps or holds open. Not the directory's listing: it is the
    machine's, and other programs' entries come and go (multiprocessing's
    semaphores under spawn stay there while they live, unnamed by pid)."""
    held = set()
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                held.add(fields[5].strip())
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/dev/shm/"):
            held.add(target)
    return held
