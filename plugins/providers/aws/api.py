"""One signed EC2 Query API session: actions with bounded retries, and namespace-free XML.

Requests go through the ``EC2NodeDriver``'s own connection (libcloud's Signature V4 signing,
XML parsing and error parsing) with parameters built by `resources`, so what ``--dry-run``
prints is exactly what is sent.

Responses are read with ``{*}`` namespace wildcards instead of libcloud's object parsers: those
look for the namespace of libcloud's pinned API version, with a trailing slash, while other
EC2-compatible endpoints answer with another namespace (moto writes none after the version),
and then every list silently comes back empty.

Retries: throttling, 5xx and dropped connections are retried with exponential backoff until
`retry_deadline_s` has passed since the first try, then mapped to a core error. A capacity
error is never retried here: the failover loop moves to the next zone instead.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from orchestrate.core.api.retry import Retry
from orchestrate.plugins.providers.aws.errors import is_retryable, map_error

Sleep = Callable[[float], None]
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0


def child(element: ET.Element | None, path: str) -> ET.Element | None:
    """``child(e, "instanceState/name")`` in any XML namespace."""
    if element is None:
        return None
    return element.find("/".join(f"{{*}}{part}" for part in path.split("/")))


def text(element: ET.Element | None, path: str) -> str | None:
    found = child(element, path)
    return found.text if found is not None and found.text is not None else None


def items(element: ET.Element | None, path: str) -> list[ET.Element]:
    """The ``<item>`` children of the set at `path` (``reservationSet``, ``tagSet`` ...)."""
    found = child(element, path)
    return [] if found is None else found.findall("{*}item")


def tags_of(element: ET.Element | None) -> dict[str, str]:
    return {text(item, "key") or "": text(item, "value") or "" for item in items(element, "tagSet")}


class Ec2Api:
    """Actions against one region through one `EC2NodeDriver`."""

    def __init__(
        self,
        driver: Any,
        region: str,
        *,
        retry_deadline_s: float = 60.0,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.driver = driver
        self.region = region
        self.retry_deadline_s = retry_deadline_s
        self._sleep = sleep
        # libcloud's connection keeps the request being signed in attributes (action, method,
        # data): two threads on one connection (`status` refreshes rows in parallel) would
        # sign each other's requests. One request at a time per session.
        self._lock = threading.Lock()

    def call(
        self,
        action: str,
        params: Mapping[str, str] | None = None,
        *,
        context: str,
        zone: str | None = None,
        instance_type: str | None = None,
        spot: bool = False,
    ) -> ET.Element:
        """Send one action; the parsed XML response, or a core error."""
        query = {"Action": action, **(params or {})}

        def send() -> ET.Element:
            with self._lock:
                response = self.driver.connection.request("/", params=dict(query))
            body = response.object
            if isinstance(body, ET.Element):
                return body
            return ET.fromstring(response.body or "<empty/>")

        policy = Retry(
            deadline_s=self.retry_deadline_s,
            first_s=FIRST_BACKOFF_S,
            max_s=MAX_BACKOFF_S,
            sleep=self._sleep,
        )
        try:
            return policy.call(send, retry_if=is_retryable)
        except Exception as exc:
            raise map_error(
                exc,
                context=context,
                region=self.region,
                zone=zone,
                instance_type=instance_type,
                spot=spot,
            ) from exc

    def pages(
        self, action: str, params: Mapping[str, str] | None = None, *, context: str
    ) -> Iterator[ET.Element]:
        """Every page of a Describe action, following ``nextToken``."""
        query = dict(params or {})
        while True:
            page = self.call(action, query, context=context)
            yield page
            token = text(page, "nextToken")
            if not token:
                return
            query["NextToken"] = token
