"""pytest fixtures for the "host" half of the test bed: sshd, Docker engine, Jupyter image.

Loaded as a plugin (``pytest_plugins = ["tests.bed.fixtures_host"]`` in
tests/conftest.py).  All fixtures are session-scoped: starting sshd takes
~0.1 s and dockerd ~0.2 s, but the Jupyter image takes a minute and a half the
first time, and every test that needs a "VM" can share one.  Everything here
needs root; a non-root run fails with that reason rather than skipping, so a
misconfigured CI cannot pass by skipping the real-component tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bed.docker_engine import DockerEngine, ensure_dockerd
from tests.bed.jupyter_image import ensure_jupyter_image
from tests.bed.sshd import Sshd, ensure_login_user, generate_client_key, start_sshd

DEFAULT_BED_CACHE = "/var/cache/orchestrate-bed"


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"the test bed's {what} needs root (run the tests as root, as CI does)")


@dataclass(frozen=True)
class SshHost:
    """What a test needs to reach the bed's "VM" over SSH, like a provider's ssh_target.

    ``host_key`` is the server's public host key line (``ssh-ed25519 AAAA...``)
    to pin; ``key_path`` the client's private key (0600).
    """

    address: str
    port: int
    user: str
    key_path: Path
    host_key: str
    sshd: Sshd


@pytest.fixture(scope="session")
def bed_cache() -> Path:
    """Cache shared by sessions: Docker data root, image tarball (``$ORCHESTRATE_BED_CACHE``)."""
    path = Path(os.environ.get("ORCHESTRATE_BED_CACHE", DEFAULT_BED_CACHE))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    """A real sshd on a free 127.0.0.1 port, logging in the cloud-style user with a fresh key.

    sshd's folder is made with mkdtemp and opened to 0755 because sshd reads
    the authorized keys file as the login user, and pytest's tmp folders are
    0700 (see tests/bed/sshd.py).
    """
    _require_root("sshd")
    user = ensure_login_user()
    key_path, public_key = generate_client_key(tmp_path_factory.mktemp("ssh-client"))
    workdir = Path(tempfile.mkdtemp(prefix="orchestrate-bed-sshd-"))
    workdir.chmod(0o755)
    try:
        with start_sshd(workdir, user=user, authorized_key=public_key) as sshd:
            yield SshHost(
                address=sshd.address,
                port=sshd.port,
                user=sshd.user,
                key_path=key_path,
                host_key=sshd.host_key_pub,
                sshd=sshd,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine(bed_cache: Path) -> Iterator[DockerEngine]:
    """A Docker engine on /var/run/docker.sock; stopped afterwards only if the bed started it."""
    _require_root("Docker engine")
    engine = ensure_dockerd(bed_cache)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def jupyter_image(docker_engine: DockerEngine, bed_cache: Path) -> str:
    """Tag of the offline-built Jupyter image (built on first use, then cached)."""
    return ensure_jupyter_image(bed_cache).tag
