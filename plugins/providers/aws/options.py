"""The keys of a profile's ``[profiles.NAME.aws]`` table, validated once into `AwsOptions`.

Defaults launch the seed's machine on EC2 with a GPU that can still be had: one Tesla T4
(``g4dn.xlarge``; the seed's K80 type, p2, was retired in 2024) in ``us-east-1``,
Ubuntu 22.04 from Canonical's own account, a 50 GB root volume, login ``ubuntu``. Validation
happens here, before any network call, so a typo fails with file, table and key instead of an
EC2 error half-way through a launch.

No libcloud here: `orchestrate profiles --show` and ``--dry-run`` must not load it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.optionchecks import check_table, merge_zones
from orchestrate.core.api.optionchecks import endpoint as _endpoint
from orchestrate.core.api.optionchecks import integer as _integer
from orchestrate.core.api.optionchecks import kind_name as _kind_name
from orchestrate.core.api.optionchecks import string as _string
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.api.typedoptions import checked, checks_of
from orchestrate.plugins.providers.aws import instance_types as types

#: Canonical's AWS account: only images it owns are trusted as "Ubuntu".
CANONICAL_OWNER = "099720109477"
#: Ubuntu 22.04 server images; the architecture segment is matched by the architecture filter.
UBUNTU_2204_NAME = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-*-server-*"
DEFAULT_SECURITY_GROUP = "orchestrate-ssh"
NO_GPU = "none"

_REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+$")
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_OWNER = re.compile(r"^(?:\d{12}|amazon|self|aws-marketplace)$")
_GROUP = re.compile(r"^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}$")
_KEY_NAME = re.compile(r"^[\x20-\x7e]{1,255}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _zone_text(value: Any, where: str) -> str:
    return str(_string(re.compile(r"^[a-z0-9-]+[a-z]$"), "a zone like us-east-1a")(value, where))


def _zones(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ProfileError(f"{where} must be an array of zones, not {_kind_name(value)}")
    return tuple(_zone_text(entry, f"{where}[{index}]") for index, entry in enumerate(value))


def _instance_type(value: Any, where: str) -> str:
    text = str(_string()(value, where))
    if not types.is_instance_type(text):
        raise ProfileError(f"{where}: {text!r} is not an instance type like g4dn.xlarge")
    retired = types.retired_message(text, where)
    if retired is not None:
        raise ProfileError(retired)
    try:
        types.gpu_of(text)
    except KeyError:
        raise ProfileError(
            f"{where}: {text!r} is an accelerated type orchestrate has no GPU data for",
            hint="known GPU families: "
            + ", ".join(types.GPU_FAMILIES)
            + " (see plugins/providers/aws/instance_types.py)",
        ) from None
    return text


@dataclass(frozen=True)
class AwsOptions:
    """Validated EC2 options; frozen (hashable) so API sessions can be cached by them."""

    region: str = checked("us-east-1", _string(_REGION, "a region like us-east-1"))
    zones: tuple[str, ...] = checked((), _zones)
    instance_type: str = checked("g4dn.xlarge", _instance_type)
    ami: str | None = checked(None, _string(_AMI, "an AMI id like ami-0123456789abcdef0"))
    ami_owner: str = checked(
        CANONICAL_OWNER,
        _string(_OWNER, "a 12-digit account id, amazon, self or aws-marketplace"),
    )
    ami_name: str = checked(
        UBUNTU_2204_NAME, _string(re.compile(r"^[\x20-\x7e]{1,128}$"), "an image name pattern")
    )
    key_name: str | None = checked(
        None, _string(_KEY_NAME, "a key pair name (printable ASCII, at most 255)")
    )
    security_group: str = checked(DEFAULT_SECURITY_GROUP, _string(_GROUP, "a security group name"))
    subnet_id: str | None = checked(
        None, _string(_SUBNET, "a subnet id like subnet-0123456789abcdef0")
    )
    public_ip: bool = True
    spot: bool = False
    disk_gb: int = checked(50, _integer(8, 16384))
    credentials: str | None = checked(
        None, _string(re.compile(r"^\S(?:.*\S)?$"), "a profile name or a file path")
    )
    endpoint: str | None = checked(None, _endpoint)
    ssh_user: str = checked("ubuntu", _string(_USER, "a login name like ubuntu"))
    ssh_port: int = checked(22, _integer(1, 65535))

    @property
    def gpu(self) -> GpuRequest | None:
        row = types.gpu_of(self.instance_type)
        return GpuRequest(row.gpu, row.gpus) if row else None

    @property
    def architecture(self) -> str:
        return types.architecture(self.instance_type)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view for `redacted_options`: the credentials key is a name or a path."""
        data = asdict(self)
        data["zones"] = list(self.zones)
        gpu = self.gpu
        data["gpu"] = f"{gpu.name}:{gpu.count}" if gpu else NO_GPU
        return data


