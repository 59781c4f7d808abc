"""Running a test's script in a fresh interpreter: a process whose threads,
start method and ``__main__`` are the script's, not the test run's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_script(tmp_path: Path, text: str, *args: str) -> str:
    """Run ``text`` as a script in ``tmp_path``, with ``args``; assert that
    it succeeded and return what it printed."""
    script = tmp_path / "script.py"
    script.write_text(text)
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=100, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
