"""Waiting for Jupyter through the tunnel, and finding its token when an image ignores ours.

The check goes through the local end of the tunnel on purpose: it proves the whole path the
browser will take (tunnel, sshd, docker's port, Jupyter) before the URL is shown. On a host
set up before, where no step ran, the probe's own check on the host (`probe`, "Jupyter's
answer") stands in for it: the same request with the same token, to the port the tunnel
forwards to, only without the tunnel's forward, which every earlier launch used.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable

from orchestrate.core.api.errors import HostError
from orchestrate.core.api.retry import Retry

_TOKEN_IN_LOGS = re.compile(r"[?&]token=([0-9a-zA-Z_-]{16,})")


def status_code(port: int, token: str | None, *, timeout: float = 5.0) -> int | None:
    """HTTP status of /api/status through the tunnel, or None when nothing answers yet."""
    path = "/api/status" + (f"?token={token}" if token else "")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_ready(
    port: int,
    token: str,
    *,
    deadline_s: float = 180.0,
    read_logs: Callable[[], str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Wait until Jupyter answers with our token; return the token that works.

    A 403 with our token means the image chose its own: it is read from the container's
    logs (`read_logs`), as a person would with `docker logs`.
    """
    start = time.monotonic()
    said = False
    codes: list[int | None] = []

    def working_token() -> str | None:
        nonlocal said
        code = status_code(port, token)
        codes.append(code)
        if code == 200:
            return token
        if code == 403 and read_logs is not None:
            found = _TOKEN_IN_LOGS.findall(read_logs())
            if found and status_code(port, found[-1]) == 200:
                if progress:
                    progress("the image ignored the generated token; using the one it printed")
                return str(found[-1])
        if not said and progress and time.monotonic() - start > 2:
            progress("waiting for jupyter to answer")
            said = True
        return None

    policy = Retry(deadline_s=deadline_s, first_s=0.2, max_s=2.0, factor=1.5)
    working, _ = policy.poll(working_token, lambda found: found is not None)
    if working is None:
        raise HostError(
            f"jupyter did not answer through the tunnel within {deadline_s:.0f}s"
            f" (last status: {codes[-1] or 'no answer'})",
            hint="see `orchestrate logs NAME`",
        )
    return working
