"""Binding the local end of the tunnel: a busy port moves on, unless the user chose it.

The notebook URL a user bookmarks says ``127.0.0.1:8899``. When that port is taken (a second
tunnel, another notebook), silently moving to 8900 is what they want only if they did not ask
for 8899 themselves: with ``--port`` given explicitly, a busy port is a clear error instead,
so a script that depends on the port never talks to something else.
"""

from __future__ import annotations

import errno
import socket

from orchestrate.core.api.errors import UsageError

#: How many consecutive ports a non-explicit bind tries before giving up (8899 ... 8918).
DEFAULT_PORT_TRIES = 20

_BUSY = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def bind_listener(
    host: str,
    port: int,
    *,
    explicit: bool,
    tries: int = DEFAULT_PORT_TRIES,
    backlog: int = 128,
) -> socket.socket:
    """Return a listening TCP socket on ``host`` at ``port`` or, if allowed, a later free one.

    ``port`` 0 asks the kernel for any free port (tests). With ``explicit`` the first failure
    raises `UsageError`; otherwise up to ``tries`` consecutive ports are tried. SO_REUSEADDR
    is set so a tunnel restarted right after another one closed can take the port back while
    old connections sit in TIME_WAIT; Linux still refuses it while anything *listens* there,
    which is the "busy" we want to detect.
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"local port {port} is not a port number; pass --port between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    attempts = 1 if explicit or port == 0 else max(1, min(tries, 65536 - port))
    last: OSError | None = None
    for candidate in range(port, port + attempts):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            if exc.errno not in _BUSY:
                raise UsageError(
                    f"cannot listen on {host}:{candidate} ({_reason(exc)})",
                    hint="check the bind address",
                ) from exc
            last = exc
            continue
        return sock
    reason = _reason(last) if last is not None else "unknown"
    if attempts == 1:
        raise UsageError(
            f"local port {port} is busy ({reason}); pass another --port or free it"
        ) from last
    raise UsageError(
        f"local ports {port}-{port + attempts - 1} are all busy ({reason}); "
        "pass a free one with --port"
    ) from last


def is_port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` right now (a hint only: it can change)."""
    try:
        bind_listener(host, port, explicit=True).close()
    except UsageError:
        return False
    return True


def _reason(exc: OSError) -> str:
    """The OS's words for a bind failure, lowercased to fit the one-line error style."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
