"""The tunnel process's heap care (core/ssh/heap.py) on this machine's real C library."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest
from orchestrate.core.ssh import heap

GLIBC = ctypes.util.find_library("c") is not None and sys.platform.startswith("linux")


@pytest.mark.skipif(not GLIBC, reason="arenas and malloc_trim are glibc's")
def test_cap_arenas_is_taken_by_glibc_in_a_fresh_process() -> None:
    # A child process: the cap is process-wide and must not change the test runner's heap.
    code = "from orchestrate.core.ssh import heap; print(heap.cap_arenas())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_idle_trim_waits_for_quiet_and_new_traffic() -> None:
    trims = heap.IdleTrim(every_s=0.0)
    assert not trims.tick(active=0, moved=0)  # nothing moved yet: nothing to give back
    assert not trims.tick(active=2, moved=500)  # connections open: a trim would be undone
    assert trims.tick(active=0, moved=500)  # quiet after traffic
    assert not trims.tick(active=0, moved=500)  # nothing new since
    assert trims.tick(active=0, moved=900)
    assert trims.trims == 2


def test_idle_trim_is_rate_limited() -> None:
    trims = heap.IdleTrim(every_s=3600.0)
    assert trims.tick(active=0, moved=1)
    assert not trims.tick(active=0, moved=2)  # within the interval: the next quiet tick does it
