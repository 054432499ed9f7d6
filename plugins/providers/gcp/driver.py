"""Building libcloud's ``GCENodeDriver``, imported only here and only when a call is made.

Endpoint redirect: libcloud has no option for another Compute endpoint. ``host=``/``port=``
make the driver constructor fail and ``secure=False`` alone would talk plain HTTP to the real
Google hosts. What works is a ``url=`` keyword for the connection class, added by overriding
``_ex_connection_class_kwargs``: the GCE connection passes its keywords on to the OAuth
connection, so the API (``/compute/v1/projects/...``) *and* the token exchange
(``/o/oauth2/token``) both go to ``api_endpoint``. Only ``scheme://host:port`` is used:
libcloud replaces the path with ``/compute/v1/projects/PROJECT``.

Tokens: ``auth_type`` is always passed (libcloud would otherwise probe the GCE metadata
server), and the token cache is ``os.devnull`` for service accounts, so no access token is
ever written to disk. Application-default credentials (``authorized_user``) go through
libcloud's installed-app flow, which only refreshes a token it reads from its cache file: the
refresh token is put in a private temporary file for the first exchange, then the file is
deleted and the cache pointed at ``os.devnull``.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any

from orchestrate.plugins.providers.gcp.credentials import SERVICE_ACCOUNT, Credentials
from orchestrate.plugins.providers.gcp.options import DEFAULT_API_ENDPOINT

#: The OAuth scope the provider needs: Compute Engine read/write, nothing else.
COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"
HTTP_TIMEOUT_S = 60


@functools.cache
def driver_class() -> type[Any]:
    """`GCENodeDriver` with an optional endpoint redirect (built once, on first use)."""
    from libcloud.compute.drivers.gce import GCENodeDriver

    class RedirectableGCENodeDriver(GCENodeDriver):  # type: ignore[misc, unused-ignore]
        """GCENodeDriver whose API and token requests go to ``api_url`` when it is set."""

        def __init__(self, *args: Any, api_url: str | None = None, **kwargs: Any) -> None:
            self._api_url = api_url
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]

        def _ex_connection_class_kwargs(self) -> dict[str, Any]:
            kwargs: dict[str, Any] = super()._ex_connection_class_kwargs()  # type: ignore[no-untyped-call, unused-ignore]
            if self._api_url:
                kwargs["url"] = self._api_url
            return kwargs

    return RedirectableGCENodeDriver


def build_driver(credentials: Credentials, project: str, api_endpoint: str) -> Any:
    """A connected driver holding a fresh access token (raises libcloud's errors as-is)."""
    cls = driver_class()
    api_url = None if api_endpoint == DEFAULT_API_ENDPOINT else api_endpoint
    common: dict[str, Any] = {
        "project": project,
        "scopes": [COMPUTE_SCOPE],
        "api_url": api_url,
        "timeout": HTTP_TIMEOUT_S,
    }
    info = credentials.info
    if credentials.kind == SERVICE_ACCOUNT:
        # key=dict: libcloud reads private_key from it; the token is fetched right here.
        return cls(info["client_email"], info, auth_type="SA", credential_file=os.devnull, **common)
    return _installed_app_driver(cls, info, common)


def _installed_app_driver(cls: type[Any], info: dict[str, Any], common: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory(prefix="orchestrate-gcp-") as private_dir:
        cache = os.path.join(private_dir, "token.json")
        seed = {
            "access_token": "",
            "refresh_token": info["refresh_token"],
            "expire_time": "1970-01-01T00:00:00Z",
        }
        fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(seed, handle)
        driver = cls(
            info["client_id"],
            info["client_secret"],
            auth_type="IA",
            credential_file=cache,
            **common,
        )
        credential = driver.connection.oauth2_credential
        credential.access_token  # noqa: B018 - the property performs the refresh exchange now
        credential.credential_file = os.devnull
    return driver
