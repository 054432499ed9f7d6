"""Host setup against the test bed's real sshd, docker and image (no GPU on this machine).

What runs for real here: SSH (key exchange, host-key pinning, key auth, exec channels), the
probe on this machine, the docker step's script with sudo against the bed's dockerd, the
stage runner with its markers, and a reboot. The reboot is stood in for by a restarted sshd:
this machine cannot reboot, so a test step asks for a reboot, the runner hands over to a
reboot function that restarts the sshd listener (same config, same host key) and drops the
connection, and the runner then waits for SSH, reconnects and probes again exactly as after
a real reboot. The GPU steps themselves are covered by tests/test_host_scripts.py
(shellcheck) and tests/test_gpu_table.py (decisions); `--gpus` cannot work here.
"""

from __future__ import annotations

import importlib
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from orchestrate.core.api import hooks
from orchestrate.core.api.errors import HostError, HostKeyMismatch, StepFailed
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext, StepResult, collect_steps
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.host.probe import probe
from orchestrate.core.host.runner import ProgressEvent, Runner
from orchestrate.core.ssh.session import Session
from orchestrate.core.wiring.registry import HOST_PLUGINS
from orchestrate.plugins.host.shell import step_script

from tests.bed.sshd import Sshd, generate_client_key, start_sshd

pytestmark = pytest.mark.bed

TOKEN = "tok-7f3a9c-never-in-logs"


