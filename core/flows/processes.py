"""Ending a child process orchestrate started: by its own handle (so by PID), never by name.

SIGTERM first so it can clean up (a background tunnel clears its state row), SIGKILL
after a grace period, then reaped so no zombie is left; its stdout pipe is closed.
"""

from __future__ import annotations

import subprocess
from typing import Any


def end_child(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """End `proc` if it still runs, and release its pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()
