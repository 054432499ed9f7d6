"""Ending a child process: SIGTERM, then SIGKILL after the grace period, always reaped."""

from __future__ import annotations

import signal
import subprocess
import sys

from orchestrate.core.flows.processes import end_child

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)
POLITE = "import time; print('up', flush=True); time.sleep(60)"


def _started(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def test_a_child_that_heeds_sigterm_ends_by_it() -> None:
    proc = _started(POLITE)
    end_child(proc, grace_s=10)
    assert proc.returncode == -signal.SIGTERM
    assert proc.stdout is not None and proc.stdout.closed


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _started(STUBBORN)
    end_child(proc, grace_s=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_an_ended_child_is_left_alone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    end_child(proc)
    assert proc.returncode == 0