class Recorder:
    """A plugin that records the step hooks, as the CLI's progress plugin would use them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool | None]] = []

    @hooks.hookimpl
    def orchestrate_before_step(self, step: HostStep, context: StepContext) -> None:
        self.calls.append(("before", step.name, None))

    @hooks.hookimpl
    def orchestrate_after_step(
        self, step: HostStep, context: StepContext, result: StepResult
    ) -> None:
        self.calls.append(("after", step.name, result.ok))


#: The host plugins but the notebook container's: these tests set a host up without
#: starting Jupyter on it (the end-to-end tests do that, and shellcheck reads its script).
RUNNER_PLUGINS = tuple(m for m in HOST_PLUGINS if not m.endswith(".notebook"))


def manager(*extra: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hooks.PROJECT)
    pm.add_hookspecs(hooks)
    for name in RUNNER_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def connect(host: Any, pinned: str | None) -> Session:
    return Session.connect(
        host.address, host.port, host.user, host.key_path, pinned_host_key=pinned, deadline_s=20
    )


@pytest.fixture
def cpu_context(jupyter_image: str) -> StepContext:
    """A CPU notebook host whose image is already on the bed: docker and image are done."""
    return StepContext(instance="bed", gpu=None, notebook_image=jupyter_image, token=TOKEN)


def test_probe_returns_this_machines_facts(
    ssh_host: Any, docker_engine: Any, cpu_context: StepContext
) -> None:
    with connect(ssh_host, ssh_host.host_key) as session:
        facts = probe(session, cpu_context)
        assert session.commands == 1, "the probe is one command"
    assert facts.os.id == "debian" and facts.os.version == "12"
    assert facts.os.boot_id and facts.os.kernel
    assert facts.user.name == ssh_host.user and facts.user.privilege == "sudo"
    assert facts.docker.installed and facts.docker.running
    assert facts.docker.cgroup_driver == "cgroupfs"
    assert facts.image.present and facts.image.name == cpu_context.notebook_image
    assert not facts.has_nvidia_gpu and not facts.driver.smi_ok
    assert facts.driver.loaded is None and facts.toolkit_version is None


def test_probe_asks_jupyter_on_the_host_with_the_token_on_stdin(
    ssh_host: Any, docker_engine: Any, jupyter_image: str, tmp_path: Path
) -> None:
    """The probe's own check of Jupyter (what lets a warm launch skip the check through the
    tunnel): a real HTTP status from Jupyter on the host's loopback, with the context's
    token, which reaches the host on stdin and never on the command line."""
    import dataclasses

    from orchestrate.core.host.probe import probe_command, probe_script

    from tests.bed.docker_engine import docker
    from tests.bed.jupyter_image import run_notebook
    from tests.bed.sshd import free_port

    token = "probe-check-" + "ab12" * 8
    name = f"orch-probe-jupyter-{free_port()}"
    context = StepContext(
        instance="bed", gpu=None, notebook_image=jupyter_image, token=token,
        notebook_container=name, remote_port=free_port(),
    )  # fmt: skip
    assert token not in probe_command(probe_script(context, jupyter=True))
    host_dir = tmp_path / "nb"
    host_dir.mkdir()
    with connect(ssh_host, ssh_host.host_key) as session:
        assert probe(session, context, jupyter=True).jupyter_status is None, "no container"
        with run_notebook(
            jupyter_image, token=token, host_dir=host_dir, port=context.remote_port, name=name
        ) as notebook:
            notebook.wait_ready()
            facts = probe(session, context, jupyter=True)
            assert facts.container.state == "running"
            assert facts.jupyter_status == 200
            assert session.commands == 2, "the check is inside the probe's one command"
            wrong = dataclasses.replace(context, token="not-" + token)
            assert probe(session, wrong, jupyter=True).jupyter_status == 403
            assert probe(session, context).jupyter_status is None, "not asked"
            # Running but not answering: the probe waits for it a bounded time, then says so.
            docker("kill", "--signal", "STOP", notebook.container_id)
            try:
                started = time.monotonic()
                hung = probe(session, context, jupyter=True)
                assert hung.container.state == "running" and hung.jupyter_status is None
                assert time.monotonic() - started < 10
            finally:
                docker("kill", "--signal", "CONT", notebook.container_id, check=False)


def test_hook_before_step_and_after_step_wrap_the_docker_step_run_for_real(
    ssh_host: Any, docker_engine: Any, cpu_context: StepContext, tmp_path: Path
) -> None:
    recorder = Recorder()
    pm = manager(recorder)
    steps = collect_steps(pm.hook, cpu_context)
    assert [s.name for s in steps] == ["docker", "image"]
    with connect(ssh_host, ssh_host.host_key) as session:
        runner = Runner(session, cpu_context, steps, log_path=tmp_path / "bed.log", hook=pm.hook)
        report = runner.run()
        assert report.nothing_to_do and report.probes == 1 and session.commands == 1
        assert report.summary() == "host already set up: 1 probe, 0 steps applied"

        # The docker step is idempotent: run it anyway, for real, with sudo, on this host.
        docker_step = next(s for s in steps if s.name == "docker")
        outcome = runner.run_stage([docker_step], report.facts)
    (result,) = outcome.results
    assert result.ok and result.rc == 0
    text = "\n".join(result.output_tail)
    assert "docker already installed" in text and "docker is running" in text
    assert recorder.calls == [("before", "docker", None), ("after", "docker", True)]


class TwoAtOncePlugin:
    """Two steps with nothing between them and a third after both. "left" waits for a file
    only "right" writes, so run one after the other "left" would give up (its bound only
    turns a hang into a failure); with ``fail`` the third fails with its own last lines."""

    def __init__(self, scratch: Path, fail: bool = False) -> None:
        self.scratch = scratch
        self.fail = fail

    @hooks.hookimpl
    def orchestrate_host_steps(self, context: StepContext) -> list[HostStep]:
        flag = str(self.scratch / "right-ran")
        left = """
