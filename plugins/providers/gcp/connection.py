"""Which project, credentials and endpoint a call uses, and signing in with them.

A `Connection` is derived from the profile's options at launch, and from the stored record
afterwards (its ``extra`` keeps the project, the credentials *path* and a non-default API
endpoint), so `stop`/`start`/`destroy` work without the profile. Signing in is the first
network call: its failures become one-line `AuthError`s naming the credentials file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrate.core.api.errors import AuthError, OrchestrateError, ProfileError
from orchestrate.core.api.provider import InstanceRecord
from orchestrate.plugins.providers.gcp.api import retrying
from orchestrate.plugins.providers.gcp.credentials import (
    LOGIN_HINT,
    Credentials,
    project_from_environment,
)
from orchestrate.plugins.providers.gcp.errors import RETRYABLE_HTTP, parts
from orchestrate.plugins.providers.gcp.options import DEFAULT_API_ENDPOINT, GcpOptions
from orchestrate.plugins.providers.gcp.resources import locate


@dataclass(frozen=True)
class Connection:
    """Where and as whom to call the API. Holds a path, never a secret."""

    project: str
    credentials: str | None
    api_endpoint: str = DEFAULT_API_ENDPOINT

    def record_extra(self) -> dict[str, Any]:
        """What a record keeps so later calls can reconnect without the profile."""
        extra: dict[str, Any] = {"project": self.project}
        if self.credentials:
            extra["credentials"] = self.credentials
        if self.api_endpoint != DEFAULT_API_ENDPOINT:
            extra["api_endpoint"] = self.api_endpoint
        return extra


def connection_for(options: GcpOptions, credentials: Credentials) -> Connection:
    """The profile's connection; the project comes from the profile, else the credentials
    file, else ``$GOOGLE_CLOUD_PROJECT``/``$CLOUDSDK_CORE_PROJECT``."""
    project = options.project or credentials.project_id or project_from_environment()
    if not project:
        raise ProfileError(
            "gcp: no project set", hint='add project = "PROJECT_ID" to the profile\'s gcp table'
        )
    return Connection(project, options.credentials, options.api_endpoint)


def connection_of(record: InstanceRecord) -> Connection:
    """The connection a stored record was created with."""
    extra = record.extra
    project = extra.get("project")
    if not project and record.cloud_id:
        project = locate(record.cloud_id)[0]
    if not project:
        raise ProfileError(f"gcp: the record of {record.name} names no project")
    endpoint = extra.get("api_endpoint") or DEFAULT_API_ENDPOINT
    return Connection(str(project), extra.get("credentials"), str(endpoint))


def sign_in(
    credentials: Credentials,
    connection: Connection,
    *,
    deadline_s: float,
    sleep: Callable[[float], None],
) -> Any:
    """A libcloud driver holding a fresh access token.

    Transient failures (5xx, unreachable endpoint) are retried and then reported as such; a
    refused grant (``invalid_grant``), an unreadable key or a 401/403 is an `AuthError`.
    """
    from orchestrate.plugins.providers.gcp.driver import build_driver

    try:
        return retrying(
            lambda: build_driver(credentials, connection.project, connection.api_endpoint),
            context="signing in",
            project=connection.project,
            zone=None,
            deadline_s=deadline_s,
            sleep=sleep,
        )
    except OrchestrateError as exc:
        cause = exc.__cause__
        if cause is None:
            raise
        http, _, message = parts(cause)
        if http in RETRYABLE_HTTP or (isinstance(cause, OSError) and http is None):
            raise
        if type(cause).__name__ == "GoogleAuthError":
            raise AuthError(
                f"gcp credentials {credentials.path}: the key cannot be used ({message})",
                hint="download a new JSON key for the service account",
            ) from exc
        raise AuthError(
            f"gcp credentials {credentials.path} were refused: {message}", hint=LOGIN_HINT
        ) from exc
