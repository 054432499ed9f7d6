"""libcloud's Linode v4 driver, built on first use, and Linode's errors in orchestrate's terms.

libcloud is imported inside `build_driver` only: orchestrate imports every plugin to list
providers, and ``orchestrate --help`` must not pay for a cloud SDK.

Errors: libcloud raises ``InvalidCredsError`` for 401/403 and otherwise a ``LibcloudError``
whose text is Linode's first error as ``"<reason>[-<field>] Status code: <n>."``. They become:

- 401/403 -> `AuthError`; 404 -> `NotFound`;
- 429 and 5xx -> retried with backoff, then `ProviderError`;
- a create refused (400) on its ``region`` or ``type`` field -> `CapacityError` for that
  region: that region cannot take this plan now, the failover loop tries the next one;
- anything else -> `ProviderError` with Linode's reason.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from orchestrate.core.api.errors import (
    AuthError,
    CapacityError,
    NotFound,
    OrchestrateError,
    ProviderError,
)
from orchestrate.core.api.retry import Retry

T = TypeVar("T")
TOKEN_ENV = ("LINODE_TOKEN", "LINODE_CLI_TOKEN")
TOKEN_HINT = (
    "create a personal access token (Linodes: read/write) at "
    "https://cloud.linode.com/profile/tokens, then export LINODE_TOKEN or point token_file at "
    "a file holding it"
)
_MESSAGE = re.compile(r"^(?P<reason>.*?)(?:-(?P<field>[a-z_.]+))? Status code: (?P<code>\d+)\.?$")


def load_token(token_file: str | None) -> str:
    """The API token from `token_file`, else from the environment; `AuthError` if none."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(
                f"linode token file {path} cannot be read ({exc.strerror})", hint=TOKEN_HINT
            ) from None
        if not token:
            raise AuthError(f"linode token file {path} is empty", hint=TOKEN_HINT)
        return token
    for name in TOKEN_ENV:
        token = os.environ.get(name, "").strip()
        if token:
            return token
    raise AuthError("linode: no API token", hint=TOKEN_HINT)


def build_driver(token: str, api_endpoint: str) -> Any:
    """A ``LinodeNodeDriverV4``; `api_endpoint` may point at another host (a test server)."""
    from libcloud.compute.drivers.linode import LinodeNodeDriver

    parts = urlsplit(api_endpoint)
    secure = parts.scheme == "https"
    cls: Any = LinodeNodeDriver
    return cls(
        token,
        api_version="4.0",
        secure=secure,
        host=parts.hostname,
        port=parts.port or (443 if secure else 80),
        timeout=60,
    )


def parts(exc: BaseException) -> tuple[int | None, str, str | None]:
    """(HTTP status, Linode's reason, the field it names) of a libcloud exception."""
    text = str(getattr(exc, "value", None) or exc).strip()
    if type(exc).__name__ == "InvalidCredsError":
        return 401, text, None
    match = _MESSAGE.match(text)
    if match:
        return int(match.group("code")), match.group("reason"), match.group("field")
    code = getattr(exc, "code", None) or getattr(exc, "http_code", None)
    return (code if isinstance(code, int) else None), text, None


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, OrchestrateError):
        return False
    status, _, _ = parts(exc)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, OSError)


def map_error(exc: BaseException, *, context: str, region: str | None = None) -> OrchestrateError:
    """The orchestrate error for a failed call; `region` is set while creating there."""
    if isinstance(exc, OrchestrateError):
        return exc
    status, reason, field = parts(exc)
    if status in (401, 403):
        return AuthError(f"linode refused the token while {context}: {reason}", hint=TOKEN_HINT)
    if status == 404:
        return NotFound(f"linode: not found while {context}")
    if status == 400 and region is not None and field in ("region", "type"):
        return CapacityError(f"linode {region} cannot take this plan now: {reason}", zone=region)
    if status is None and isinstance(exc, OSError):
        return ProviderError(
            f"linode API unreachable while {context}: {exc}",
            hint="check the network or api_endpoint",
        )
    label = f"HTTP {status}" if status else type(exc).__name__
    return ProviderError(f"linode error while {context} ({label}): {reason}")


class LinodeApi:
    """One driver, and every call through `call`: retried with orchestrate's `Retry`, then
    turned into orchestrate's errors."""

    def __init__(self, driver: Any, retry: Retry) -> None:
        self.driver = driver
        self.retry = retry
        # libcloud's connection holds the request in flight in attributes, so threads (core's
        # `status` refreshes rows in parallel) take turns on one driver.
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T], *, context: str, region: str | None = None) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        try:
            return self.retry.call(locked, retry_if=is_retryable)
        except Exception as exc:
            raise map_error(exc, context=context, region=region) from exc
