"""What ``orchestrate tunnel`` shows in the foreground: one live line, until Ctrl-C.

Kept apart from the forwarder: it only reads `Tunnel.stats` and waits on the tunnel.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # pragma: no cover - types only
    from orchestrate.core.ssh.tunnel import Tunnel, TunnelStats


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


def _human_duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _address(url: str) -> str:
    """``localhost:8899`` from the notebook URL: the line never carries the token (a log of
    the line must hold no secret), and the full URL was printed once above it."""
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


#: Said once when a foreground tunnel opens, by every command that keeps one.
HINT = "tunnel open; Ctrl-C closes it and leaves the instance running"

#: The live line's parts, most important first: on a narrow terminal the last ones go.
_KEEP_ORDER = ("state", "address", "down", "up", "open", "reconnects", "refused", "uptime")


def live_line(stats: TunnelStats, url: str, width: int | None = None) -> str:
    """The one line ``orchestrate tunnel`` keeps rewriting in the foreground.

    Address first, then traffic, then what explains trouble: open connections, reconnects,
    and the state when it is not simply up. Plain ASCII so it survives any terminal and log
    file. With `width`, parts are dropped by importance until the line fits in it (a line
    that wraps cannot be rewritten in place, and stacks copies), and what still does not
    fit is cut.
    """
    parts: dict[str, str] = {
        "address": _address(url),
        "down": f"down {_human_bytes(stats.bytes_down)}",
        "up": f"up {_human_bytes(stats.bytes_up)}",
        "open": f"{stats.active} open / {stats.connections} total",
        "refused": f"refused {stats.refused}" if stats.refused else "",
        "reconnects": f"reconnects {stats.reconnects}",
        "uptime": _human_duration(stats.uptime_s),
        "state": stats.state.upper() if stats.state != "up" else "",
    }
    shown = [name for name in parts if parts[name]]

    def joined() -> str:
        return "  |  ".join(parts[name] for name in shown)

    if width is not None:
        for name in reversed(_KEEP_ORDER):
            if len(joined()) <= width or len(shown) == 1:
                break
            if name in shown:
                shown.remove(name)
        return joined()[:width]
    return joined()


def run_foreground(
    tunnel: Tunnel,
    url: str,
    *,
    out: TextIO | None = None,
    interval_s: float = 1.0,
    log_every_s: float = 60.0,
) -> None:
    """Show `live_line` until Ctrl-C or a final failure; always closes the tunnel.

    On a terminal the line is rewritten in place every ``interval_s``, cut to the terminal's
    width so it never wraps (a wrapped line cannot be rewritten). Into a file or pipe it is
    written when the state or the reconnect count changes and every ``log_every_s``, so a
    log does not grow by a line a second.

    Only the tunnel closes: the instance and the notebook keep running. Re-raises the
    tunnel's `HostError` when it gave up reconnecting, so the CLI prints it and exits
    non-zero.
    """
    import shutil

    stream = out if out is not None else sys.stderr
    tty = stream.isatty()
    stream.write(HINT + "\n")
    last_key: tuple[str, int] | None = None
    last_log = 0.0
    try:
        while True:
            stats = tunnel.stats()
            if tty:
                # One column spare: writing the last column wraps on some terminals.
                width = max(shutil.get_terminal_size().columns - 1, 1)
                stream.write("\r\x1b[2K" + live_line(stats, url, width))
                stream.flush()
            else:
                key = (stats.state, stats.reconnects)
                now = time.monotonic()
                if key != last_key or now - last_log >= log_every_s:
                    stream.write(live_line(stats, url) + "\n")
                    stream.flush()
                    last_key, last_log = key, now
            if tunnel.wait(interval_s):
                break
    except KeyboardInterrupt:
        pass
    finally:
        tunnel.close()
        if tty:
            stream.write("\n")
            stream.flush()
    if tunnel.error is not None:
        raise tunnel.error
