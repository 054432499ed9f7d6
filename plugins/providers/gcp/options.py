"""The keys of a profile's ``[profiles.NAME.gcp]`` table, validated once into `GcpOptions`.

Defaults reproduce the seed's instance with a GPU that can still be had (n1-standard-2 with
one Tesla T4, where the seed had a K80, retired on GCE in May 2024; Ubuntu LTS from
``ubuntu-os-cloud`` by family, a 50 GB boot disk), so an empty table launches what the blog
post launches by hand. Validation happens here, before any network call, so a typo fails with
the file, table and key instead of a 400 from the API half-way through a launch.

No libcloud here: `orchestrate profiles --show` and `--dry-run` must not load it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from orchestrate.core.api import gpu_catalog
from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.optionchecks import check_table, merge_zones
from orchestrate.core.api.optionchecks import endpoint as _endpoint
from orchestrate.core.api.optionchecks import integer as _integer
from orchestrate.core.api.optionchecks import kind_name as _kind_name
from orchestrate.core.api.optionchecks import string as _string
from orchestrate.core.api.optionchecks import string_list as _string_list
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.api.typedoptions import checked, checks_of

DEFAULT_API_ENDPOINT = "https://www.googleapis.com"
#: The seed's zone (us-east1-d) is in this region: auto-selected zones start here.
DEFAULT_REGION = "us-east1"
NO_GPU = "none"
#: A GPU GCE sells today on the seed's machine family (N1), in the most zones of any GPU.
DEFAULT_ACCELERATOR = "nvidia-tesla-t4"
AUTH_SCOPE_PREFIX = "https://www.googleapis.com/auth/"
#: gcloud's short scope names, as `gcloud compute instances create --scopes` takes them.
SCOPE_ALIASES: Mapping[str, str] = {
    "bigquery": "bigquery",
    "cloud-platform": "cloud-platform",
    "compute-ro": "compute.readonly",
    "compute-rw": "compute",
    "logging-write": "logging.write",
    "monitoring": "monitoring",
    "monitoring-write": "monitoring.write",
    "storage-full": "devstorage.full_control",
    "storage-ro": "devstorage.read_only",
    "storage-rw": "devstorage.read_write",
}
#: What an instance's service account may do by default: read images/buckets, write logs
#: and metrics. Less than gcloud's default set on purpose (no service-control/trace).
DEFAULT_SCOPES = ("storage-ro", "logging-write", "monitoring-write")
#: GPU counts GCE accepts per instance.
GPU_COUNTS = (1, 2, 4, 8, 16)

_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_IMAGE_PATH = re.compile(r"^(?:projects/[a-z][a-z0-9-]+/)?global/images/[a-z][-a-z0-9]*$")


def _labels(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ProfileError(f"{where} must be a table of strings, not {_kind_name(value)}")
    result = []
    for key, text in value.items():
        if not isinstance(text, str):
            raise ProfileError(f"{where}.{key} must be a string, not {_kind_name(text)}")
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(text):
            raise ProfileError(
                f"{where}.{key}: GCE labels are lowercase letters, digits, '_' and '-'",
                hint="keys start with a letter; both at most 63 characters",
            )
        if key.startswith("orchestrate"):
            raise ProfileError(
                f"{where}.{key}: label keys starting with 'orchestrate' are "
                "reserved for orchestrate's own labels"
            )
        result.append((key, text))
    return tuple(sorted(result))


def _scope(value: Any, where: str) -> str:
    text = _string()(value, where)
    if text.startswith(AUTH_SCOPE_PREFIX) or text in SCOPE_ALIASES:
        return str(text)
    raise ProfileError(
        f"{where}: unknown scope {text!r}", hint=f"use a URL or one of {', '.join(SCOPE_ALIASES)}"
    )


def _boot_image(value: Any, where: str) -> str:
    return str(
        _string(_IMAGE_PATH, "an image path like projects/P/global/images/NAME")(value, where)
    )


ZONE = _string(_ZONE, "a zone like us-east1-d")


@dataclass(frozen=True)
class GcpOptions:
    """Validated GCP options; frozen (hashable) so API connections can be cached by them."""

    project: str | None = checked(None, _string(_PROJECT, "a GCP project id"))
    credentials: str | None = None
    zones: tuple[str, ...] = checked((), _string_list(ZONE))
    region: str | None = checked(None, _string(_REGION, "a region like us-east1"))
    machine_type: str = checked(
        "n1-standard-2", _string(_SLUG, "a machine type like n1-standard-2")
    )
    accelerator: str | None = checked(
        DEFAULT_ACCELERATOR,
        _string(
            re.compile(r"^(?:none|[a-z0-9]+(?:-[a-z0-9]+)*)$"),
            "an accelerator type like nvidia-tesla-t4, or none",
        ),
    )
    accelerator_count: int = checked(1, _integer(0, 16))
    image_family: str = checked(
        "ubuntu-2204-lts", _string(_NAME, "an image family like ubuntu-2204-lts")
    )
    image_project: str = checked(
        "ubuntu-os-cloud", _string(_PROJECT, "a project id like ubuntu-os-cloud")
    )
    boot_image: str | None = checked(None, _boot_image)
    disk_gb: int = checked(50, _integer(10, 65536))
    disk_type: str = checked("pd-balanced", _string(_SLUG, "a disk type like pd-balanced"))
    spot: bool = False
    preemptible: bool = False
    labels: tuple[tuple[str, str], ...] = checked((), _labels)
    network: str = checked("default", _string(_NAME, "a network name"))
    service_account: str = checked(
        "default", _string(re.compile(r"^(?:default|[^@\s]+@[^@\s]+)$"), "an email or 'default'")
    )
    scopes: tuple[str, ...] = checked(DEFAULT_SCOPES, _string_list(_scope))
    api_endpoint: str = checked(DEFAULT_API_ENDPOINT, _endpoint)
    ssh_user: str = checked("orchestrate", _string(_USER, "a login name like orchestrate"))
    ssh_port: int = checked(22, _integer(1, 65535))
    os_login: bool = False

    @property
    def gpu(self) -> GpuRequest | None:
        """The GPUs the instance has: those an accelerator-optimized type (g2, a2, a3) carries,
        else the ones attached to it."""
        builtin = gpu_catalog.gce_builtin_gpu(self.machine_type)
        if builtin is not None:
            return GpuRequest(*builtin)
        if self.accelerator is None or self.accelerator_count == 0:
            return None
        return GpuRequest(self.accelerator, self.accelerator_count)

    @property
    def attaches_gpu(self) -> bool:
        """Whether the insert sends ``guestAccelerators``: not for types that carry theirs."""
        return self.gpu is not None and gpu_catalog.gce_builtin_gpu(self.machine_type) is None

    @property
    def preferred_region(self) -> str:
        """Where "nearest" starts: the `region` key, else the first zone's, else the seed's."""
        if self.region:
            return self.region
        if self.zones:
            return self.zones[0].rsplit("-", 1)[0]
        return DEFAULT_REGION

    @property
    def interruptible(self) -> bool:
        return self.spot or self.preemptible

    def scope_urls(self) -> list[str]:
        return [scope_url(s) for s in self.scopes]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (lists and tables, not tuples), used by `redacted_options`."""
        data = asdict(self)
        data["zones"] = list(self.zones)
        data["scopes"] = list(self.scopes)
        data["labels"] = dict(self.labels)
        data["accelerator"] = self.accelerator or NO_GPU
        return data


