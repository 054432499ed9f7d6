"""From a GCE instance resource to the `InstanceRecord` core stores.

``cloud_id`` is the instance's selfLink (it names project, zone and instance); ``extra``
keeps the connection settings (paths only) and small facts shown by ``status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrate.core.api.errors import NotFound
from orchestrate.core.api.provider import (
    PENDING,
    RUNNING,
    STOPPED,
    STOPPING,
    UNKNOWN,
    InstanceRecord,
)
from orchestrate.plugins.providers.gcp import resources as res
from orchestrate.plugins.providers.gcp.connection import Connection
from orchestrate.plugins.providers.gcp.firewall import network_of

STATUS = {
    "PROVISIONING": PENDING,
    "STAGING": PENDING,
    "REPAIRING": PENDING,
    "RUNNING": RUNNING,
    "STOPPING": STOPPING,
    "SUSPENDING": STOPPING,
    "SUSPENDED": STOPPED,
    "TERMINATED": STOPPED,  # GCE's word for a stopped instance: it still exists
}


def to_record(
    instance: Mapping[str, Any],
    connection: Connection,
    *,
    name: str,
    ssh_user: str,
    ssh_port: int,
) -> InstanceRecord:
    """The record of `instance`, under core's `name`."""
    link = str(instance["selfLink"])
    _, zone, instance_name = res.locate(link)
    network = network_of(dict(instance))
    extra: dict[str, Any] = {
        **connection.record_extra(),
        "instance": instance_name,
        "network": network,
        "firewall": res.firewall_name(network),
        "network_tag": res.SSH_TAG,
        "machine_type": str(instance.get("machineType", "")).rsplit("/", 1)[-1],
        "gcp_status": instance.get("status"),
    }
    accelerators = instance.get("guestAccelerators") or []
    if accelerators:
        extra["accelerator"] = str(accelerators[0].get("acceleratorType", "")).rsplit("/", 1)[-1]
        extra["accelerator_count"] = int(accelerators[0].get("acceleratorCount", 0))
    return InstanceRecord(
        name=name,
        provider="gcp",
        zone=zone,
        cloud_id=link,
        status=STATUS.get(str(instance.get("status")), UNKNOWN),
        address=res.external_ip(instance),
        internal_address=res.internal_ip(instance),
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        extra=extra,
    )


def locate_record(record: InstanceRecord) -> tuple[str, str]:
    """(zone, instance name) of a record: from its selfLink, else its zone and name."""
    if record.cloud_id:
        _, zone, name = res.locate(record.cloud_id)
        return zone, name
    if not record.zone:
        raise NotFound(f"gcp: the record of {record.name} has neither a cloud id nor a zone")
    return record.zone, res.instance_name(record.name)
