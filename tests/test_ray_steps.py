"""The Ray plugin's decisions without a host: which steps a node gets, what its scripts
hold (shellcheck-clean, no secret, every port pinned), when a relaunch has nothing to do,
and how ``status`` reads Ray's report."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrate.core.api.hoststeps import ClusterContext, Facts, StepContext
from orchestrate.core.host.probe import probe_script
from orchestrate.plugins.host.ray import layout, status
from orchestrate.plugins.host.ray.step import (
    IMAGES_THAT_WORK,
    MIN_RAY,
    RAY_CHECK,
    config_hash,
    ray_start_args,
    wanted_label,
)

from tests.test_autostop_cluster import RAY_STATUS_BUSY
from tests.test_host_scripts import all_steps, shellcheck
from tests.test_hoststeps import gpu_context, ready_facts

HEAD = ClusterContext(
    name="lab", role="head", index=0, size=3, head_address="10.0.0.2", node_address="10.0.0.2"
)
WORKER = replace(HEAD, role="worker", index=2, node_address="10.0.0.4")


def cluster_context(cluster: ClusterContext | None) -> StepContext:
    return replace(gpu_context("nvidia-tesla-t4"), cluster=cluster)


def names(context: StepContext) -> list[str]:
    return [s.name for s in all_steps(context)]


def test_a_lone_instance_gets_no_ray_and_its_notebook_is_unchanged() -> None:
    lone = cluster_context(None)
    assert "ray" not in names(lone) and "notebook" in names(lone)
    notebook = next(s for s in all_steps(lone) if s.name == "notebook")
    text = notebook.script(lone, ready_facts(context=lone))
    assert '-p "127.0.0.1:$port:8888"' in text
    assert "--network host" not in text and "RAY_" not in text


def test_the_head_runs_ray_and_a_host_network_notebook_workers_run_no_notebook() -> None:
    head, worker = cluster_context(HEAD), cluster_context(WORKER)
    assert {"ray", "notebook"} <= set(names(head))
    assert "ray" in names(worker) and "notebook" not in names(worker)
    notebook = next(s for s in all_steps(head) if s.name == "notebook")
    text = notebook.script(head, ready_facts(context=head))
    assert "--network host --pid host" in text and '-p "127.0.0.1' not in text
    assert "--ServerApp.ip=127.0.0.1 --ServerApp.port=8888" in text
    assert "RAY_ADDRESS=10.0.0.2:6379" in text and "RAY_AUTH_MODE=token" in text
    assert f"RAY_AUTH_TOKEN_PATH={layout.CONTAINER_TOKEN}" in text
    assert "/var/lib/orchestrate/ray/lab-0/auth:/run/orchestrate/ray:ro" in text


def test_ray_start_pins_every_port_and_keeps_the_dashboard_on_loopback() -> None:
    head = ray_start_args(HEAD)
    for flag in (
        "--head", "--port=6379", "--dashboard-host=127.0.0.1", "--dashboard-port=8265",
        "--node-ip-address=10.0.0.2", "--object-manager-port=8076", "--node-manager-port=8077",
        "--min-worker-port=10002", "--max-worker-port=10999", "--disable-usage-stats",
    ):  # fmt: skip
        assert flag in head
    worker = ray_start_args(WORKER)
    assert "--address=10.0.0.2:6379" in worker and "--node-ip-address=10.0.0.4" in worker
    assert "--head" not in worker and not any("dashboard-host" in a for a in worker)


def test_scripts_pass_shellcheck_and_hold_no_token(tmp_path: Path) -> None:
    scripts: dict[str, str] = {}
    for label, context in (("head", cluster_context(HEAD)), ("worker", cluster_context(WORKER))):
        facts = ready_facts(context=context)
        for step in all_steps(context):
            scripts[f"{label}-{step.name}"] = step.script(context, facts)
        probe = probe_script(context, all_steps(context))
        shellcheck({f"{label}-probe": probe}, "sh", tmp_path)
    shellcheck(scripts, "bash", tmp_path)
    ray = scripts["worker-ray"]
    assert "--gpus all" in ray and "--restart unless-stopped" in ray and "--network host" in ray
    assert "orchestrate-ray-worker" in ray and "RAY_AUTH_TOKEN_PATH" in ray
    assert "RAY_AUTH_TOKEN=" not in ray, "the token goes in as a file, never its value"


def probed(context: StepContext, output: str) -> Facts:
    return replace(ready_facts(context=context), extra={"ray": output})


def test_a_running_container_with_the_same_label_needs_nothing() -> None:
    context = cluster_context(WORKER)
    (step,) = [s for s in all_steps(context) if s.name == "ray"]
    label = wanted_label(config_hash(context, WORKER), "t0ken", "1mage")
    assert not step.needed(probed(context, f"{label}|running|t0ken|1mage\n"))
    # a new token, a new image, a stopped container or none at all: the step runs
    assert step.needed(probed(context, f"{label}|running|n3w|1mage"))
    assert step.needed(probed(context, f"{label}|running|t0ken|n3w"))
    assert step.needed(probed(context, f"{label}|exited|t0ken|1mage"))
    assert step.needed(probed(context, "||t0ken|1mage"))
    assert step.needed(probed(context, "||t0ken|"))
    assert step.needed(probed(context, ""))
    other = cluster_context(replace(WORKER, head_address="10.0.0.9"))
    assert config_hash(other, other.cluster) != config_hash(context, WORKER)  # type: ignore[arg-type]


class Row:
    def __init__(self, **fields: Any) -> None:
        self.status = "running"
        self.__dict__.update(fields)

    def launched_profile(self) -> Any:
        return type("Profile", (), {"nodes": getattr(self, "nodes", 1)})()


class FakeSession:
    """Stands in for the SSH session: the text is what Ray 2.60's ``ray status`` prints."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.commands: list[str] = []

    def run(self, command: str, timeout: float) -> Any:
        self.commands.append(command)
        return type("Result", (), {"stdout": self.stdout, "rc": 0})()