def region_of(zone: str) -> str:
    """``us-east-1a`` -> ``us-east-1``; a Local Zone ``us-west-2-lax-1a`` -> ``us-west-2``."""
    match = re.match(r"^([a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+)", zone)
    return match.group(1) if match else zone


def _check_zone_in_region(zone: str, region: str, where: str) -> None:
    if region_of(zone) != region or zone == region:
        raise ProfileError(
            f"{where}: zone {zone!r} is not in region {region!r}",
            hint=f"use zones of {region} (like {region}a) or set region",
        )


def parse_options(table: Mapping[str, Any], where: str) -> AwsOptions:
    """Validate a ``[profiles.NAME.aws]`` table; every error names `where` and the key."""
    # `zone = "z"` is shorthand for `zones = ["z"]`: the one key that is not a field.
    values = check_table(table, {**checks_of(AwsOptions), "zone": _zone_text}, where)
    merge_zones(values, where)
    options = AwsOptions(**values)
    for zone in options.zones:
        _check_zone_in_region(zone, options.region, f"{where}: zones")
    if options.subnet_id and len(options.zones) > 1:
        raise ProfileError(
            f"{where}: subnet_id pins one zone, but zones lists {len(options.zones)}",
            hint="a subnet lives in one availability zone: drop subnet_id to fail over "
            "between zones (each zone's default subnet is used)",
        )
    return options


def parse_gpu(text: str, where: str = "--gpu") -> str:
    """``--gpu NAME[:COUNT]`` or ``none`` -> the instance type that provides it."""
    value = text.strip().lower()
    if value in (NO_GPU, "", "0"):
        return types.CPU_DEFAULT
    name, _, count_text = value.partition(":")
    gpu = types.canonical_gpu(name)
    if gpu is None:
        known = ", ".join(types.GPU_NAMES)
        raise ProfileError(f"{where}: EC2 offers no GPU called {name!r}", hint=f"known: {known}")
    if count_text and not count_text.isdigit():
        raise ProfileError(f"{where}: {text!r}: the count after ':' must be a number")
    count = int(count_text) if count_text else 1
    if count == 0:
        return types.CPU_DEFAULT
    if gpu in types.RETIRED_GPUS:
        raise ProfileError(
            str(types.retired_message(types.RETIRED_GPUS[gpu] + ".xlarge", f"{where} {name}"))
        )
    row = types.smallest_type(gpu, count)
    if row is None:
        counts = ", ".join(map(str, types.counts_for(gpu)))
        raise ProfileError(
            f"{where}: no EC2 instance type has {count} x {gpu}",
            hint=f"EC2 sells {gpu} in counts of {counts}",
        )
    return row.name


def with_overrides(options: AwsOptions, overrides: Mapping[str, Any]) -> AwsOptions:
    """Apply ``--zone`` and ``--gpu`` (which picks the instance type); others are an error."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {"zone", "gpu"})
    if unknown:
        raise ProfileError(
            f"provider aws does not take --{unknown[0].replace('_', '-')}",
            hint="drop the flag or set the value in the profile's aws table",
        )
    if "zone" in given:
        zone = _zone_text(given["zone"], "--zone")
        _check_zone_in_region(zone, options.region, "--zone")
        options = replace(options, zones=(zone,))
    if "gpu" in given:
        options = replace(options, instance_type=parse_gpu(str(given["gpu"])))
    return options
