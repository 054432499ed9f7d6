"""A cloud's JSON API over HTTP(S), called the way every provider must call it.

Why in the public API: a small cloud's provider needs no SDK, only requests with a token,
the transient answers (429, 5xx) retried with backoff up to a deadline (`Retry.call`), and
the answers turned into orchestrate's typed errors: 401/403 `AuthError` with the provider's
hint, 404 `NotFound`, an unreachable endpoint `ProviderError`, and any other refusal an
`HttpRefused` that still holds the status and the document, so the provider maps its own
cases (a region that cannot take the plan is a `CapacityError` there) and lets the rest
stand. The standard library does the HTTP, so nothing heavy is imported.

    api = JsonApi("mycloud", options.endpoint, {"Authorization": f"Bearer {token}"})
    node = api.call("POST", "/v1/instances", body, context=f"creating {spec.name}")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import AuthError, NotFound, ProviderError
from orchestrate.core.api.retry import Retry

#: Where common APIs put their message: Linode ``errors[0].reason``, DigitalOcean
#: ``message``, Hetzner ``error.message``, Vultr ``error``.
_MESSAGE_KEYS = ("message", "reason", "error", "errors", "detail")


class HttpRefused(ProviderError):
    """The API answered an HTTP error that has no meaning of its own to orchestrate."""

    def __init__(self, message: str, status: int, document: Any) -> None:
        super().__init__(message)
        self.status = status
        self.document = document


def reason_of(document: Any) -> str:
    """The first message an error document holds, however the cloud nests it."""
    if isinstance(document, str):
        return document
    if isinstance(document, Mapping):
        inner = [document[k] for k in _MESSAGE_KEYS if k in document]
        return reason_of(inner[0]) if inner else ""
    if isinstance(document, list) and document:
        return reason_of(document[0])
    return ""


def token_from(path: str | None, env: Sequence[str], cloud: str, hint: str) -> str:
    """A secret from the file at `path`, else from the first set variable of `env`.

    Profiles name a token's file or variable, never the token: this is the one reader.
    """
    if path:
        try:
            token = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(f"{cloud} token file {path} cannot be read ({exc.strerror})",
                            hint=hint) from None  # fmt: skip
        if not token:
            raise AuthError(f"{cloud} token file {path} is empty", hint=hint)
        return token
    for name in env:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    raise AuthError(f"{cloud}: no API token ({' or '.join(env)} is unset)", hint=hint)


def _transient(exc: Exception) -> bool:
    status = getattr(exc, "code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


@dataclass(frozen=True)
class JsonApi:
    """One cloud's API: `cloud` names it in messages, `auth_hint` says how to get a token."""

    cloud: str
    endpoint: str
    headers: Mapping[str, str]
    auth_hint: str = ""
    retry: Retry = field(default_factory=lambda: Retry(deadline_s=60.0, first_s=0.25, max_s=8.0))
    timeout_s: float = 60.0

    def call(self, method: str, path: str, body: Any = None, *, context: str) -> Any:
        """The decoded JSON answer of one request (``{}`` for an empty one).

        `context` ("creating nb in us-east") ends up in every error's message.
        """
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **self.headers}  # fmt: skip
        request = urllib.request.Request(self.endpoint.rstrip("/") + path, data, headers,
                                         method=method)  # fmt: skip

        def send() -> Any:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return json.loads(answer.read() or b"{}")

        try:
            return self.retry.call(send, retry_if=_transient)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code, exc.read(), context) from None
        except (OSError, ValueError) as exc:
            raise ProviderError(
                f"{self.cloud} API unreachable while {context}: {exc}",
                hint="check the network or the endpoint option",
            ) from None

    def _refused(self, status: int, raw: bytes, context: str) -> ProviderError:
        try:
            document: Any = json.loads(raw)
        except ValueError:
            document = raw.decode("utf-8", "replace")
        reason = " ".join(reason_of(document).split())[:200] or f"HTTP {status}"
        if status in (401, 403):
            return AuthError(
                f"{self.cloud} refused the token while {context}: {reason}", hint=self.auth_hint
            )
        if status == 404:
            return NotFound(f"{self.cloud}: not found while {context}")
        what = f"{self.cloud} refused {context} (HTTP {status}): {reason}"
        return HttpRefused(what, status, document)
