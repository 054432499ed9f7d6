"""One authenticated Compute API session: JSON requests with bounded retries, and operations.

Requests go through the driver's own connection (libcloud's auth, JSON and error parsing),
with bodies built by `resources`, so what ``--dry-run`` prints is byte for byte what is sent.

Retries: 5xx, 429, rate-limit reasons and connection errors are retried with exponential
backoff until `retry_deadline_s` has passed since the first try, then mapped to a core error.
A stockout (which GCE may also answer with a 503) is never retried here: the failover loop
moves to the next zone instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from orchestrate.core.api.errors import ProviderError
from orchestrate.core.api.retry import Retry
from orchestrate.plugins.providers.gcp.errors import is_retryable, map_error

T = TypeVar("T")
Sleep = Callable[[float], None]

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0


class GceApi:
    """Requests against one project through one connected `GCENodeDriver`."""

    def __init__(
        self,
        driver: Any,
        project: str,
        *,
        retry_deadline_s: float = 60.0,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.driver = driver
        self.project = project
        self.retry_deadline_s = retry_deadline_s
        self._sleep = sleep

    def call(self, fn: Callable[[], T], *, context: str, zone: str | None = None) -> T:
        """Run `fn` (one libcloud call), retrying transient failures until the deadline."""
        return retrying(
            fn,
            context=context,
            project=self.project,
            zone=zone,
            deadline_s=self.retry_deadline_s,
            sleep=self._sleep,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        context: str,
        zone: str | None = None,
    ) -> dict[str, Any]:
        """``path`` is relative to the project (``/zones/...``) or a full selfLink URL."""
        connection = self.driver.connection

        def send() -> dict[str, Any]:
            response = connection.request(
                path,
                method=method,
                data=dict(body) if body is not None else None,
                params=dict(params) if params else None,
            )
            result: dict[str, Any] = response.object if isinstance(response.object, dict) else {}
            return result

        return self.call(send, context=context, zone=zone)

    def pages(
        self, path: str, params: Mapping[str, str] | None = None, *, context: str
    ) -> Iterator[dict[str, Any]]:
        """Every page of a list or aggregated list, following ``nextPageToken``."""
        query = dict(params or {})
        while True:
            page = self.request("GET", path, params=query, context=context)
            yield page
            token = page.get("nextPageToken")
            if not token:
                return
            query["pageToken"] = str(token)

    def wait(
        self, operation: Mapping[str, Any], *, context: str, zone: str | None, timeout_s: float
    ) -> dict[str, Any]:
        """Wait for an operation to be DONE. An operation that ends in error raises the mapped
        core error (libcloud's response parser raises on its ``error`` field).

        Uses the API's ``operations/NAME/wait``, which answers as soon as the operation is
        done (or after about two minutes): one request instead of a GET per poll interval,
        and no overshoot past the moment it finished (polling cost about 6 GETs and 0.3 s of
        overshoot per 1 s operation)."""
        current = dict(operation)
        deadline = time.monotonic() + timeout_s
        while current.get("status") != "DONE":
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"gcp: {context} did not finish within {timeout_s:.0f}s",
                    hint=f"see the operation {current.get('name', '?')} in the Cloud console",
                )
            current = self.request(
                "POST", f"{current['selfLink']}/wait", context=context, zone=zone
            )
        return current


def retrying(
    fn: Callable[[], T],
    *,
    context: str,
    project: str,
    zone: str | None,
    deadline_s: float,
    sleep: Sleep,
) -> T:
    """Call `fn`; retry transient errors with backoff until `deadline_s`; map the rest."""
    policy = Retry(deadline_s=deadline_s, first_s=FIRST_BACKOFF_S, max_s=MAX_BACKOFF_S, sleep=sleep)
    try:
        return policy.call(fn, retry_if=is_retryable)
    except Exception as exc:
        raise map_error(exc, context=context, project=project, zone=zone) from exc
