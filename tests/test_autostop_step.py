"""The ``autostop`` host step: when it runs, what its scripts do, and for real over SSH.

The real part installs the agent on the test bed host the way a launch does: the step's
script in a stage (core's `stage_script`) sent to ``sudo -n bash`` over SSH as the cloud-style
login user; the host probe (core's, with the step's snippet) read back over SSH; and the
loop-mode agent (this machine has no systemd) still running, and powering "off", after the
SSH session that started it has closed. Every host path is put under a temporary root
(``autostop_root``) so nothing lands in this machine's /etc or /usr/local, and the power-off
command writes a marker file (powering the test machine off is the one thing a test cannot
do). The systemd branch cannot run here (no PID-1 systemd); its units are checked as text and
the whole script by shellcheck.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from orchestrate.core.api.hoststeps import Facts, StepContext, collect_steps, plan
from orchestrate.core.host.probe import parse_facts, probe_command, probe_script
from orchestrate.core.host.runner import stage_command, stage_script
from orchestrate.core.wiring.registry import BUILTIN_PLUGINS, build_manager
from orchestrate.plugins.host.autostop import agent, report
from orchestrate.plugins.host.autostop.step import (
    NAME,
    HostPaths,
    autostop_step,
    config_hash,
    host_autostop,
    parse_probe,
    probe_snippet,
    window_seconds,
)

from tests.bed.fixtures_host import SshHost

if TYPE_CHECKING:
    import paramiko


def context(autostop: str | None = "60m", **extra: object) -> StepContext:
    return StepContext(
        instance="box",
        gpu=None,
        notebook_image="jupyter/base-notebook",
        token="s3cret-token-123",
        autostop=autostop,
        extra=dict(extra),
    )


def facts_with(snippet_output: str) -> Facts:
    return Facts(extra={NAME: snippet_output})


def installed_output(
    ctx: StepContext, *, running: str = "timer", state: str = "armed", idle: float = 0.0
) -> str:
    """What the probe snippet prints for an installed agent, idle for `idle` seconds."""
    now = 1_000_000
    return (
        f"config={config_hash(ctx, window_seconds(ctx) or 0.0)}\n"
        f"version={agent.AGENT_VERSION}\npython3=yes\nrunning={running}\n"
        f"state={json.dumps({'state': state, 'idle_since': now - idle})}\nnow={now}\n"
    )


PLUGINS = (
    "orchestrate.plugins.host.docker",
    "orchestrate.plugins.host.notebook",
    "orchestrate.plugins.host.autostop",
)


def test_the_step_is_a_builtin_plugin_armed_before_anything_else() -> None:
    """First, so a setup that fails later (a driver, an image pull) leaves a host that
    stops itself."""
    assert "orchestrate.plugins.host.autostop" in BUILTIN_PLUGINS
    steps = collect_steps(build_manager(PLUGINS).hook, context())
    assert [s.name for s in steps] == [NAME, "docker", "notebook"]


def test_no_autostop_value_contributes_nothing() -> None:
    steps = collect_steps(build_manager(PLUGINS).hook, context(None))
    assert NAME not in [s.name for s in steps]


def test_needed_when_missing_outdated_reconfigured_stopped_or_idle() -> None:
    ctx = context()
    step = autostop_step(ctx)
    assert step.needed(Facts())  # nothing probed: install
    assert step.needed(facts_with("python3=yes\nrunning=no\n"))
    assert not step.needed(facts_with(installed_output(ctx)))
    assert not step.needed(facts_with(installed_output(ctx, state="active")))
    assert step.needed(facts_with(installed_output(ctx).replace(agent.AGENT_VERSION, "0.9")))
    assert step.needed(facts_with(installed_output(context("30m"))))  # another window
    assert step.needed(facts_with(installed_output(ctx, running="no")))
    # launch re-arms a host idle for more than half its window, or powered off by autostop
    assert step.needed(facts_with(installed_output(ctx, state="idle", idle=1801)))
    assert step.needed(facts_with(installed_output(ctx, state="poweroff")))
    # a relaunch soon after the last one: nothing to do
    assert not step.needed(facts_with(installed_output(ctx, state="idle", idle=120)))


def test_the_config_hash_follows_token_port_window_and_power_off_command() -> None:
    base = config_hash(context(), 3600.0)
    assert config_hash(context(), 3600.0) == base
    assert config_hash(context(), 1800.0) != base
    other_token = StepContext(
        instance="box", gpu=None, notebook_image="x", token="another", autostop="60m"
    )
    assert config_hash(other_token, 3600.0) != base
    assert config_hash(context(autostop_poweroff_command="true"), 3600.0) != base
    assert "s3cret" not in base


def test_scripts_install_rearm_or_remove() -> None:
    ctx = context()
    step = autostop_step(ctx)
    install = step.script(ctx, Facts())
    assert "--loop --pid-file" in install and "orchestrate-autostop.timer" in install
    assert "def decide(" in install  # the agent's source travels in the script
    assert '"token": "s3cret-token-123"' in install  # in the 0600 config (runner redacts logs)
    rearm = step.script(ctx, facts_with(installed_output(ctx, state="idle", idle=3000)))
    assert "--rearm" in rearm and "def decide(" not in rearm
    off = context("off")
    off_step = autostop_step(off)
    assert off_step.needed(facts_with(installed_output(ctx)))
    assert not off_step.needed(facts_with("python3=yes\nrunning=no\n"))
    assert not off_step.needed(Facts())
    assert off_step.needed(facts_with("version=1.0.0\n"))  # an agent is there: remove it
    remove = off_step.script(off, facts_with(installed_output(ctx)))
    assert "systemctl disable --now orchestrate-autostop.timer" in remove
    assert off_step.warnings is not None
    assert "autostop is off" in off_step.warnings(Facts())[0]


def test_systemd_units_run_the_agent_every_minute() -> None:
    install = autostop_step(context()).script(context(), Facts())
    assert "OnUnitActiveSec=1min" in install and "OnBootSec=1min" in install
    assert (
        'ExecStart=$(unit_word "$python") $(unit_word "$agent") --config $(unit_word "$config")'
        " --once" in install
    )
    assert "WantedBy=timers.target" in install


def test_warns_when_the_host_has_no_python3() -> None:
    step = autostop_step(context())
    assert step.warnings is not None
    assert step.warnings(facts_with("python3=no\nrunning=no\n"))
    assert not step.warnings(facts_with("python3=yes\nrunning=no\n"))


def test_scripts_pass_shellcheck(tmp_path: Path) -> None:
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.fail("shellcheck is not installed (Debian: apt-get install shellcheck)")
    ctx = context()
    step = autostop_step(ctx)
    scripts = {
        "install.bash": step.script(ctx, Facts()),
        "rearm.bash": step.script(ctx, facts_with(installed_output(ctx, state="idle", idle=3000))),
        "remove.bash": autostop_step(context("off")).script(context("off"), Facts()),
        "probe.sh": probe_script(ctx, [step]),
        "snippet.sh": probe_snippet(HostPaths()),
    }
    paths = []
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        paths.append(path)
    for path in paths:
        shell = "sh" if path.suffix == ".sh" else "bash"
        proc = subprocess.run(
            [binary, "--shell", shell, "--severity", "style", "--format", "gcc", str(path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, f"{path.name}:\n{proc.stdout}{proc.stderr}"


# -- status helpers ----------------------------------------------------------------------


def test_status_warnings() -> None:
    now = 10_000.0
    running = parse_probe(
        "version=1.0.0\nconfig=x\nrunning=timer\nstate="
        + json.dumps({"state": "idle", "idle_since": now - 600, "last_check": now - 30,
                      "window_seconds": 3600, "interval_seconds": 60})
    )  # fmt: skip
    assert report.warnings(running, "60m", now) == []
    assert report.activity_line(running, now) == "autostop: idle for 10 min of 60 min"
    assert "without autostop" in report.warnings(running, "off", now)[0]
    assert "not running" in report.warnings(report.parse_status(""), "60m", now)[0]
    past = parse_probe(
        "version=1.0.0\nconfig=x\nrunning=timer\nstate="
        + json.dumps({"state": "idle", "idle_since": now - 4000, "last_check": now - 30,
                      "window_seconds": 3600, "interval_seconds": 60,
                      "jupyter_error": "HTTP 403 from /api/kernels (wrong token?)"})
    )  # fmt: skip
    found = report.warnings(past, "60m", now)
    assert any("past its 60 min autostop window" in w for w in found)
    assert any("cannot read Jupyter's kernels" in w for w in found)
    stale = parse_probe(
        "running=timer\nversion=1.0.0\nstate=" + json.dumps({"last_check": now - 900})
    )
    assert "has not checked for 15 min" in report.warnings(stale, "60m", now)[0]


def test_stop_lines() -> None:
    last = {
        "message": "stopped by autostop after 60 min idle",
        "time": "2025-01-15T12:00:00Z",
        "reason": "no connection to port 8888; 0 kernel(s); nobody logged in",
    }
    seen = parse_probe("running=no\nlast=" + json.dumps(last))
    assert report.last_stop_line(seen) == (
        "stopped by autostop after 60 min idle (2025-01-15T12:00:00Z; no connection to port "
        "8888; 0 kernel(s); nobody logged in)"
    )
    assert report.inferred_stop_line("60m") == "stopped by autostop after 60 min idle"
    assert report.inferred_stop_line("2h") == "stopped by autostop after 120 min idle"
    assert report.inferred_stop_line("off") is None


# -- for real over SSH -------------------------------------------------------------------


@pytest.fixture
def host_root() -> Iterator[Path]:
    """A root for the agent's host paths that the login user can traverse (the probe reads
    the state files as that user, as on a cloud host)."""
    root = Path(tempfile.mkdtemp(prefix="orchestrate-autostop-root-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        pid_file = Path(HostPaths(str(root)).pid_file)
        if pid_file.exists():  # the remove script failed: end the loop we started, by PID
            pid = int(pid_file.read_text().strip() or 0)
            cmdline = Path(f"/proc/{pid}/cmdline")
            if pid and cmdline.exists() and str(root).encode() in cmdline.read_bytes():
                os.kill(pid, 15)
        shutil.rmtree(root, ignore_errors=True)


def _connect(ssh_host: SshHost) -> paramiko.SSHClient:
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the bed's own sshd
    client.connect(
        ssh_host.address, port=ssh_host.port, username=ssh_host.user,
        key_filename=str(ssh_host.key_path), allow_agent=False, look_for_keys=False,
    )  # fmt: skip
    return client


def _run(client: paramiko.SSHClient, command: str, stdin: str = "") -> tuple[int, str]:
    channel_in, channel_out, channel_err = client.exec_command(command, timeout=120)
    if stdin:
        channel_in.write(stdin)
    channel_in.channel.shutdown_write()
    out = channel_out.read().decode()
    err = channel_err.read().decode()
    return channel_out.channel.recv_exit_status(), out + err


def _setup(ssh_host: SshHost, ctx: StepContext) -> Facts:
    """One probe and, when needed, one stage with the step: what the runner does."""
    step = autostop_step(ctx)
    client = _connect(ssh_host)
    try:
        _, out = _run(client, probe_command(probe_script(ctx, [step])))
        facts = parse_facts(out)
        assert facts.user.privilege == "sudo"
        todo = plan([step], facts)
        if todo:
            stage = stage_script([(s.name, s.script(ctx, facts)) for s in todo])
            rc, out = _run(client, stage_command(facts), stage)
            assert rc == 0, out
            assert "autostop " in out
        return facts
    finally:
        client.close()


def _probe(ssh_host: SshHost, ctx: StepContext) -> Facts:
    client = _connect(ssh_host)
    try:
        _, out = _run(client, probe_command(probe_script(ctx, [autostop_step(ctx)])))
        return parse_facts(out)
    finally:
        client.close()


@pytest.mark.bed
def test_install_over_ssh_runs_detached_and_powers_off_then_off_removes_it(
    ssh_host: SshHost, host_root: Path
) -> None:
    marker = host_root / "POWERED-OFF"
    extra = {
        "autostop_root": str(host_root),
        "autostop_poweroff_command": f"touch {marker}",
        "autostop_interval": 0.25,
    }
    ctx = StepContext(
        instance="bed", gpu=None, notebook_image="none", token="tok-123", autostop="3s",
        remote_port=_free_port(), extra=extra,
    )  # fmt: skip
    paths = HostPaths(str(host_root))
    _setup(ssh_host, ctx)
    # the SSH session is closed: the loop still runs, started by root through sudo
    facts = _probe(ssh_host, ctx)
    seen = host_autostop(facts)
    assert seen.running == "loop" and seen.version == agent.AGENT_VERSION
    assert seen.config == config_hash(ctx, 3.0)
    assert not autostop_step(ctx).needed(facts)  # just armed: a relaunch has nothing to do
    config = Path(paths.config)
    assert oct(config.stat().st_mode & 0o777) == "0o600" and config.stat().st_uid == 0
    assert json.loads(config.read_text())["token"] == "tok-123"
    # no connection, no Jupyter, nobody logged in: "powered off" a window later
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, Path(paths.log_file).read_text()
        time.sleep(0.1)
    last = host_autostop(_probe(ssh_host, ctx)).last_stop
    assert last["message"] == "stopped by autostop after 3 s idle"
    # the agent's own record, not the test's clock: a whole window idle before the stop
    assert float(last["idle_seconds"]) >= 3.0, last
    # relaunch: the agent is current and running; the host was idle (and "powered off"),
    # so it is re-armed
    deadline = time.monotonic() + 10
    while not host_autostop(_probe(ssh_host, ctx)).needs_rearm(3.0):
        assert time.monotonic() < deadline, "the idle host never needed re-arming"
        time.sleep(0.2)
    _setup(ssh_host, ctx)
    state = host_autostop(_probe(ssh_host, ctx)).state
    assert state.get("armed_at") is not None
    # autostop = "off": the loop ends and the agent is gone
    pid = int(Path(paths.pid_file).read_text())
    off = StepContext(
        instance="bed", gpu=None, notebook_image="none", token="tok-123", autostop="off",
        extra=extra,
    )  # fmt: skip
    _setup(ssh_host, off)
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"autostop" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    assert not Path(paths.agent).exists() and not config.exists()
    assert not autostop_step(off).needed(_probe(ssh_host, off))
    assert Path(paths.log_file).exists()  # the history stays


@pytest.mark.bed
def test_a_setup_that_fails_later_leaves_the_agent_armed(
    ssh_host: SshHost, host_root: Path
) -> None:
    """The autostop step runs first in the stage: a step after it that fails (a driver, an
    image pull) still leaves an agent that will power the host off."""
    from orchestrate.core.api.hoststeps import HostStep, order_steps

    extra = {
        "autostop_root": str(host_root),
        "autostop_poweroff_command": f"touch {host_root / 'POWERED-OFF'}",
        "autostop_interval": 0.25,
    }
    ctx = StepContext(
        instance="bed", gpu=None, notebook_image="none", token="tok-123", autostop="60m",
        remote_port=_free_port(), extra=extra,
    )  # fmt: skip
    broken = HostStep(
        name="broken", description="a step that fails", needed=lambda facts: True,
        script=lambda c, f: "echo pulling; exit 3", stage=0,
    )  # fmt: skip
    steps = order_steps([broken, autostop_step(ctx)])
    assert [s.name for s in steps] == [NAME, "broken"]
    client = _connect(ssh_host)
    try:
        _, out = _run(client, probe_command(probe_script(ctx, steps)))
        facts = parse_facts(out)
        stage = stage_script([(s.name, s.script(ctx, facts)) for s in plan(steps, facts)])
        rc, out = _run(client, stage_command(facts), stage)
    finally:
        client.close()
    assert rc != 0 and "pulling" in out, out
    try:
        seen = host_autostop(_probe(ssh_host, ctx))
        assert seen.running == "loop" and seen.config == config_hash(ctx, 3600.0)
    finally:
        off = StepContext(
            instance="bed", gpu=None, notebook_image="none", token="tok-123", autostop="off",
            extra=extra,
        )  # fmt: skip
        _setup(ssh_host, off)


def test_status_command_reads_the_files_without_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    paths = HostPaths(str(root))
    Path(paths.state_dir).mkdir(parents=True)
    Path(paths.state(agent.STATE_FILE)).write_text(json.dumps({"state": "active"}, indent=1))
    Path(paths.state(agent.VERSION_FILE)).write_text("1.0.0\n")
    out = subprocess.run(
        report.status_command(paths), shell=True, capture_output=True, text=True, check=True
    ).stdout
    seen = report.parse_status(out)
    assert seen.version == "1.0.0" and seen.state == {"state": "active"}
    assert seen.running is None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
