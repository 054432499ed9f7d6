"""The reliability tests' bed: the e2e profile against the fake GCE API, the bed's sshd,
dockerd and Jupyter image; after each test, whatever it left is deleted and its container
and background tunnels are ended (by name and by PID, never by pattern)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed.docker_engine import docker
from tests.bed.gce_fake import GceFaults
from tests.reliability.support import kill_tunnels
from tests.support.e2e import Bed, adopt_bed_key, make_bed, write_profile


@pytest.fixture
def bed(
    orch_home: Path, gce_api, gce_credentials: Path, ssh_host, docker_engine, jupyter_image
) -> Iterator[Bed]:
    adopt_bed_key(orch_home, ssh_host.key_path)
    made = make_bed(orch_home, Path.cwd(), gce_api, ssh_host, jupyter_image)
    write_profile(made, gce_credentials)
    yield made
    gce_api.faults = GceFaults()  # every switch off before cleaning up
    leftover = made.cli("status", "--offline", "--json", check=False)
    for info in json.loads(leftover.stdout or "[]"):
        made.cli("down", info["name"], "--yes", check=False)
    kill_tunnels(made)
    # The bed's host is this machine: the container a test caused outlives the fake
    # instance, so it is removed by its unique name.
    docker("rm", "-f", made.container, check=False)
