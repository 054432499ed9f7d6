"""Turning libcloud's and GCE's errors into core's typed errors.

The failover loop in core only understands `CapacityError(zone)` and `QuotaError(scope)`, so
this is where GCE's words are read: ``ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS]`` is a
stockout, ``QUOTA_EXCEEDED`` on ``GPUS_ALL_REGIONS`` (or any ``*_ALL_REGIONS``) is cloud-wide
and on anything else regional. Exceptions are read by duck typing (``http_code``, ``code``,
``value``) so this module does not import libcloud.

Server messages are quoted only after `clean()`: one line, bounded, with anything that looks
like key material removed, so no error can leak a secret into a terminal or a log.
"""

from __future__ import annotations

import re

from orchestrate.core.api.errors import (
    AuthError,
    CapacityError,
    CreateRefused,
    NotFound,
    OrchestrateError,
    ProviderError,
    QuotaError,
)
from orchestrate.plugins.providers.gcp.zones import quota_hint, region_of

RETRYABLE_HTTP = frozenset({429, 500, 502, 503, 504})
RETRYABLE_REASONS = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "userRateLimitExceeded"}
)
AUTH_HINT = (
    "check the key file and that its service account may use Compute Engine in the project "
    "(role Compute Admin), or run `gcloud auth application-default login` again"
)
#: GCE answers an insert that attaches a service account the caller may not "act as" with
#: 400 "... does not have access to service account ... iam.serviceAccountUser role".
SERVICE_ACCOUNT_HINT = (
    "grant the caller roles/iam.serviceAccountUser on that service account (gcloud iam "
    "service-accounts add-iam-policy-binding), or set scopes = [] in the profile to attach none"
)
_PEM = re.compile(r"-----BEGIN[^-]*-----.*?(?:-----END[^-]*-----|$)", re.S)
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-.]{60,}")
_QUOTA_METRIC = re.compile(r"Quota '([A-Z0-9_]+)' exceeded")
_QUOTA_REGION = re.compile(r"in region ([a-z]+-[a-z]+[0-9]+)")


class AlreadyExists(ProviderError):
    """HTTP 409 on an insert: the resource is there already (a retried or repeated create)."""


def clean(text: object, limit: int = 240) -> str:
    """A server message made safe to print: one line, no key material, bounded length."""
    value = str(text)
    value = _PEM.sub("[redacted key]", value)
    value = _LONG_TOKEN.sub("[redacted]", value)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def parts(exc: BaseException) -> tuple[int | None, str, str]:
    """(HTTP status, GCE error code or reason, message) of a libcloud exception."""
    http = getattr(exc, "http_code", None)
    code = getattr(exc, "code", None)
    value = getattr(exc, "value", None)
    if isinstance(value, dict):
        value = value.get("message") or value.get("reason") or ""
    message = clean(value if value is not None else exc)
    return (http if isinstance(http, int) else None), (str(code) if code else ""), message


def is_capacity(code: str) -> bool:
    return "RESOURCE_POOL_EXHAUSTED" in code or "STOCKOUT" in code


def is_retryable(exc: BaseException) -> bool:
    """5xx, 429 and rate limits are worth another try; a stockout (503 too) is not."""
    if isinstance(exc, OrchestrateError):
        return False
    http, code, _ = parts(exc)
    if is_capacity(code):
        return False
    if http in RETRYABLE_HTTP or code in RETRYABLE_REASONS:
        return True
    # Connection refused/reset and timeouts (requests' errors are OSErrors too).
    return isinstance(exc, OSError) and http is None


def quota_error(message: str, *, project: str, zone: str | None) -> QuotaError:
    metric_match = _QUOTA_METRIC.search(message)
    metric = metric_match.group(1) if metric_match else "unknown quota"
    if metric.endswith("_ALL_REGIONS") or "globally" in message:
        return QuotaError(
            f"gcp project {project}: {message}", scope="cloud", hint=quota_hint(project, metric)
        )
    region_match = _QUOTA_REGION.search(message)
    region = region_match.group(1) if region_match else (region_of(zone) if zone else None)
    return QuotaError(message, scope="region", region=region, hint=quota_hint(project, metric))


def map_error(
    exc: BaseException, *, context: str, project: str, zone: str | None = None
) -> OrchestrateError:
    """The core error for a failed API call; `context` says what was being done."""
    if isinstance(exc, OrchestrateError):
        return exc
    http, code, message = parts(exc)
    if is_capacity(code):
        return CapacityError(
            f"no capacity for this machine right now ({code})",
            zone=zone or "",
            hint="the next zone is tried; add zones to the profile to widen the search",
        )
    if code in ("QUOTA_EXCEEDED", "quotaExceeded"):
        return quota_error(message, project=project, zone=zone)
    if "serviceAccountUser" in message or "does not have access to service account" in message:
        return CreateRefused(
            f"gcp: the caller may not attach the instance's service account while {context}",
            hint=SERVICE_ACCOUNT_HINT,
        )
    if code in ("alreadyExists", "RESOURCE_ALREADY_EXISTS") or http == 409:
        return AlreadyExists(f"{context}: already exists")
    if http == 401 or type(exc).__name__ == "GoogleAuthError":
        return AuthError(f"gcp refused the credentials while {context}: {message}", hint=AUTH_HINT)
    if http == 403:
        return AuthError(f"gcp denied {context}: {message}", hint=AUTH_HINT)
    if http == 404 or type(exc).__name__ == "ResourceNotFoundError":
        return NotFound(f"gcp: not found while {context}: {message}")
    if isinstance(exc, OSError) and http is None:
        return ProviderError(
            f"gcp API unreachable while {context}: {clean(exc)}",
            hint="check the network or api_endpoint",
        )
    label = f"HTTP {http}" if http else type(exc).__name__
    if http == 400:  # the request itself was refused: nothing was done
        return CreateRefused(f"gcp refused the request while {context}: {message}")
    return ProviderError(
        f"gcp error while {context} ({label} {code}): {message}".replace(" )", ")")
    )
