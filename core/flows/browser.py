"""Opening the notebook in the user's browser without putting its token on a command line.

`webbrowser.open(URL)` starts a browser process with the URL as an argument, which every
user of the machine can read with `ps`; the URL carries the notebook's token. As Jupyter
does, the browser is given instead a local HTML file, readable by the user alone, that
redirects to the URL: only the file's path is on the command line.
"""

from __future__ import annotations

import html
import json
import webbrowser
from pathlib import Path

from orchestrate.core.store.paths import private_dir, state_dir, write_private

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={attr}">
<title>Opening the notebook</title></head>
<body><p>Opening <a href="{attr}">the notebook</a>...</p>
<script>window.location.replace({js});</script>
</body></html>
"""


def redirect_file(url: str) -> Path:
    """A 0600 page that sends the browser to `url`, in orchestrate's private state folder.

    One file per local port, rewritten each time, so they do not pile up.
    """
    from urllib.parse import urlsplit

    port = urlsplit(url).port or 0
    script = json.dumps(url).replace("<", "\\u003c")
    page = _PAGE.format(attr=html.escape(url, quote=True), js=script)
    path = private_dir(state_dir() / "browser") / f"open-{port}.html"
    write_private(path, page)
    return path


def open_browser(url: str) -> bool:
    """Open `url` in the user's browser through `redirect_file`; False when no browser is
    available (or the page cannot be written)."""
    try:
        page = redirect_file(url)
        return bool(webbrowser.open(page.as_uri(), new=2))
    except (webbrowser.Error, OSError):
        return False