def test_hook_status_notes_gives_rays_view_of_a_cluster_head_in_one_command() -> None:
    session = FakeSession(RAY_STATUS_BUSY)
    notes = status.status_notes(Row(cluster="lab", node_index=0), session)
    assert notes == ["ray: 3 nodes alive, GPUs 2/3 free, CPUs 8/8 free"]
    assert session.commands == [status.COMMAND]
    assert status.status_notes(Row(nodes=3), FakeSession(RAY_STATUS_BUSY)) == notes


def test_status_says_nothing_for_lone_rows_workers_listings_and_names_a_silent_head() -> None:
    session = FakeSession(RAY_STATUS_BUSY)
    assert status.status_notes(Row(), session) == []
    assert status.status_notes(Row(cluster="lab", node_index=1), session) == []
    assert status.status_notes(Row(cluster="lab"), None) == []
    assert status.status_notes(Row(cluster="lab", status="stopped"), session) == []
    assert session.commands == []
    down = FakeSession("Error: No such container: orchestrate-ray-head\n")
    (line,) = status.status_notes(Row(cluster="lab"), down)
    assert line.startswith("ray: not answering on the head") and "No such container" in line


def fake_ray(root: Path, version: str) -> Path:
    """A site folder holding a "ray" distribution of `version` (metadata, RECORD naming its
    console script) and the bin folder with that script: what pip leaves in an image."""
    site, bin_dir = root / "site", root / "bin"
    info = site / f"ray-{version}.dist-info"
    info.mkdir(parents=True)
    bin_dir.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ray\nVersion: {version}\n")
    (info / "RECORD").write_text(f"ray-{version}.dist-info/METADATA,,\n../bin/ray,,\n")
    (bin_dir / "ray").write_text("#!/bin/sh\n")
    (bin_dir / "ray").chmod(0o755)
    return site


def run_check(site: Path, path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{path}:/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "exec(sys.argv[2])", str(site), RAY_CHECK],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_the_image_check_wants_token_auth_ray_whose_command_is_its_own(tmp_path: Path) -> None:
    """The check reads Ray's metadata instead of importing Ray: it passes only for a Ray of
    the minimum version or newer whose `ray` command on PATH is that distribution's."""
    new = fake_ray(tmp_path / "new", "2.60.0")
    shown = run_check(new, tmp_path / "new" / "bin")
    assert shown.returncode == 0 and shown.stdout.strip() == "2.60.0", shown.stderr
    newer = fake_ray(tmp_path / "newer", "3.1.0rc1")
    assert run_check(newer, tmp_path / "newer" / "bin").stdout.strip() == "3.1.0rc1"
    old = fake_ray(tmp_path / "old", "2.59.9")
    refused = run_check(old, tmp_path / "old" / "bin")
    assert refused.returncode != 0 and "no token authentication" in refused.stderr
    # A new Ray installed, but the `ray` on PATH is another one's (or none at all).
    assert run_check(new, tmp_path / "old" / "bin").returncode != 0
    assert run_check(new, tmp_path / "nowhere").returncode != 0
    assert ".".join(map(str, MIN_RAY)) in IMAGES_THAT_WORK