log "left waits for right"
for _ in $(seq 300); do [ -e "$FLAG" ] && break; sleep 0.1; done
[ -e "$FLAG" ] || die "right never ran"
log "left saw right"
"""
        right = 'log "right ran"\n: >"$FLAG"\n'
        last = 'log "last line of both"\n' + ("exit 4\n" if self.fail else "")

        def step(name: str, body: str, after: tuple[str, ...] = ()) -> HostStep:
            return HostStep(
                name=name, description=f"the {name} step", needed=lambda facts: True,
                script=lambda ctx, facts: step_script(body, {"FLAG": flag}), after=after,
            )  # fmt: skip

        return [step("left", left), step("right", right), step("both", last, ("left", "right"))]


@pytest.mark.parametrize("fail", [False, True])
def test_independent_steps_run_at_once_each_with_its_own_output_and_hooks(
    ssh_host: Any, cpu_context: StepContext, tmp_path: Path, fail: bool
) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="orchestrate-graph-"))
    scratch.chmod(0o777)
    recorder = Recorder()
    try:
        pm = pluggy.PluginManager(hooks.PROJECT)
        pm.add_hookspecs(hooks)
        pm.register(TwoAtOncePlugin(scratch, fail))
        pm.register(recorder)
        steps = collect_steps(pm.hook, cpu_context)
        with connect(ssh_host, ssh_host.host_key) as session:
            runner = Runner(session, cpu_context, steps, log_path=tmp_path / "g.log", hook=pm.hook)
            if fail:
                with pytest.raises(StepFailed) as failed:
                    runner.run()
                assert failed.value.step == "both"
                assert "last line of both" in str(failed.value)
                assert "right ran" not in str(failed.value)
                return
            report = runner.run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tails = {r.name: r.output_tail for r in report.applied}
    assert tails["left"] == ("left waits for right", "left saw right")
    assert tails["right"] == ("right ran",)
    assert tails["both"] == ("last line of both",)
    assert recorder.calls[:2] == [("before", "left", None), ("before", "right", None)]
    assert recorder.calls[-2:] == [("before", "both", None), ("after", "both", True)]
    assert report.stage_seconds > 0


def test_gpu_requested_on_a_host_without_one_is_a_clear_error(
    ssh_host: Any, docker_engine: Any, jupyter_image: str, tmp_path: Path
) -> None:
    context = StepContext(
        instance="bed-gpu", gpu=GpuRequest("nvidia-tesla-t4"), notebook_image=jupyter_image
    )
    recorder = Recorder()
    pm = manager(recorder)
    steps = collect_steps(pm.hook, context)
    log = tmp_path / "bed-gpu.log"
    with connect(ssh_host, ssh_host.host_key) as session:
        runner = Runner(session, context, steps, log_path=log, hook=pm.hook)
        with pytest.raises(HostError) as failure:
            runner.run()
    text = failure.value.line()
    assert "host step 'gpu-check' failed" in text
    assert "no NVIDIA GPU on this host, but the profile asks for nvidia-tesla-t4:1" in text
    assert str(log) in text and log.exists()
    assert isinstance(failure.value, StepFailed)
    assert (failure.value.step, failure.value.log_path) == ("gpu-check", log)
    # it stopped there: no driver, toolkit or verify step was started
    assert recorder.calls == [("before", "gpu-check", None), ("after", "gpu-check", False)]


# -- reboot, second run, host key change: a dedicated sshd the test may restart -----------


@pytest.fixture
def own_sshd(ssh_host: Any) -> Iterator[tuple[Sshd, Path]]:
    """An sshd of this test's own (the shared one must not be restarted), same login user."""
    workdir = Path(tempfile.mkdtemp(prefix="orchestrate-runner-sshd-"))
    workdir.chmod(0o755)
    key_path, public = generate_client_key(workdir / "client")
    server = start_sshd(workdir / "server", user=ssh_host.user, authorized_key=public)
    try:
        yield server, key_path
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class FakeDriverPlugin:
    """Contributes a driver-like step that needs a reboot, and a verify-like step after it.

    The "module" is a file: the step writes "installed" and asks for a reboot; the reboot
    stand-in turns it into "loaded", which the re-probe sees through the step's probe snippet.
    """

    def __init__(self, state: Path, marker: Path) -> None:
        self.state = state
        self.marker = marker

    @hooks.hookimpl
    def orchestrate_host_steps(self, context: StepContext) -> list[HostStep]:
        state, marker = str(self.state), str(self.marker)

        def driver_script(ctx: StepContext, facts: Facts) -> str:
            body = """
log "installing the fake module"
echo installed >"$STATE"
request_reboot "the fake module loads at the next boot"
"""
            return step_script(body, {"STATE": state})

        def verify_script(ctx: StepContext, facts: Facts) -> str:
            body = """
[ "$(cat "$STATE")" = loaded ] || die "module not loaded"
log "fake verify ok, token $TOKEN"
echo verified >"$MARKER"
"""
            return step_script(body, {"STATE": state, "MARKER": marker, "TOKEN": ctx.token})

        return [
            HostStep(
                name="fake-driver",
                description="a step that needs a reboot",
                needed=lambda facts: facts.extra.get("fake-driver", "").strip() != "loaded",
                script=driver_script,
                reboot_may_follow=True,
                probe=f"cat {state} 2>/dev/null || echo missing",
            ),
            HostStep(
                name="fake-verify",
                description="a check that runs after the fake driver changed",
                needed=lambda facts: False,
                script=verify_script,
                after=("fake-driver",),
                follows_changes=True,
            ),
        ]


