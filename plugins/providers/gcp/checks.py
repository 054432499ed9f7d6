"""Preflight reads: what makes every zone fail, found before the first insert.

Each function is one or two cheap GETs. The global GPU quota comes first because a new
project's ``GPUS_ALL_REGIONS`` is 0: then no zone can work and trying them all would only
waste minutes before the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrate.core.api.errors import NotFound, ProfileError, QuotaError
from orchestrate.core.api.provider import GpuRequest
from orchestrate.plugins.providers.gcp.api import GceApi
from orchestrate.plugins.providers.gcp.options import GcpOptions
from orchestrate.plugins.providers.gcp.zones import GLOBAL_GPU_METRIC, quota_hint

API_ROOT = "https://www.googleapis.com/compute/v1"


def check_global_gpu_quota(api: GceApi, gpu: GpuRequest) -> None:
    """Raise `QuotaError(scope="cloud")` when ``GPUS_ALL_REGIONS`` cannot fit `gpu`."""
    info = api.request("GET", f"{API_ROOT}/projects/{api.project}", context="reading quotas")
    quota = {q.get("metric"): q for q in info.get("quotas", [])}.get(GLOBAL_GPU_METRIC)
    if quota is None:  # some older projects have no global GPU quota at all
        return
    limit, usage = float(quota.get("limit", 0)), float(quota.get("usage", 0))
    if limit - usage < gpu.count:
        raise QuotaError(
            f"gcp project {api.project}: {GLOBAL_GPU_METRIC} quota is {limit:g} with "
            f"{usage:g} in use; {gpu.count} GPU(s) needed, so no zone can work",
            scope="cloud",
            hint=quota_hint(api.project, GLOBAL_GPU_METRIC),
        )


def image_link(options: GcpOptions, project: str) -> str:
    """Full link of ``boot_image`` (relative paths are in the instance's project)."""
    path = options.boot_image or ""
    if not path.startswith("projects/"):
        path = f"projects/{project}/{path}"
    return f"{API_ROOT}/{path}"


def check_image(api: GceApi, options: GcpOptions) -> None:
    """The boot image exists: the family resolves in its project, or the image is there.

    libcloud's own family table stops at Ubuntu 20.04, so the family is looked up in the
    configured project only (``ex_standard_projects=False``).
    """
    try:
        if options.boot_image:
            api.request("GET", image_link(options, api.project), context="reading the image")
        else:
            api.call(
                lambda: api.driver.ex_get_image_from_family(
                    options.image_family,
                    ex_project_list=[options.image_project],
                    ex_standard_projects=False,
                ),
                context="resolving the image family",
            )
    except NotFound:
        image = options.boot_image or (
            f"family {options.image_family} in project {options.image_project}"
        )
        raise ProfileError(
            f"gcp: image {image} not found",
            hint=f"list them: gcloud compute images list --project {options.image_project}",
        ) from None


def accelerator_zones(api: GceApi, accelerator: str | None = None) -> dict[str, list[str]]:
    """Accelerator type -> the zones offering it, from one aggregated listing (only
    `accelerator` when given); deprecated types are left out."""
    params = {"filter": f'name = "{accelerator}"'} if accelerator else {}
    found: dict[str, set[str]] = {}
    for page in api.pages("/aggregated/acceleratorTypes", params, context="listing GPUs"):
        for scope, value in (page.get("items") or {}).items():
            for item in value.get("acceleratorTypes", []):
                name = str(item.get("name"))
                if (accelerator is None or name == accelerator) and not item.get("deprecated"):
                    found.setdefault(name, set()).add(scope.split("/", 1)[-1])
    return {name: sorted(zones) for name, zones in sorted(found.items())}


def offering_zones(api: GceApi, accelerator: str | None) -> list[str]:
    """Zones that offer `accelerator` (one aggregated listing), or every UP zone for a CPU
    host; sorted by name."""
    zones: set[str] = set()
    if accelerator:
        zones = set(accelerator_zones(api, accelerator).get(accelerator, []))
    else:
        for page in api.pages("/zones", context="listing zones"):
            zones |= {z["name"] for z in page.get("items", []) if z.get("status") == "UP"}
    return sorted(zones)


def regional_headroom(api: GceApi, metric: str, regions: Iterable[str]) -> dict[str, float]:
    """Quota left on `metric` in each of `regions` that reports it (one regions listing)."""
    wanted = set(regions)
    left: dict[str, float] = {}
    for page in api.pages("/regions", context="reading regional quotas"):
        for region in page.get("items", []):
            if region.get("name") not in wanted:
                continue
            for quota in region.get("quotas", []):
                if quota.get("metric") == metric:
                    usage = float(quota.get("usage", 0))
                    left[str(region["name"])] = float(quota.get("limit", 0)) - usage
    return left
