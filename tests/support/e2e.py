"""Helpers for end-to-end tests: a launch profile pointing at the test bed, a CLI runner
in a subprocess (the real console script, as a user runs it), and a network-namespace probe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bed.sshd import free_port


@dataclass
class Bed:
    """What an end-to-end test needs: the fake cloud, the host, ports and names."""

    home: Path
    work: Path
    gce: Any
    ssh: Any
    image: str
    local_port: int
    remote_port: int
    container: str

    def cli(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `orchestrate ARGS` as a user would: the console script, a fresh process."""
        result = subprocess.run(
            [sys.executable, "-m", "orchestrate.core.app.cli", *args],
            cwd=self.work,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"orchestrate {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


def write_gcp_profile(
    work: Path,
    *,
    name: str,
    image: str,
    port: int,
    remote_port: int,
    container: str,
    project: str,
    credentials: Path | str,
    endpoint: str,
    ssh_user: str,
    ssh_port: int,
    home: Path,
    nodes: int = 1,
) -> Path:
    """./orchestrate.toml with a GCP profile against the fake API: no accelerator (this
    machine has no GPU: a CPU notebook host is a real option), the bed's sshd and image.
    The e2e tests, the demo and the benchmarks all launch with it. It sets an endpoint and
    credentials, so it is trusted for ORCHESTRATE_HOME=`home`, as `orchestrate trust` would.
    `nodes` above 1 makes it a cluster's profile."""
    text = textwrap.dedent(
        f"""
        [profiles.{name}]
        provider = "gcp"
        image = "{image}"
        port = {port}
        remote_port = {remote_port}
        container_name = "{container}"
        autostop = "off"
        {f"nodes = {nodes}" if nodes > 1 else "# one node: a lone instance"}

        [profiles.{name}.gcp]
        project = "{project}"
        credentials = "{credentials}"
        api_endpoint = "{endpoint}"
        zones = ["us-east1-d", "us-east1-c"]
        accelerator = "none"
        ssh_user = "{ssh_user}"
        ssh_port = {ssh_port}
        """
    )
    path = work / "orchestrate.toml"
    path.write_text(text, encoding="utf-8")
    trust_for(home, path)
    return path


def trust_for(home: Path, path: Path) -> None:
    """Record `path` as trusted in ORCHESTRATE_HOME=`home` (the user's `orchestrate trust`)."""
    from orchestrate.core.store.trust import trust

    saved = os.environ.get("ORCHESTRATE_HOME")
    os.environ["ORCHESTRATE_HOME"] = str(home)
    try:
        trust(path)
    finally:
        if saved is None:
            del os.environ["ORCHESTRATE_HOME"]
        else:
            os.environ["ORCHESTRATE_HOME"] = saved


def bed_profile(bed: Bed, name: str, provider: str) -> str:
    """The common part of a profile on `bed`: its image, ports and container, no autostop;
    the provider's own table follows it."""
    return f"""
[profiles.{name}]
provider = "{provider}"
image = "{bed.image}"
port = {bed.local_port}
remote_port = {bed.remote_port}
container_name = "{bed.container}"
autostop = "off"
"""


def write_profile(bed: Bed, credentials: Path, *, name: str = "e2e") -> Path:
    """The e2e profile for `bed`."""
    return write_gcp_profile(
        bed.work,
        name=name,
        image=bed.image,
        port=bed.local_port,
        remote_port=bed.remote_port,
        container=bed.container,
        project=bed.gce.project,
        credentials=credentials,
        endpoint=bed.gce.endpoint,
        ssh_user=bed.ssh.user,
        ssh_port=bed.ssh.port,
        home=bed.home,
    )


def adopt_bed_key(home: Path, key_path: Path) -> None:
    """Make the bed's authorised client key orchestrate's own key.

    On GCE the guest agent installs the key from the `ssh-keys` metadata; the bed's sshd has
    no agent, so the key it trusts becomes the one orchestrate would otherwise generate.
    """
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = config / "id_ed25519"
    shutil.copyfile(key_path, target)
    os.chmod(target, 0o600)
    public = Path(str(key_path) + ".pub")
    (config / "id_ed25519.pub").write_text(public.read_text(encoding="utf-8"), encoding="utf-8")


def make_bed(home: Path, work: Path, gce: Any, ssh: Any, image: str) -> Bed:
    return Bed(
        home=home,
        work=work,
        gce=gce,
        ssh=ssh,
        image=image,
        local_port=free_port(),
        remote_port=free_port(),
        container=f"orch-e2e-{uuid.uuid4().hex[:8]}",
    )


@contextmanager
def gcp_bed(home: Path, gce: Any, credentials: Path, ssh: Any, image: str) -> Iterator[Bed]:
    """A bed with the e2e GCP profile written; afterwards every instance left is taken down
    and the container removed.

    Deleting the fake's instance cannot stop a container on the machine that stands in for
    it, so the container the test caused is removed by its unique name.
    """
    import json

    from tests.bed.docker_engine import docker

    adopt_bed_key(home, ssh.key_path)
    made = make_bed(home, Path.cwd(), gce, ssh, image)
    write_profile(made, credentials)
    try:
        yield made
    finally:
        leftover = made.cli("status", "--offline", "--json", check=False)
        for info in json.loads(leftover.stdout or "[]"):
            made.cli("down", info["name"], "--yes", check=False)
        docker("rm", "-f", made.container, check=False)