def scope_url(scope: str) -> str:
    return scope if scope.startswith("https://") else AUTH_SCOPE_PREFIX + SCOPE_ALIASES[scope]


def parse_gpu(text: str, where: str = "--gpu") -> tuple[str | None, int]:
    """``TYPE[:N]`` or ``none`` -> (accelerator or None, count)."""
    value = text.strip().lower()
    if value in (NO_GPU, "", "0"):
        return None, 0
    name, _, count_text = value.partition(":")
    if not _SLUG.match(name):
        raise ProfileError(f"{where}: {text!r} is not an accelerator name like nvidia-tesla-t4")
    count = 1
    if count_text:
        if not count_text.isdigit():
            raise ProfileError(f"{where}: {text!r}: the count after ':' must be a number")
        count = int(count_text)
    if count == 0:
        return None, 0
    if count not in GPU_COUNTS:
        raise ProfileError(
            f"{where}: {count} GPUs per instance is not possible on GCE",
            hint=f"use one of {', '.join(map(str, GPU_COUNTS))}",
        )
    return name, count


# ---------------------------------------------------------------- validation


def parse_options(table: Mapping[str, Any], where: str) -> GcpOptions:
    """Validate a ``[profiles.NAME.gcp]`` table; every error names `where` and the key."""
    # `zone = "z"` is shorthand for `zones = ["z"]`: the one key that is not a field.
    values = check_table(table, {**checks_of(GcpOptions), "zone": ZONE}, where)
    merge_zones(values, where)
    builtin = gpu_catalog.gce_builtin_gpu(values.get("machine_type", GcpOptions.machine_type))
    if builtin is not None and "accelerator" not in values:  # g2/a2/a3 bring their own GPUs
        values["accelerator"], values["accelerator_count"] = builtin
    if values.get("accelerator") == NO_GPU:
        values["accelerator"] = None
        values.setdefault("accelerator_count", 0)
    if values.get("spot") and values.get("preemptible"):
        raise ProfileError(
            f"{where}: set spot or preemptible, not both",
            hint="spot is the newer model of preemptible VMs",
        )
    options = GcpOptions(**values)
    if options.accelerator is not None and options.accelerator_count not in (0, *GPU_COUNTS):
        raise ProfileError(
            f"{where}: accelerator_count must be one of "
            f"{', '.join(map(str, GPU_COUNTS))} (or 0 for no GPU)"
        )
    if options.accelerator_count == 0 and options.accelerator is not None:
        options = replace(options, accelerator=None)
    check_pair(options, where)
    return options


