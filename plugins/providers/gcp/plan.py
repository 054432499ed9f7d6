"""``--dry-run`` for GCP: the requests a launch sends, built by the same code as the launch.

No network, no secret and no credentials read (not even the ``project_id`` in the file: a
dry run opens nothing the profile names): the project comes from the profile, else the
environment, else ``PROJECT``. Where the
zone is only chosen by the failover loop, ``ZONE`` stands in for it. The OAuth token
exchange is not listed (its body is a signed assertion: a credential).
"""

from __future__ import annotations

from urllib.parse import urlencode

from orchestrate.core.api.provider import LaunchSpec, PlannedRequest
from orchestrate.plugins.providers.gcp import resources as res
from orchestrate.plugins.providers.gcp.checks import image_link
from orchestrate.plugins.providers.gcp.credentials import project_from_environment
from orchestrate.plugins.providers.gcp.options import GcpOptions

ZONE_PLACEHOLDER = "ZONE"
PROJECT_PLACEHOLDER = "PROJECT"


def plan_requests(spec: LaunchSpec, options: GcpOptions) -> list[PlannedRequest]:
    """Preflight reads, the firewall rule, the insert (first zone tried), the read-back."""
    project = options.project or project_from_environment() or PROJECT_PLACEHOLDER
    base = f"/compute/v1/projects/{project}"
    zone = options.zones[0] if options.zones else ZONE_PLACEHOLDER
    gpu = options.gpu
    steps: list[PlannedRequest] = []
    if gpu is not None:
        steps.append(PlannedRequest("GET", base))  # GPUS_ALL_REGIONS
    if options.boot_image:
        image = image_link(options, project).split("www.googleapis.com", 1)[1]
    else:
        image = (
            f"/compute/v1/projects/{options.image_project}/global/images/family/"
            f"{options.image_family}"
        )
    steps.append(PlannedRequest("GET", image))
    if gpu is not None:
        query = urlencode({"filter": f'name = "{gpu.name}"'})
        steps.append(PlannedRequest("GET", f"{base}/aggregated/acceleratorTypes?{query}"))
        steps.append(PlannedRequest("GET", f"{base}/regions"))
    else:
        steps.append(PlannedRequest("GET", f"{base}/zones"))
    firewall = res.firewall_body(options.network)
    steps.append(PlannedRequest("GET", f"{base}/global/firewalls/{firewall['name']}"))
    steps.append(PlannedRequest("POST", f"{base}/global/firewalls", firewall))
    if spec.cluster:
        rule = res.cluster_firewall_body(spec.cluster, options.network)
        steps.append(PlannedRequest("GET", f"{base}/global/firewalls/{rule['name']}"))
        steps.append(PlannedRequest("POST", f"{base}/global/firewalls", rule))
    body = res.instance_body(spec, options, zone)
    steps.append(PlannedRequest("POST", f"{base}/zones/{zone}/instances", body))
    steps.append(PlannedRequest("GET", base + res.instance_path(zone, body["name"])))
    return steps
