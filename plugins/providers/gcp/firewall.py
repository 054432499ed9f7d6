"""The one firewall rule orchestrate needs: tcp:22 to instances tagged ``orchestrate-ssh``.

Created once per network and reused by every orchestrate instance on it; Jupyter is never
exposed (it listens on the host's 127.0.0.1 and is reached through the SSH tunnel). The rule
is deleted only when no orchestrate instance on the network still carries the tag, so
destroying one notebook never cuts SSH to another.
"""

from __future__ import annotations

from typing import Any

from orchestrate.core.api.errors import NotFound
from orchestrate.plugins.providers.gcp import resources as res
from orchestrate.plugins.providers.gcp.api import GceApi
from orchestrate.plugins.providers.gcp.errors import AlreadyExists


def ensure_firewall(api: GceApi, network: str, *, timeout_s: float) -> None:
    """Create the SSH rule for `network` unless it exists already."""
    ensure_rule(api, res.firewall_body(network), timeout_s=timeout_s)


def ensure_rule(api: GceApi, body: dict[str, Any], *, timeout_s: float) -> None:
    """Create the firewall rule `body` unless one of its name exists already."""
    try:
        api.request("GET", f"/global/firewalls/{body['name']}", context="reading the rule")
        return
    except NotFound:
        pass
    context = f"creating firewall rule {body['name']}"
    try:
        operation = api.request("POST", "/global/firewalls", body, context=context)
        api.wait(operation, context=context, zone=None, timeout_s=timeout_s)
    except AlreadyExists:
        pass  # another launch created it in the meantime


def managed_instances(api: GceApi, extra_filter: str | None = None) -> list[dict[str, Any]]:
    """orchestrate's instances in every zone of the project (by label), one listing."""
    expression = res.MANAGED_FILTER
    if extra_filter:
        expression = f"({extra_filter}) ({expression})"
    found: list[dict[str, Any]] = []
    for page in api.pages(
        "/aggregated/instances", {"filter": expression}, context="listing instances"
    ):
        for value in (page.get("items") or {}).values():
            found += [
                instance
                for instance in value.get("instances", [])
                if (instance.get("labels") or {}).get(res.MANAGED_LABEL) == res.MANAGED_VALUE
            ]
    return found


def network_of(instance: dict[str, Any]) -> str:
    nics = instance.get("networkInterfaces") or [{}]
    return str(nics[0].get("network", "default")).rsplit("/", 1)[-1]


def release_firewall(api: GceApi, network: str, *, timeout_s: float) -> bool:
    """Delete the SSH rule of `network` if no orchestrate instance there still carries the
    tag. Returns whether the rule is gone."""
    for instance in managed_instances(api):
        tags = (instance.get("tags") or {}).get("items", [])
        if network_of(instance) == network and res.SSH_TAG in tags:
            return False
    delete_rule(api, res.firewall_name(network), timeout_s=timeout_s)
    return True


def delete_rule(api: GceApi, rule: str, *, timeout_s: float) -> None:
    """Delete the firewall rule `rule`; gone already is fine."""
    context = f"deleting firewall rule {rule}"
    try:
        operation = api.request("DELETE", f"/global/firewalls/{rule}", context=context)
        api.wait(operation, context=context, zone=None, timeout_s=timeout_s)
    except NotFound:
        pass


def ensure_cluster_rule(api: GceApi, cluster: str, network: str, *, timeout_s: float) -> None:
    """The rule that lets the nodes of `cluster` reach each other (and nothing else in)."""
    ensure_rule(api, res.cluster_firewall_body(cluster, network), timeout_s=timeout_s)


def release_cluster_rule(api: GceApi, cluster: str, *, timeout_s: float) -> bool:
    """Delete the cluster's rule unless an instance still carries its tag; whether it went."""
    tag = res.cluster_tag(cluster)
    for instance in managed_instances(api):
        if tag in (instance.get("tags") or {}).get("items", []):
            return False
    delete_rule(api, tag, timeout_s=timeout_s)
    return True
