"""A node bed's setup commands, and finding and ending what runs in its namespaces.

Shared by the bed's parts (``tests/bed/nodes.py`` and the modules it is built from): a
failed setup command raises with its whole output, and tear-down ends processes by the
namespace they run in, never by name (other sessions run the same programs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: The environment of what the bed starts in a node: nothing of the caller's (a DOCKER_HOST
#: there would point ``docker`` elsewhere), as a session over SSH gets nothing of the laptop's.
NODE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class NodeBedError(RuntimeError):
    """A bed node could not be built, or part of it died."""


def run_setup(argv: Sequence[str], *, timeout: float = 30, input: str | None = None) -> str:
    """Run a setup command; raise with its full output on failure."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input
    )
    if proc.returncode != 0:
        raise NodeBedError(
            f"{' '.join(argv)} failed with exit status {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def netns_pids(ns: str) -> list[int]:
    """Processes in a network namespace this bed created."""
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is ``pid`` or one of its parents (by /proc's parent links)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def kill_netns_processes(ns: str) -> None:
    """SIGKILL what is still running in a namespace this bed created (SSH sessions, agents)."""
    for pid in netns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
