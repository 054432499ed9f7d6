"""Turning EC2's error codes into core's typed errors.

The failover loop only understands `CapacityError(zone)` and `QuotaError(scope)`, so this is
where EC2's words are read. libcloud's EC2 response parser raises with a message of the form
``Code: message`` (one line per error); exceptions are read by duck typing (``code``,
``http_code``, ``value``, ``message``) so this module does not import libcloud.

- ``InsufficientInstanceCapacity`` (and the host/capacity variants), ``Unsupported`` (the
  type is not sold in that zone) and ``InsufficientFreeAddressesInSubnet`` are zone problems:
  `CapacityError`, the next zone is tried.
- ``VcpuLimitExceeded``, ``InstanceLimitExceeded`` and ``MaxSpotInstanceCountExceeded`` are
  account limits of the region. A profile targets one region, so nothing else can work for
  this launch: `QuotaError(scope="cloud")`, which ends the loop with the message and the
  hint that names the Service Quotas code to raise.
- ``AuthFailure``, ``UnauthorizedOperation``, ``SignatureDoesNotMatch``, ... -> `AuthError`.
- ``InvalidInstanceID.NotFound`` -> `NotFound`.

Server messages are quoted only after `clean()`: one line, bounded, and anything that looks
like an encoded authorization message or key material is cut out.
"""

from __future__ import annotations

import re

from orchestrate.core.api.errors import (
    AuthError,
    CapacityError,
    NotFound,
    OrchestrateError,
    ProviderError,
    QuotaError,
)
from orchestrate.plugins.providers.aws import instance_types as types

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientFreeAddressesInSubnet",
        "Unsupported",
        "SpotMaxPriceTooLow",
    }
)
QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "Blocked",
        "PendingVerification",
        "ExpiredToken",
        "RequestExpired",
        "InvalidAccessKeyId",
    }
)
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
RETRYABLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)
RETRYABLE_HTTP = frozenset({429, 500, 502, 503, 504})
AUTH_HINT = (
    "check the access key (`aws sts get-caller-identity`) and that its IAM policy allows "
    "ec2:RunInstances, ec2:Describe*, ec2:ImportKeyPair, ec2:CreateSecurityGroup, "
    "ec2:AuthorizeSecurityGroupIngress, ec2:CreateTags, ec2:Start/Stop/TerminateInstances"
)

_CODE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)*):\s*(.*)$", re.S)
_ENCODED = re.compile(r"Encoded authorization failure message:\s*\S+")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{60,}")


def clean(text: object, limit: int = 240) -> str:
    """A server message made safe to print: one line, no long opaque tokens, bounded."""
    value = _ENCODED.sub("(encoded authorization message removed)", str(text))
    value = _LONG_TOKEN.sub("[redacted]", value)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def parts(exc: BaseException) -> tuple[int | None, str, str]:
    """(HTTP status, EC2 error code, message) of a libcloud exception."""
    http = getattr(exc, "http_code", None)
    if http is None and isinstance(getattr(exc, "code", None), int):
        http = exc.code  # type: ignore[attr-defined]
    text = getattr(exc, "message", None) or getattr(exc, "value", None) or str(exc)
    first = str(text).splitlines()[0] if str(text).strip() else ""
    match = _CODE.match(first)
    if match:
        return (http if isinstance(http, int) else None), match.group(1), clean(match.group(2))
    return (http if isinstance(http, int) else None), "", clean(text)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and dropped connections are worth another try; capacity is not."""
    if isinstance(exc, OrchestrateError):
        return False
    http, code, _ = parts(exc)
    if code in CAPACITY_CODES or code in QUOTA_CODES:
        return False
    if code in RETRYABLE_CODES:
        return True
    if http in RETRYABLE_HTTP and not code:
        return True
    return isinstance(exc, OSError) and http is None


def quota_error(
    code: str, message: str, *, region: str, instance_type: str | None, spot: bool
) -> QuotaError:
    """The vCPU (or instance count) limit explained: which quota, how many vCPUs, how to ask."""
    quota = types.vcpu_quota(instance_type, spot=spot) if instance_type else None
    vcpus = types.vcpus_of(instance_type) if instance_type else None
    if quota is not None:
        need = f"{instance_type} needs {vcpus} vCPUs" if vcpus else f"{instance_type} needs more"
        text = (
            f"aws {region}: the account's vCPU limit '{quota.name}' is too low ({need}; "
            f"new accounts often start at 0 for GPU families): {message}"
        )
        hint = (
            f"request more at https://console.aws.amazon.com/servicequotas/home/services/ec2/"
            f"quotas/{quota.code} (region {region}), or `aws service-quotas "
            f"request-service-quota-increase --service-code ec2 --quota-code {quota.code} "
            f"--desired-value {vcpus or 'N'} --region {region}`"
        )
    else:
        text = f"aws {region}: account limit reached ({code}): {message}"
        hint = "see the EC2 limits in the Service Quotas console for this region"
    return QuotaError(text, scope="cloud", region=region, hint=hint)


def map_error(
    exc: BaseException,
    *,
    context: str,
    region: str,
    zone: str | None = None,
    instance_type: str | None = None,
    spot: bool = False,
) -> OrchestrateError:
    """The core error for a failed EC2 call; `context` says what was being done."""
    if isinstance(exc, OrchestrateError):
        return exc
    http, code, message = parts(exc)
    name = type(exc).__name__
    if code in CAPACITY_CODES:
        return CapacityError(
            f"EC2 cannot place {instance_type or 'the instance'} in {zone or region} now ({code})",
            zone=zone or "",
            hint="the next zone is tried; list more zones in the profile to widen the search",
        )
    if code in QUOTA_CODES:
        return quota_error(code, message, region=region, instance_type=instance_type, spot=spot)
    if code in AUTH_CODES or name == "InvalidCredsError" or http in (401, 403):
        return AuthError(f"aws refused {context} ({code or http}): {message}", hint=AUTH_HINT)
    if code in NOT_FOUND_CODES:
        return NotFound(f"aws: not found while {context}: {message}")
    if isinstance(exc, OSError) and http is None:
        return ProviderError(
            f"aws EC2 API unreachable while {context}: {clean(exc)}",
            hint="check the network, the region or the endpoint key",
        )
    label = code or (f"HTTP {http}" if http else name)
    return ProviderError(f"aws error while {context} ({label}): {message}")
