"""Hostile values that the profile grammar lets through, run for real on the bed's host.

The grammar refuses most attacks at load (tests/reliability/test_hostile_values.py); what it
must accept is a folder name with spaces, quotes, `$(...)`, backticks, `;` and template
placeholders, since such folders exist. Here the notebook container step and the autostop
agent's install and removal run through the real runner, over real SSH, with sudo, against
the real dockerd, with such names. A marker file that any of them would create if a value
were ever parsed as shell must not appear, whether the shell ran as root or as the login
user, and the folders must be used under their literal names.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api.hoststeps import StepContext
from orchestrate.core.host.probe import probe
from orchestrate.core.host.runner import Runner
from orchestrate.core.ssh.session import Session
from orchestrate.plugins.host.autostop.step import autostop_step
from orchestrate.plugins.host.notebook import notebook_step

from tests.bed.docker_engine import docker

pytestmark = pytest.mark.bed


def hostile_name(marker: Path) -> str:
    """A folder name that runs `touch MARKER` however a careless script would use it."""
    return (
        f"nb $(touch {marker}) `touch {marker}`; touch {marker} & "
        f"'\"@CONTAINER@ @IMAGE@ $HOME ORCHESTRATE_ENV"
    )


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(f"/tmp/orchestrate-pwned-{uuid.uuid4().hex[:8]}")
    yield path
    path.unlink(missing_ok=True)


def connect(host: Any) -> Session:
    return Session.connect(
        host.address, host.port, host.user, host.key_path, pinned_host_key=host.host_key,
        deadline_s=20,
    )  # fmt: skip


def login_home(user: str) -> Path:
    return Path(os.path.expanduser(f"~{user}"))


def test_hostile_folder_names_reach_docker_and_autostop_literally(
    ssh_host: Any, docker_engine: Any, jupyter_image: str, marker: Path, tmp_path: Path
) -> None:
    name = hostile_name(marker)
    container = f"orch-hostile-{uuid.uuid4().hex[:8]}"
    autostop_root = Path("/tmp") / f"orch autostop {uuid.uuid4().hex[:6]} {name}"
    context = StepContext(
        instance="hostile",
        gpu=None,
        notebook_image=jupyter_image,
        token="tok-hostile-test",
        notebook_container=container,
        notebooks_host_dir=f"~/{name}",
        notebooks_container_dir="/home/jovyan/work",
        autostop="60m",
        extra={"autostop_root": str(autostop_root), "autostop_poweroff_command": "true",
               "autostop_interval": 3600},
    )  # fmt: skip
    folder = login_home(ssh_host.user) / name
    try:
        with connect(ssh_host) as session:
            steps = [notebook_step(context), autostop_step(context)]
            runner = Runner(session, context, steps, log_path=tmp_path / "bed.log")
            facts = probe(session, context, steps)
            outcome = runner.run_stage(steps, facts)
            assert [r.ok for r in outcome.results] == [True, True], outcome.results
            assert not marker.exists(), "a folder name ran as shell"

            assert folder.is_dir(), "the folder is made under its literal name"
            assert folder.stat().st_uid == pwd_uid(ssh_host.user), "and given to the login user"
            mounts = docker("inspect", "-f", "{{range .Mounts}}{{.Source}}{{end}}", container)
            assert mounts.stdout.strip() == str(folder)

            agent_config = Path(str(autostop_root) + "/etc/orchestrate/autostop.json")
            assert agent_config.is_file() and oct(agent_config.stat().st_mode & 0o777) == "0o600"

            # Removal takes the same paths: the loop is stopped, the files are gone.
            off = autostop_step(dataclasses.replace(context, autostop=None))
            removed = runner.run_stage([off], facts)
            assert removed.results[0].ok, removed.results
            assert not agent_config.exists()
        assert not marker.exists(), "a folder name ran as shell"
    finally:
        docker("rm", "-f", container, check=False)
        subprocess.run(["rm", "-rf", "--", str(folder), str(autostop_root)], check=False)


def test_an_existing_folder_of_another_owner_is_never_chowned(
    ssh_host: Any, docker_engine: Any, jupyter_image: str, marker: Path, tmp_path: Path
) -> None:
    """A notebooks folder that exists is mounted as it is: the step gives the login user
    only a folder it made itself (chowning /var/tmp/x of root would hand it over)."""
    folder = Path(f"/var/tmp/orch-root-owned-{uuid.uuid4().hex[:8]}")
    folder.mkdir(mode=0o755)
    os.chown(folder, 0, 0)
    container = f"orch-hostile-{uuid.uuid4().hex[:8]}"
    context = StepContext(
        instance="owned", gpu=None, notebook_image=jupyter_image, token="tok-owned-test",
        notebook_container=container, notebooks_host_dir=str(folder),
    )  # fmt: skip
    try:
        with connect(ssh_host) as session:
            step = notebook_step(context)
            runner = Runner(session, context, [step], log_path=tmp_path / "bed.log")
            outcome = runner.run_stage([step], probe(session, context, [step]))
            assert outcome.results[0].ok, outcome.results
        assert folder.stat().st_uid == 0, "the existing folder still belongs to root"
        assert not marker.exists()
    finally:
        docker("rm", "-f", container, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
