"""`python -m tests.bed.parts`: the bed's parts one at a time, as a plugin author starts
them (CONTRIBUTING, "Testing a real launch"). The VM is logged into with the real OpenSSH
client, the key and the pinned host key it printed, and stopped by its PID; the engine and
the image report what they found. `engine down` is run against a cache where the bed started
no dockerd, so the shared engine everyone on this machine uses is never stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bed.docker_engine import DOCKER_HOST, engine_answers

pytestmark = [pytest.mark.bed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def parts(cache: Path, *args: str) -> Any:
    env = {**os.environ, "ORCHESTRATE_BED_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-m", "tests.bed.parts", "--json", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def test_vm_up_prints_a_login_and_down_stops_it_by_its_pid(tmp_path: Path) -> None:
    vm = parts(tmp_path, "vm", "up")
    try:
        known = tmp_path / "known_hosts"
        known.write_text(f"[{vm['address']}]:{vm['port']} {vm['host_key']}\n", encoding="utf-8")
        login = subprocess.run(
            ["ssh", "-i", vm["key"], "-p", str(vm["port"]), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
             f"{vm['user']}@{vm['address']}", "id -un"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == vm["user"]
    finally:
        down = parts(tmp_path, "vm", "down", vm["dir"])
    assert down == {"pid": vm["pid"], "stopped": True, "removed": vm["dir"]}
    assert not answers(vm["address"], vm["port"]) and not Path(vm["dir"]).exists()


def test_engine_and_image_say_what_they_found(
    tmp_path: Path, docker_engine: Any, jupyter_image: str
) -> None:
    engine = parts(tmp_path, "engine", "up")
    assert engine["socket"] == DOCKER_HOST and engine["started_now"] is False
    assert parts(tmp_path, "image")["tag"] == jupyter_image
    down = parts(tmp_path, "engine", "down")
    assert down == {"stopped": False, "why": "no dockerd started by the bed runs"}
    assert engine_answers()
