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

One sign-in per process: signing in as a service account costs two RSA key loads in libcloud
(it validates the key when the auth connection is built, and loads it again to sign the
token request), about 80 ms of CPU each with cryptography's key checks, plus the token round
trip. `status` refreshing eight rows and a fleet of launches each want a driver of their own
(libcloud's connections are not thread-safe), so every driver after the first is a copy of a
signed-in template with its own HTTP connection and the template's credential object, whose
refresh is serialised by a lock. The template is keyed on the secret's digest, so a new key
file signs in again.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import tempfile
import threading
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


_templates: dict[tuple[str, ...], Any] = {}
_template_locks: dict[tuple[str, ...], threading.Lock] = {}
_guard = threading.Lock()


def build_driver(credentials: Credentials, project: str, api_endpoint: str) -> Any:
    """A driver of this caller's own, signed in (raises libcloud's errors as-is).

    The first call for an identity signs in; concurrent first calls wait for it rather than
    each signing in. A failed sign-in keeps nothing, so the next call tries again.
    """
    key = _identity(credentials, project, api_endpoint)
    with _guard:
        lock = _template_locks.setdefault(key, threading.Lock())
    with lock:
        template = _templates.get(key)
        if template is None:
            template = _sign_in(credentials, project, api_endpoint)
            _serialise_refresh(template.connection.oauth2_credential)
            _templates[key] = template
    return _copy_of(template)


def forget_sign_ins() -> None:
    """Drop the process's signed-in templates (the next driver signs in again)."""
    with _guard:
        _templates.clear()
        _template_locks.clear()


def _identity(credentials: Credentials, project: str, api_endpoint: str) -> tuple[str, ...]:
    info = credentials.info
    secret = str(info.get("private_key") or info.get("refresh_token") or "")
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return (credentials.kind, credentials.principal, digest, project, api_endpoint)


def _copy_of(template: Any) -> Any:
    """A driver sharing the template's credential, with its own connection state: no HTTP
    connection yet (libcloud opens one at the first request), its own context, user-agent
    list and volume cache."""
    driver = copy.copy(template)
    connection = copy.copy(template.connection)
    connection.connection = None
    connection.context = {}
    connection.ua = list(template.connection.ua)
    connection.driver = driver
    driver.connection = connection
    driver._ex_volume_dict = {}
    return driver


def _serialise_refresh(credential: Any) -> None:
    """Let one thread at a time renew the shared token: the renewal uses the credential's
    one auth connection, and the others then find the token fresh."""
    from libcloud.common.google import _utcnow

    renew = credential._refresh_token
    lock = threading.Lock()

    def refresh_once() -> None:
        with lock:
            if credential.token_expire_utc_datetime < _utcnow():  # type: ignore[no-untyped-call, unused-ignore]
                renew()

    credential._refresh_token = refresh_once


def _sign_in(credentials: Credentials, project: str, api_endpoint: str) -> Any:
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
