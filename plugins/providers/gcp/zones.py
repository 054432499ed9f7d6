"""Zone order and quota names: the pure part of GCP failover.

Zones are tried cheapest first, by the catalog snapshot's list price of the machine and its
GPUs there (`orchestrate.core.api.gpu_catalog`); a zone the snapshot does not price comes after
the priced ones. Among zones of the same price, "nearest region first" decides. It has no API
on GCE (zones carry no coordinates), so it is a preference order, documented and testable:

1. the preferred region (the ``region`` key, else the first listed zone's region, else
   ``us-east1``, the seed's);
2. other regions of the same geography (the first word of the region: ``us``, ``europe``,
   ``asia``, ...), by name;
3. every other region, by name.

Zones of one region stay together (so a regional quota error skips all of them at once) and
are sorted by name. An explicit ``zones`` list in the profile is never reordered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

GLOBAL_GPU_METRIC = "GPUS_ALL_REGIONS"

#: Accelerator types whose quota metric does not follow the NVIDIA_<MODEL>_GPUS rule.
_METRIC_EXCEPTIONS = {
    "nvidia-h100-80gb": "NVIDIA_H100_GPUS",
    "nvidia-h100-mega-80gb": "NVIDIA_H100_MEGA_GPUS",
}


def region_of(zone: str) -> str:
    """``us-east1-d`` -> ``us-east1``."""
    return zone.rsplit("-", 1)[0]


def geography(region: str) -> str:
    """``us-east1`` -> ``us``; ``europe-west1`` -> ``europe``."""
    return region.split("-", 1)[0]


def order_nearest(zones: Iterable[str], preferred_region: str) -> list[str]:
    """`zones` ordered by the rule in this module's docstring."""
    home = geography(preferred_region)

    def key(zone: str) -> tuple[int, str, str]:
        region = region_of(zone)
        if region == preferred_region:
            rank = 0
        elif geography(region) == home:
            rank = 1
        else:
            rank = 2
        return rank, region, zone

    return sorted(set(zones), key=key)


def order_cheapest(
    zones: Iterable[str], preferred_region: str, price: Callable[[str], float | None]
) -> list[str]:
    """`zones` by `price` (to the cent; unpriced last), then by `order_nearest`."""
    nearest = order_nearest(zones, preferred_region)
    rank = {zone: index for index, zone in enumerate(nearest)}

    def key(zone: str) -> tuple[float, int]:
        value = price(zone)
        return (math.inf if value is None else round(value, 2), rank[zone])

    return sorted(nearest, key=key)


def gpu_quota_metric(accelerator: str, *, interruptible: bool = False) -> str:
    """The regional quota metric an accelerator counts against (``NVIDIA_K80_GPUS``).

    Spot and preemptible GPUs count against the ``PREEMPTIBLE_`` twin of the metric.
    """
    metric = _METRIC_EXCEPTIONS.get(accelerator)
    if metric is None:
        model = accelerator.removeprefix("nvidia-").removeprefix("tesla-")
        metric = "NVIDIA_" + model.upper().replace("-", "_") + "_GPUS"
    return "PREEMPTIBLE_" + metric if interruptible else metric


def quota_console_url(project: str) -> str:
    return f"https://console.cloud.google.com/iam-admin/quotas?project={project}"


def quota_hint(project: str, metric: str) -> str:
    """How to ask for more quota: the console page and the metric to filter on."""
    hint = f"request a higher {metric} limit at {quota_console_url(project)} (filter on {metric})"
    if metric == GLOBAL_GPU_METRIC:
        hint += "; new projects start at 0"
    return hint
