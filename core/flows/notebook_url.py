"""The notebook's URL: shown again, opened in the browser, and the tunnel it needs.

One rule for every command that gives the user a URL (`launch`, `start`, `tunnel`, `open`,
in the foreground or with --detach): the URL is printed on stdout, then the browser opens it
unless --no-browser, and when no browser could be opened a line on stderr says so. The URL
then is all the user needs, so that line is not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import UsageError

if TYPE_CHECKING:
    from orchestrate.core.store.state import InstanceRow

Say = Callable[[str], None]

#: What `status --json` says under `token_in`: the URL it shows has no token on purpose
#: (status output is pasted into issues and chats); this says where to find it.
TOKEN_WHERE = "state database {path}; `orchestrate open {name}` prints the URL with it"

NO_BROWSER_LINE = "no browser could be opened here: open the URL above in yours"


def show_url(url: str, *, browse: bool, say: Say, say_err: Say) -> bool:
    """Print the URL, then open it unless told not to; True when a browser took it."""
    from orchestrate.core.flows.browser import open_browser

    say(url)
    if not browse:
        return False
    if open_browser(url):
        return True
    say_err(NO_BROWSER_LINE)
    return False


def hold_in_foreground(tunnel: Any, url: str, *, browse: bool, say: Say, say_err: Say) -> None:
    """Show the URL and open the browser, then keep the tunnel until Ctrl-C.

    A Ctrl-C while the browser is still being opened ends as one a moment later does: the
    tunnel closes, the instance keeps running, and the command succeeds.
    """
    from orchestrate.core.ssh.tunnel import run_foreground

    try:
        show_url(url, browse=browse, say=say, say_err=say_err)  # the loop says how to close it
    except KeyboardInterrupt:
        tunnel.close()
        return
    run_foreground(tunnel, url)


def local_url(row: InstanceRow) -> str | None:
    """The tunnel's local URL without the token, when this instance's tunnel is alive
    (detached, or held by a foreground command)."""
    from orchestrate.core.flows.background import tunnel_kind

    if row.local_port and tunnel_kind(row) is not None:
        return f"http://localhost:{row.local_port}/"
    return None


def token_where(row: InstanceRow) -> str | None:
    """Where the instance's token is kept, for `status --json` (None: it has none yet)."""
    from orchestrate.core.store.paths import state_db

    if not row.token:
        return None
    return TOKEN_WHERE.format(path=state_db(), name=row.name)


@dataclass(frozen=True)
class Opened:
    """`url` with its token; `started` when a background tunnel had to be started for it."""

    url: str
    started: bool


def ensure_url(runtime: Any, name: str, *, progress: Say) -> Opened:
    """The notebook URL of `name`, starting the background tunnel if none is alive.

    A live tunnel, background or foreground, is reused as it is: restarting it would cut the
    kernels' websockets of a browser tab already open on it.
    """
    from orchestrate.core.flows import background
    from orchestrate.core.flows.launch import url_for
    from orchestrate.core.flows.rows import row_named

    row = row_named(runtime, name)
    if row.status != "running":
        raise UsageError(
            f"{name} is {row.status}, so its notebook is not reachable",
            hint=f"run `orchestrate start {name}`",
        )
    if not row.token:
        raise UsageError(
            f"{name} has no notebook token yet: its launch did not finish",
            hint=f"run `orchestrate launch {name}` again",
        )
    if local_url(row) is not None:
        assert row.local_port is not None
        return Opened(url_for(row.local_port, row.token), started=False)
    wanted = row.local_port or row.launched_profile().port
    progress(f"no tunnel to {name} is open: starting one in the background")
    bound = background.start_detached(name, wanted, explicit=False)
    return Opened(url_for(bound, row.token), started=True)
