"""The existing-host provider: one's own GPU workstation or an on-prem box, reached over SSH.

There is no cloud: `create` creates nothing and returns the host as it is, so everything after
the provider (probe, host steps, container, tunnel) runs exactly as on a cloud VM. What a
cloud provider does to the machine, this one must never do to a machine the user owns:

- `stops_container_only` tells core that `stop` stops the notebook container (the machine
  stays on) and that `down` removes the container itself;
- `stop` and `destroy` therefore touch nothing: `destroy` only lets core forget the host;
  notebooks and everything else on the host stay;
- `start` cannot power a machine on; it checks that the host answers again.

The one network call is a TCP connect that reads the SSH banner: launch fails fast with the
address in the message when the host is off or the port is wrong, and `status` can tell
"running" from "unreachable" (``unknown``) without logging in.

The host must already accept orchestrate's SSH key for the user: nothing can put it there
without a password. The error core prints on a refused login should suggest
``ssh-copy-id -i <orchestrate key>.pub user@address``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import ProfileError, ProviderError
from orchestrate.core.api.provider import (
    GpuRequest,
    InstanceRecord,
    LaunchSpec,
    PlannedRequest,
    Provider,
)
from orchestrate.plugins.providers.ssh.options import (
    HOST_HINT,
    SshOptions,
    parse_options,
    target_of,
    with_overrides,
)

CONNECT_TIMEOUT_S = 5.0
BANNER_PREFIX = b"SSH-"


def _options(value: Any) -> SshOptions:
    if not isinstance(value, SshOptions):
        raise TypeError(f"ssh options must come from validate_options, not {type(value)}")
    return value


def _require_host(options: SshOptions) -> tuple[str, str, int]:
    if options.address is None or options.user is None:
        raise ProfileError(
            "provider ssh needs a host",
            hint="pass --host user@address[:port] or set host in the profile's [ssh] table",
        )
    return options.user, options.address, options.port


def probe_banner(address: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why the host is not usable yet (one line), or None when an SSH server answers."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            banner = sock.recv(256)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if not banner.startswith(BANNER_PREFIX):
        return "something answers there, but it is not an SSH server"
    return None


class SshProvider(Provider):
    """An existing machine reached over SSH: no cloud calls, nothing created or deleted."""

    name = "ssh"
    description = (
        "an existing host over SSH (your GPU workstation, an on-prem box): --host; a cluster "
        "from hosts = [...], on your own network (no firewall rule is made for it)"
    )
    default_ssh_user = "root"
    stops_container_only = True

    def __init__(self, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.connect_timeout_s = connect_timeout_s

    def validate_options(self, table: Mapping[str, Any], where: str) -> SshOptions:
        return parse_options(table, where)

    def apply_overrides(self, options: Any, overrides: Mapping[str, Any]) -> SshOptions:
        return with_overrides(_options(options), overrides)

    def gpu_request(self, options: Any) -> GpuRequest | None:
        return _options(options).gpu

    def ssh_user(self, options: Any) -> str:
        return _options(options).user or self.default_ssh_user

    def redacted_options(self, options: Any) -> Mapping[str, Any]:
        return _options(options).as_dict()

    def plan(self, spec: LaunchSpec) -> Sequence[PlannedRequest]:
        """No cloud API: the only request is the SSH connection to the existing host."""
        user, address, port, _ = _node_host(spec)
        return [
            PlannedRequest(
                "SSH",
                target_of(user, address, port),
                {
                    "creates": "nothing: the host is used as it is",
                    "stop": "stops the notebook container; the machine stays on",
                    "down": "removes the container and forgets the host; files stay",
                },
            )
        ]

    def _check(self, address: str, port: int, target: str) -> None:
        problem = probe_banner(address, port, self.connect_timeout_s)
        if problem is not None:
            raise ProviderError(
                f"cannot use ssh host {target}: {problem}",
                hint="check that the machine is on and its sshd listens there; " + HOST_HINT,
            )

    def preflight(self, spec: LaunchSpec) -> None:
        user, address, port, _ = _node_host(spec)
        self._check(address, port, target_of(user, address, port))

    def candidate_zones(self, spec: LaunchSpec) -> Sequence[str]:
        """One "zone": the host itself, so progress reads "creating in user@address:port"
        (a cluster's: its list of hosts)."""
        user, address, port, _ = _node_host(spec)
        return ["hosts" if spec.cluster else target_of(user, address, port)]

    def create(self, spec: LaunchSpec, zone: str) -> InstanceRecord:
        user, address, port, internal = _node_host(spec)
        target = target_of(user, address, port)
        self._check(address, port, target)
        return InstanceRecord(
            name=spec.name,
            provider=self.name,
            zone=None,
            cloud_id=f"ssh://{target}",
            status=p.RUNNING,
            address=address,
            internal_address=internal or address,
            ssh_user=user,
            ssh_port=port,
            extra={"host": target},
        )

    # A cluster of existing machines sits on the user's own network: there is no rule of
    # orchestrate's to make or delete, so both are no-ops (`ClusterNetworks`).
    def ensure_cluster_network(self, cluster: str, options: Any) -> None:
        """Nothing: the hosts' own network decides who reaches them."""

    def release_cluster_network(self, cluster: str, options: Any) -> None:
        """Nothing was made."""

    def get(self, record: InstanceRecord) -> InstanceRecord:
        """RUNNING when an SSH server answers at the address, else UNKNOWN (never NotFound:
        a workstation that is off is not gone, and core must not forget it)."""
        status = p.UNKNOWN
        if record.address:
            reachable = probe_banner(record.address, record.ssh_port, self.connect_timeout_s)
            status = p.RUNNING if reachable is None else p.UNKNOWN
        return _with_status(record, status)

    def start(self, record: InstanceRecord) -> InstanceRecord:
        """The machine is not orchestrate's to power on: check it is back, or say so."""
        if not record.address:
            raise ProviderError(f"{record.name}: the record has no address")
        self._check(record.address, record.ssh_port, str(record.extra.get("host", record.address)))
        return _with_status(record, p.RUNNING)

    def stop(self, record: InstanceRecord) -> None:
        """Nothing at the machine level: see `stops_container_only` (core stops the container)."""

    def destroy(self, record: InstanceRecord) -> None:
        """Nothing to delete: core forgets the host; the machine and its files stay."""


def _node_host(spec: LaunchSpec) -> tuple[str, str, int, str | None]:
    """(user, address, port, internal address) of the machine `spec` runs on: a lone host's
    `host`, a cluster node's entry of `hosts` (node 0, the head, is NAME; node K is
    NAME-wK, core's naming)."""
    options = _options(spec.options)
    if spec.cluster is None or not options.hosts:
        if options.address is None and options.hosts:
            user, address, port = options.hosts[0]
            return user, address, port, None
        user, address, port = _require_host(options)
        return user, address, port, None
    index = 0
    prefix = f"{spec.cluster}-w"
    if spec.name != spec.cluster and spec.name.startswith(prefix):
        index = int(spec.name[len(prefix) :])
    if index >= len(options.hosts):
        raise ProfileError(
            f"provider ssh has {len(options.hosts)} hosts, not enough for node {index + 1} of "
            f"{spec.cluster}",
            hint="add a user@address to hosts = [...] for every node",
        )
    user, address, port = options.hosts[index]
    internal = (
        options.internal_addresses[index] if index < len(options.internal_addresses) else None
    )
    return user, address, port, internal


def _with_status(record: InstanceRecord, status: str) -> InstanceRecord:
    return InstanceRecord(
        name=record.name,
        provider=record.provider,
        zone=record.zone,
        cloud_id=record.cloud_id,
        status=status,
        address=record.address,
        internal_address=record.internal_address,
        ssh_user=record.ssh_user,
        ssh_port=record.ssh_port,
        extra=dict(record.extra),
    )