def test_reboot_ends_the_stage_then_ssh_reprobe_and_the_second_run_applies_nothing(
    own_sshd: tuple[Sshd, Path], docker_engine: Any, cpu_context: StepContext, tmp_path: Path
) -> None:
    server, key_path = own_sshd
    scratch = Path(tempfile.mkdtemp(prefix="orchestrate-reboot-"))
    scratch.chmod(0o755)
    state, marker = scratch / "module", scratch / "verified"
    recorder = Recorder()
    pm = manager(FakeDriverPlugin(state, marker), recorder)
    steps = collect_steps(pm.hook, cpu_context)
    events: list[ProgressEvent] = []
    log = tmp_path / "reboot.log"
    pids = [server.pid]

    def reboot(session: Session) -> None:
        # The stand-in for a reboot (see the module docstring): sshd restarts, the
        # connection drops, and the "module" is loaded by the time SSH is back.
        session.close()
        server.restart()
        state.write_text("loaded\n")
        pids.append(server.pid)

    try:
        session = Session.connect(
            server.address, server.port, server.user, key_path, pinned_host_key=None
        )
        pinned = session.host_key
        with session:
            runner = Runner(
                session, cpu_context, steps, log_path=log, hook=pm.hook,
                on_event=events.append, reboot=reboot, ssh_deadline_s=30,
            )  # fmt: skip
            report = runner.run()
            assert session.connects == 2, "one reconnection, after the reboot"
            assert session.commands == 3, "probe, stage; then probe and stage in one exec"
        assert [r.name for r in report.applied] == ["fake-driver", "fake-verify"]
        assert all(r.ok for r in report.applied)
        assert report.reboots == 1 and report.probes == 2
        assert pids[0] != pids[1], "sshd really restarted (standing in for the reboot)"
        assert marker.read_text().strip() == "verified"
        kinds = [e.kind for e in events]
        assert kinds.index("reboot") < kinds.index("wait-ssh") < len(kinds) - 1
        assert [e.step for e in events if e.kind == "step-done"] == ["fake-driver", "fake-verify"]
        assert recorder.calls == [
            ("before", "fake-driver", None), ("after", "fake-driver", True),
            ("before", "fake-verify", None), ("after", "fake-verify", True),
        ]  # fmt: skip
        text = log.read_text()
        assert "fake verify ok, token [redacted]" in text and TOKEN not in text
        assert not any(TOKEN in e.message for e in events)

        # A second run on the set-up host: one probe, zero steps, and it says so.
        with Session.connect(
            server.address, server.port, server.user, key_path, pinned_host_key=pinned
        ) as again:
            second = Runner(again, cpu_context, steps, log_path=log, hook=pm.hook).run()
            assert again.commands == 1
        assert second.nothing_to_do and second.probes == 1 and second.reboots == 0
        assert second.summary() == "host already set up: 1 probe, 0 steps applied"

        # The host is rebuilt: a new sshd with a new host key on the same port.
        server.stop()
        rebuilt_dir = Path(tempfile.mkdtemp(prefix="orchestrate-rebuilt-", dir=scratch))
        rebuilt_dir.chmod(0o755)
        rebuilt = start_sshd(
            rebuilt_dir,
            user=server.user,
            authorized_key=Path(str(key_path) + ".pub").read_text(),
            port=server.port,
        )
        try:
            assert rebuilt.host_key_pub != pinned
            with pytest.raises(HostKeyMismatch) as refused:
                Session.connect(
                    rebuilt.address, rebuilt.port, server.user, key_path,
                    pinned_host_key=pinned, name="bed",
                )  # fmt: skip
            assert "run `orchestrate forget-host-key bed`" in refused.value.line()
            # sshd logs the end of the refused connection; by then it logged all of it
            _wait_for_log(rebuilt, r"Connection (closed|reset) by|Disconnected from")
            assert "Accepted publickey" not in rebuilt.log(), "refused before authenticating"
        finally:
            rebuilt.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for_log(server: Any, pattern: str, timeout: float = 15.0) -> None:
    """Until sshd's log has a line matching `pattern` (an event, not a pause); the bound
    only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, server.log()):
        assert time.monotonic() < deadline, f"sshd never logged {pattern!r}"
        time.sleep(0.05)


def test_first_contact_pins_and_a_wrong_pin_refuses(ssh_host: Any, tmp_path: Path) -> None:
    with connect(ssh_host, None) as session:
        assert session.host_key == ssh_host.host_key
        assert session.run("printf ok").stdout == "ok"
    with pytest.raises(HostError, match="closed"):
        session.run("true")  # a dropped connection is a HostError the caller can act on
    other, _ = generate_client_key(tmp_path, "other")
    wrong = Path(str(other) + ".pub").read_text().split()
    with pytest.raises(HostKeyMismatch, match=r"host key of .* changed"):
        connect(ssh_host, f"{wrong[0]} {wrong[1]}")
    with pytest.raises(HostKeyMismatch, match="no longer offers the pinned ssh-rsa"):
        connect(ssh_host, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7")


def test_ssh_wait_retries_until_the_deadline(tmp_path: Path, ssh_host: Any) -> None:
    """A host that is not up yet: connection refused is retried with backoff, then a clear
    error at the deadline."""
    from tests.bed.sshd import free_port

    waits: list[tuple[int, float, str]] = []
    tries: list[int] = []

    def counting(address: str, port: int, timeout: float) -> socket.socket:
        tries.append(port)
        return socket.create_connection((address, port), timeout=timeout)

    with pytest.raises(HostError, match="did not answer within 2 s"):
        Session.connect(
            "127.0.0.1", free_port(), ssh_host.user, ssh_host.key_path,
            pinned_host_key=None, deadline_s=2, on_wait=lambda *w: waits.append(w),
            socket_factory=counting,
        )  # fmt: skip
    assert len(waits) >= 2 and "ConnectionRefusedError" in waits[0][2]
    # Every retry was announced, in order, and each one began before the deadline; the try
    # after the last announcement was the last one: it stopped at the deadline.
    assert [w[0] for w in waits] == list(range(1, len(waits) + 1))
    assert all(elapsed < 2 for _, elapsed, _ in waits)
    assert len(tries) == len(waits) + 1


# -- speed: connect + probe + nothing to do over a 50 ms link --------------------------


def _connect_probe_plan(
    host: tuple[str, int, str, Path, str], context: StepContext, steps: list[HostStep],
    factory: Any = None,
) -> float:  # fmt: skip
    address, port, user, key, pinned = host
    started = time.monotonic()
    session = Session.connect(
        address, port, user, key, pinned_host_key=pinned, socket_factory=factory
    )
    runner = Runner(session, context, steps, log_path=Path(tempfile.gettempdir()) / "rt.log")
    report = runner.run()
    elapsed = time.monotonic() - started
    assert report.nothing_to_do and session.commands == 1 and session.connects == 1
    session.close()
    return elapsed


@pytest.mark.slow
def test_set_up_host_over_50ms_link_costs_one_command_and_one_connection(
    wan_ssh_host: Any, cpu_context: StepContext
) -> None:
    """connect + probe + nothing to do over the bed's 50 ms link: one connection, one SSH
    command, zero steps. This counts requests, which is deterministic; how many round trips
    that costs in wall time is a benchmark (bench/, B2), never a timed test."""
    steps = collect_steps(manager().hook, cpu_context)
    far = (wan_ssh_host.address, wan_ssh_host.port, wan_ssh_host.user, wan_ssh_host.key_path,
           wan_ssh_host.host_key_pub)  # fmt: skip

    def factory(address: str, port: int, timeout: float) -> Any:
        return wan_ssh_host.link.connect_near(port, timeout=timeout)

    # The helper asserts nothing_to_do, commands == 1 and connects == 1.
    _connect_probe_plan(far, cpu_context, steps, factory)
