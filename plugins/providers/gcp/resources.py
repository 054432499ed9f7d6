"""The JSON bodies and paths orchestrate sends to the Compute API, as pure functions.

`plan()` (``--dry-run``) and `create()` both build their requests here, so the dry run shows
exactly what a launch sends. Nothing here reads a credentials file or the network.

Choices the seed workflow implies, written down once:

- a GPU instance gets ``onHostMaintenance=TERMINATE`` (GPU hosts cannot live-migrate);
  ``automaticRestart`` is on (the seed's restart-on-failure) unless the VM is spot or
  preemptible, which GCE requires to be off;
- the boot disk is initialised from the image *family* URL; GCE resolves it to the family's
  newest image at insert time;
- the user's public key goes in the ``ssh-keys`` metadata (a public key is not a secret),
  the host script in ``startup-script`` when the profile asks for startup-script mode;
- ``enable-oslogin=FALSE`` on the instance, because a project with OS Login on ignores
  ``ssh-keys`` and the key would be refused; with ``os_login = true`` the instance asks for
  OS Login instead and gets no ``ssh-keys`` (the user's key is then their OS Login key);
- accelerator-optimized types (g2, a2, a3) carry their GPUs, so their insert sends no
  ``guestAccelerators`` (GCE refuses the pair otherwise);
- one ephemeral external IP (``ONE_TO_ONE_NAT``), and the network tag that the SSH firewall
  rule targets;
- labels mark the instance as orchestrate's so `list` and `destroy` never touch others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrate.core.api.provider import LaunchSpec
from orchestrate.plugins.providers.gcp.options import GcpOptions

MANAGED_LABEL = "orchestrate"
MANAGED_VALUE = "1"
NAME_LABEL = "orchestrate-name"
MANAGED_FILTER = f'labels.{MANAGED_LABEL} = "{MANAGED_VALUE}"'
SSH_TAG = "orchestrate-ssh"
SSH_PORT = "22"
DESCRIPTION = "orchestrate notebook host"

_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^a-z0-9_-]+")


def instance_name(name: str) -> str:
    """A valid GCE resource name for core's instance name (lowercase, '-', <= 63 chars)."""
    value = _NOT_NAME.sub("-", name.lower()).strip("-")
    if not value or not value[0].isalpha():
        value = "o-" + value
    return value[:63].rstrip("-")


def label_value(text: str) -> str:
    return _NOT_LABEL.sub("_", text.lower())[:63]


def firewall_name(network: str) -> str:
    """One SSH rule per network, shared by every orchestrate instance on it."""
    return f"orchestrate-allow-ssh-{network}"[:63].rstrip("-")


#: The tag and rule of a cluster: `CLUSTER_PREFIX + name` (core keeps names short enough).
CLUSTER_PREFIX = "orchestrate-cluster-"


def cluster_tag(cluster: str) -> str:
    """The network tag of a cluster's nodes, which is also its firewall rule's name."""
    return f"{CLUSTER_PREFIX}{cluster}"


def cluster_firewall_body(cluster: str, network: str) -> dict[str, Any]:
    """Every protocol between the cluster's own nodes (source and target by tag), and
    nothing from anywhere else: Ray's ports stay closed to the internet."""
    tag = cluster_tag(cluster)
    return {
        "name": tag,
        "description": f"orchestrate: traffic between the nodes of the cluster {cluster} only",
        "network": f"global/networks/{network}",
        "direction": "INGRESS",
        "priority": 1000,
        "sourceTags": [tag],
        "targetTags": [tag],
        "allowed": [{"IPProtocol": "all"}],
    }


def tags_for(spec: LaunchSpec) -> list[str]:
    """SSH for every instance; a cluster node also carries its cluster's tag."""
    return [SSH_TAG] + ([cluster_tag(spec.cluster)] if spec.cluster else [])


def labels_for(spec: LaunchSpec, options: GcpOptions) -> dict[str, str]:
    """Profile labels, then core's labels, then orchestrate's own (which always win)."""
    labels = dict(options.labels)
    for key, value in spec.labels.items():
        key_text = label_value(key)
        if key_text and key_text[0].isalpha():
            labels[key_text] = label_value(value)
    labels[MANAGED_LABEL] = MANAGED_VALUE
    labels[NAME_LABEL] = label_value(spec.name)
    return labels


