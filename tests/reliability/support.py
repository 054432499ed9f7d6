"""Helpers for the reliability tests: a launched bed, a launch in a subprocess that the test
can kill, the state database read directly, a test plugin whose host step sleeps, and the
sshd processes serving one client connection.

Everything here acts on processes and files the tests started or made themselves.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.support.e2e import Bed

URL = re.compile(r"^http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)$", re.M)

#: Name of the test plugin's host step and of the distribution that carries it.
SLOW_STEP = "slow-step"


def wait_for(
    what: str, check: Callable[[], Any], *, timeout: float = 60, every: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def orchestrate(bed: Bed, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`orchestrate ARGS` as a user runs it, started in the background so the test can kill
    it or run others beside it."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrate.core.app.cli", *args],
        cwd=bed.work,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def launch_args(name: str = "nb") -> list[str]:
    return ["launch", name, "--profile", "e2e", "--detach", "--no-browser"]


def http_status(port: int, path: str, *, timeout: float = 10) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def notebook_answers(stdout: str) -> tuple[int, str]:
    """The (port, token) of the URL a launch printed, after checking Jupyter answers there
    with the token and refuses without it."""
    found = URL.search(stdout)
    assert found, f"no notebook URL in:\n{stdout}"
    port, token = int(found.group(1)), found.group(2)
    assert http_status(port, f"/api/status?token={token}") == 200
    assert http_status(port, "/api/status") == 403
    return port, token


def inserts(bed: Bed) -> int:
    """How many instance inserts the fake cloud received (not stop/start/setLabels)."""
    return len([r for r in bed.gce.calls("POST", "/instances") if r.path.endswith("/instances")])


def status_json(bed: Bed, *args: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(bed.cli("status", *args, "--json").stdout)
    return data


def db_rows(bed: Bed, table: str = "instances") -> list[dict[str, Any]]:
    """Rows of the state database, read with SQLite itself rather than through orchestrate."""
    path = bed.home / "state" / "state.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table}")]
    finally:
        db.close()


def assert_all_gone(bed: Bed) -> None:
    """What `down` must leave: no instance in the fake cloud, no row in state, no tunnel."""
    assert bed.gce.instances == {}, bed.gce.instances
    assert db_rows(bed) == []
    assert tunnel_processes(bed) == []


def tunnel_processes(bed: Bed) -> list[int]:
    """PIDs of background tunnels that belong to this bed (their environment names its
    ORCHESTRATE_HOME), so other tests' and other people's processes are never touched."""
    found = []
    for pid, cmdline in command_lines():
        if b"orchestrate.core.flows.background" not in cmdline:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ORCHESTRATE_HOME={bed.home}".encode() in environ:
            found.append(pid)
    return sorted(found)


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process on this machine, skipping those that end meanwhile."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue


def kill_tunnels(bed: Bed) -> None:
    """End background tunnels this bed left (after a failed test), by PID."""
    for pid in tunnel_processes(bed):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def in_process_plan(bed: Bed, name: str = "nb", profile: str = "e2e") -> Any:
    """The product's own launch plan for `name`, built in this process (the test runs in
    the bed's working directory with its ORCHESTRATE_HOME), for setting a scene up through
    the real provider without a whole launch."""
    from orchestrate.core.flows.launch import make_plan
    from orchestrate.core.wiring.registry import build_manager
    from orchestrate.core.wiring.runtime import Runtime

    assert Path.cwd() == bed.work
    runtime = Runtime(pm=build_manager())
    return runtime, make_plan(runtime, name, runtime.profile(profile), {}, token=None)


def precreate_firewall(bed: Bed) -> None:
    """Create the shared SSH rule as an earlier launch would have, so that a test which slows
    the cloud's operations down slows only the instance's."""
    from orchestrate.plugins.providers.gcp.firewall import ensure_firewall

    runtime, plan = in_process_plan(bed)
    try:
        _, api = plan.provider.connect(plan.options)
        ensure_firewall(api, plan.options.network, timeout_s=30)
    finally:
        runtime.close()


# -- a host step that takes its time ------------------------------------------------------

_SLOW_PLUGIN = '''
"""Test plugin: one host step that marks its start, sleeps, and marks its end."""

import os
import shlex

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import HostStep

NAME = "{name}"


def _needed(facts):
    return facts.extra.get(NAME, "").strip() != "done"


def _script(context, facts):
    folder = shlex.quote(os.environ["ORCH_TEST_SLOW_DIR"])
    seconds = float(os.environ.get("ORCH_TEST_SLOW_SECONDS", "4"))
    # The echo before the last touch writes to the SSH channel: when the connection was cut
    # meanwhile it dies of SIGPIPE there, so a cut step never marks itself done.
    return f"""set -euo pipefail
