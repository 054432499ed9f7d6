"""pytest fixtures for the multi-node bed (``tests/bed/nodes.py``): hosts for a cluster.

Loaded as a plugin from tests/conftest.py, like the other bed fixtures.

- ``cluster_nodes``: three bed nodes for the whole session (a fresh set costs about a second
  once the image is in each node's cached data root; the first run imports it per node),
  with the lone bed's login user and client key, so the key that logs in to ``ssh_host``
  logs in to every node.  Each node has the notebook image of the current recipe.  Torn down
  at the end of the session: containers, processes by PID, mounts, namespaces.
- ``clean_nodes``: the same nodes, wiped after the test (as if their instances were
  deleted): no containers, no processes left by the test, the product's folders empty.
- ``gce_nodes``: the fake GCE (``gce_api``) with ``clean_nodes`` attached, so instances the
  product creates get the nodes' addresses and the nodes enforce the fake's firewall rules.
- ``docker_in``: ``docker_in(node, *args)`` runs ``docker ARGS`` inside a node.

A module that launches a cluster once for many tests attaches the nodes to the session's
fake itself (``gce_api_server.use_nodes(cluster_nodes)`` in a module fixture) and calls
``cluster_nodes.reset()`` when done; the next test's ``gce_api`` reset detaches them.

Everything here needs root, and fails (not skips) without it, as the other bed fixtures do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bed.docker_engine import DockerEngine
from tests.bed.fixtures_host import SshHost, _require_root
from tests.bed.gce_fake import GceFake
from tests.bed.jupyter_image import rootfs_for_import
from tests.bed.nodes import NodeBed, start_nodes
from tests.bed.nodes import docker_in as _docker_in

CLUSTER_SIZE = 3


@pytest.fixture(scope="session")
def cluster_nodes(
    ssh_host: SshHost, bed_cache: Path, docker_engine: DockerEngine
) -> Iterator[NodeBed]:
    """Three bed nodes (external + internal address, sshd on :22, own Docker engine)."""
    _require_root("node bed")
    public_key = ssh_host.key_path.with_name(ssh_host.key_path.name + ".pub").read_text()
    with rootfs_for_import(bed_cache) as image:
        bed = start_nodes(
            CLUSTER_SIZE,
            cache_dir=bed_cache,
            user=ssh_host.user,
            key_path=ssh_host.key_path,
            authorized_key=public_key,
            image=image,
        )
    try:
        yield bed
    finally:
        bed.close()


@pytest.fixture
def clean_nodes(cluster_nodes: NodeBed) -> Iterator[NodeBed]:
    """``cluster_nodes``, wiped after the test so the next one finds fresh hosts."""
    yield cluster_nodes
    cluster_nodes.reset()


@pytest.fixture
def gce_nodes(gce_api: GceFake, clean_nodes: NodeBed) -> GceFake:
    """The fake GCE giving its instances the nodes' addresses and enforcing its firewalls."""
    gce_api.use_nodes(clean_nodes)
    return gce_api


@pytest.fixture
def docker_in() -> Callable[..., object]:
    """``docker_in(node, *args)``: ``docker ARGS`` inside a node (unchecked result)."""
    return _docker_in
