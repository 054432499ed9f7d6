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


def live_line(stats: TunnelStats, url: str) -> str:
    """The one line ``orchestrate tunnel`` keeps rewriting in the foreground.

    URL first (what the user copies), then traffic, then what explains trouble:
    open connections, reconnects, and the state when it is not simply up. Plain ASCII so it
    survives any terminal and log file.
    """
    parts = [
        url,
        f"down {_human_bytes(stats.bytes_down)}",
        f"up {_human_bytes(stats.bytes_up)}",
        f"{stats.active} open / {stats.connections} total",
        f"reconnects {stats.reconnects}",
        _human_duration(stats.uptime_s),
    ]
    if stats.refused:
        parts.insert(4, f"refused {stats.refused}")
    if stats.state != "up":
        parts.append(stats.state.upper())
    return "  |  ".join(parts)


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
    last_key: tuple[str, int] | None = None
    last_log = 0.0
    try:
        while True:
            stats = tunnel.stats()
            line = live_line(stats, url)
            if tty:
                width = shutil.get_terminal_size().columns
                stream.write("\r\x1b[2K" + line[: max(width - 1, len(url))])
                stream.flush()
            else:
                key = (stats.state, stats.reconnects)
                now = time.monotonic()
                if key != last_key or now - last_log >= log_every_s:
                    stream.write(line + "\n")
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