def image_source(options: GcpOptions) -> str:
    if options.boot_image:
        return options.boot_image
    return f"projects/{options.image_project}/global/images/family/{options.image_family}"


def scheduling(options: GcpOptions) -> dict[str, Any]:
    result: dict[str, Any] = {
        "onHostMaintenance": "TERMINATE" if options.gpu or options.interruptible else "MIGRATE",
        "automaticRestart": not options.interruptible,
    }
    if options.spot:
        result["provisioningModel"] = "SPOT"
        result["instanceTerminationAction"] = "STOP"
    elif options.preemptible:
        result["preemptible"] = True
    return result


def metadata(spec: LaunchSpec, options: GcpOptions) -> dict[str, Any]:
    if options.os_login:
        items = [{"key": "enable-oslogin", "value": "TRUE"}]
    else:
        items = [
            {"key": "enable-oslogin", "value": "FALSE"},
            {"key": "ssh-keys", "value": f"{options.ssh_user}:{spec.ssh_public_key.strip()}"},
        ]
    if spec.startup_script:
        items.append({"key": "startup-script", "value": spec.startup_script})
    return {"items": items}


def instance_body(spec: LaunchSpec, options: GcpOptions, zone: str) -> dict[str, Any]:
    """The ``instances.insert`` body for `spec` in `zone`."""
    name = instance_name(spec.name)
    body: dict[str, Any] = {
        "name": name,
        "description": DESCRIPTION,
        "machineType": f"zones/{zone}/machineTypes/{options.machine_type}",
        "labels": labels_for(spec, options),
        "tags": {"items": tags_for(spec)},
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "type": "PERSISTENT",
                "mode": "READ_WRITE",
                "deviceName": name,
                "initializeParams": {
                    "diskName": name,
                    "diskSizeGb": str(options.disk_gb),
                    "diskType": f"zones/{zone}/diskTypes/{options.disk_type}",
                    "sourceImage": image_source(options),
                },
            }
        ],
        "networkInterfaces": [
            {
                "network": f"global/networks/{options.network}",
                "accessConfigs": [
                    {"name": "External NAT", "type": "ONE_TO_ONE_NAT", "networkTier": "PREMIUM"}
                ],
            }
        ],
        "scheduling": scheduling(options),
        "metadata": metadata(spec, options),
        "serviceAccounts": (
            [{"email": options.service_account, "scopes": options.scope_urls()}]
            if options.scopes
            else []
        ),
    }
    gpu = options.gpu
    if gpu is not None and options.attaches_gpu:
        body["guestAccelerators"] = [
            {
                "acceleratorType": f"zones/{zone}/acceleratorTypes/{gpu.name}",
                "acceleratorCount": gpu.count,
            }
        ]
    return body


def firewall_body(network: str) -> dict[str, Any]:
    """Ingress tcp:22 only, to instances carrying `SSH_TAG` on `network`."""
    return {
        "name": firewall_name(network),
        "description": "orchestrate: SSH to notebook hosts (Jupyter stays on the host's "
        "127.0.0.1 and is reached through the SSH tunnel)",
        "network": f"global/networks/{network}",
        "direction": "INGRESS",
        "priority": 1000,
        "sourceRanges": ["0.0.0.0/0"],
        "targetTags": [SSH_TAG],
        "allowed": [{"IPProtocol": "tcp", "ports": [SSH_PORT]}],
    }


def instance_path(zone: str, name: str) -> str:
    return f"/zones/{zone}/instances/{name}"


def locate(self_link: str) -> tuple[str, str, str]:
    """(project, zone, name) from an instance selfLink."""
    match = re.search(r"projects/([^/]+)/zones/([^/]+)/instances/([^/?]+)", self_link)
    if not match:
        raise ValueError(f"not an instance link: {self_link}")
    return match.group(1), match.group(2), match.group(3)


def internal_ip(instance: Mapping[str, Any]) -> str | None:
    """The address other instances of the network reach it on (``networkIP``)."""
    for nic in instance.get("networkInterfaces", []):
        if nic.get("networkIP"):
            return str(nic["networkIP"])
    return None


def external_ip(instance: Mapping[str, Any]) -> str | None:
    for nic in instance.get("networkInterfaces", []):
        for config in nic.get("accessConfigs", []):
            if config.get("natIP"):
                return str(config["natIP"])
    return None