def check_pair(options: GcpOptions, where: str) -> None:
    """GCE accepts a GPU only on its machine family (T4 on N1, L4 on G2, A100 on A2, H100 on
    A3) and answers "features are not compatible" otherwise: say so before any request."""
    problem = gpu_catalog.gce_pair_error(options.machine_type, options.accelerator)
    if problem is not None:
        raise ProfileError(f"{where}: {problem}")
    entry = gpu_catalog.gce_accelerators().get(options.accelerator or "")
    if entry and options.attaches_gpu and options.accelerator_count not in entry["counts"]:
        counts = ", ".join(map(str, entry["counts"]))
        raise ProfileError(
            f"{where}: {options.accelerator} comes {counts} per instance, "
            f"not {options.accelerator_count}"
        )


def check_retired(options: GcpOptions) -> None:
    """A retired accelerator (the seed's K80) fails at once, naming the date and a successor:
    GCE would answer 400, and a quota request for it could never be granted."""
    retired = gpu_catalog.GCE_RETIRED.get(options.accelerator or "")
    if retired is not None and options.attaches_gpu:
        raise ProfileError(retired.message("gcp"))


def with_overrides(options: GcpOptions, overrides: Mapping[str, Any]) -> GcpOptions:
    """Apply ``--zone`` and ``--gpu``; any other flag given is an error for this provider."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {"zone", "gpu"})
    if unknown:
        raise ProfileError(
            f"provider gcp does not take --{unknown[0].replace('_', '-')}",
            hint="drop the flag or set the value in the profile's gcp table",
        )
    if "zone" in given:
        zone = ZONE(given["zone"], "--zone")
        options = replace(options, zones=(zone,))
    if "gpu" in given:
        accelerator, count = parse_gpu(str(given["gpu"]))
        options = replace(options, accelerator=accelerator, accelerator_count=count)
        check_pair(options, "--gpu")
    return options
