"""Reading the credentials file a profile points at, without ever echoing its secrets.

Two shapes are accepted, as the Google client libraries accept them:

- a service-account key (``"type": "service_account"``), downloaded from the console or made
  with ``gcloud iam service-accounts keys create``;
- application-default credentials (``"type": "authorized_user"``) written by
  ``gcloud auth application-default login``.

With no ``credentials`` key the usual search applies: ``$GOOGLE_APPLICATION_CREDENTIALS``, then
gcloud's ``application_default_credentials.json``. Every failure is one line naming the path
and the fix; no message quotes the file's content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import AuthError
from orchestrate.core.api.files import read_regular, reason

SERVICE_ACCOUNT = "service_account"
AUTHORIZED_USER = "authorized_user"
_REQUIRED = {
    SERVICE_ACCOUNT: ("client_email", "private_key"),
    AUTHORIZED_USER: ("client_id", "client_secret", "refresh_token"),
}
#: A key file is about 2 KB; anything far larger is not one (e.g. `/dev/zero`).
CREDENTIALS_CAP = 256 << 10
LOGIN_HINT = (
    "point `credentials` at a service-account key (gcloud iam service-accounts keys create "
    "KEY.json --iam-account=SA_EMAIL) or run `gcloud auth application-default login`"
)


@dataclass(frozen=True)
class Credentials:
    """A parsed credentials file. `info` holds the secrets and is kept out of repr()."""

    path: Path
    kind: str
    principal: str
    project_id: str | None
    info: dict[str, Any] = field(repr=False, compare=False, hash=False)


def default_credentials_path() -> Path | None:
    """Where Google's client libraries would look when no path is configured."""
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return Path(explicit).expanduser()
    config_dir = os.environ.get("CLOUDSDK_CONFIG")
    base = Path(config_dir) if config_dir else Path.home() / ".config" / "gcloud"
    candidate = base / "application_default_credentials.json"
    return candidate if candidate.exists() else None


def credentials_path(option: str | None) -> Path | None:
    return Path(option).expanduser() if option else default_credentials_path()


def describe_credentials(option: str | None) -> str:
    """What `--dry-run` and `profiles --show` print for the credentials: a path, never content."""
    if option:
        return option
    path = default_credentials_path()
    return f"{path} (application default)" if path else "(application default: none found)"


def load_credentials(option: str | None) -> Credentials:
    """Read and check the credentials file; raise `AuthError` (one line) if it is unusable."""
    path = credentials_path(option)
    if path is None:
        raise AuthError(
            "gcp: no credentials configured and no application-default credentials found",
            hint=LOGIN_HINT,
        )
    try:
        raw = read_regular(path, cap=CREDENTIALS_CAP)
    except FileNotFoundError:
        raise AuthError(f"gcp credentials file {path} does not exist", hint=LOGIN_HINT) from None
    except OSError as exc:
        raise AuthError(
            f"gcp credentials file {path} cannot be read ({reason(exc)})",
            hint="name the JSON key file itself (a regular file, owner-only: mode 0600)",
        ) from None
    try:
        info = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise AuthError(
            f"gcp credentials file {path} is not JSON",
            hint="use the JSON key file, not a .p12 or PEM file",
        ) from None
    if not isinstance(info, dict):
        raise AuthError(f"gcp credentials file {path} is not a JSON object", hint=LOGIN_HINT)
    kind = info.get("type")
    if kind not in _REQUIRED:
        raise AuthError(
            f"gcp credentials file {path} has type {kind!r}; "
            f"expected {SERVICE_ACCOUNT} or {AUTHORIZED_USER}",
            hint=LOGIN_HINT,
        )
    missing = [k for k in _REQUIRED[kind] if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        raise AuthError(f"gcp credentials file {path} lacks {', '.join(missing)}", hint=LOGIN_HINT)
    if kind == SERVICE_ACCOUNT and "PRIVATE KEY-----" not in info["private_key"]:
        raise AuthError(
            f"gcp credentials file {path}: private_key is not a PEM key",
            hint="download a new JSON key for the service account",
        )
    principal = info["client_email"] if kind == SERVICE_ACCOUNT else info["client_id"]
    project = info.get("project_id") or info.get("quota_project_id")
    return Credentials(path, kind, principal, project if isinstance(project, str) else None, info)


def project_from_environment() -> str | None:
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        value = os.environ.get(name)
        if value:
            return value
    return None