touch {{folder}}/started.$$
echo "slow step sleeps {{seconds}} s"
sleep {{seconds}}
echo "slow step woke up"
touch {{folder}}/done
"""


@hookimpl
def orchestrate_host_steps(context):
    folder = os.environ.get("ORCH_TEST_SLOW_DIR")
    if not folder:
        return []
    probe = f"[ -e {{shlex.quote(folder)}}/done ] && echo done || true"
    return [
        HostStep(
            name=NAME,
            description="a test step that sleeps",
            needed=_needed,
            script=_script,
            probe=probe,
            stage=10,
        )
    ]
'''


class SlowStep:
    """The slow step's marker folder on the host (this machine): readable by the login user,
    since the probe runs as that user."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def starts(self) -> int:
        return len(list(self.folder.glob("started.*")))

    @property
    def done(self) -> bool:
        return (self.folder / "done").exists()


@contextmanager
def slow_step_plugin(
    monkeypatch: Any, plugin_root: Path, *, seconds: float = 4
) -> Iterator[SlowStep]:
    """Install the slow-step plugin for every orchestrate process the test starts.

    The plugin is a module plus a dist-info folder on PYTHONPATH, found through the real
    entry-point discovery (the way tests/support/toy_plugin.py fakes an installed plugin).
    """
    plugin_root.mkdir(parents=True, exist_ok=True)
    (plugin_root / "orch_slow_step.py").write_text(
        textwrap.dedent(_SLOW_PLUGIN.format(name=SLOW_STEP)), encoding="utf-8"
    )
    info = plugin_root / "orchestrate_slow_step-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: orchestrate-slow-step\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[orchestrate]\nslow_step = orch_slow_step\n", encoding="utf-8"
    )
    folder = Path(tempfile.mkdtemp(prefix="orch-slow-step-"))
    folder.chmod(0o755)
    paths = [str(plugin_root), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("ORCH_TEST_SLOW_DIR", str(folder))
    monkeypatch.setenv("ORCH_TEST_SLOW_SECONDS", str(seconds))
    try:
        yield SlowStep(folder)
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


# -- which sshd serves a connection -------------------------------------------------------

_SS_LINE = re.compile(r"\S+\s+\S+\s+(\S+):(\d+)\s+(\S+):(\d+)\s+(.*)$")


def _connections() -> list[tuple[int, int, list[int]]]:
    """(local port, peer port, owning pids) of every established loopback TCP socket."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    found = []
    for line in out.splitlines():
        # with a state filter ss leaves the State column out: Recv-Q Send-Q Local Peer Process
        match = _SS_LINE.match(line.strip())
        if not match:
            continue
        pids = [int(p) for p in re.findall(r"pid=(\d+)", match.group(5))]
        found.append((int(match.group(2)), int(match.group(4)), pids))
    return found


def sshd_serving(client_pid: int, sshd_port: int) -> list[int]:
    """PIDs of the sshd processes at the far end of `client_pid`'s connections to the bed's
    sshd: the per-connection children, never the listener."""
    connections = _connections()
    client_ports = {
        local for local, peer, pids in connections if peer == sshd_port and client_pid in pids
    }
    return sorted(
        {
            pid
            for local, peer, pids in connections
            if local == sshd_port and peer in client_ports
            for pid in pids
        }
    )
