"""Where the SSH library's own log lines go: the instance's host log, not the terminal.

paramiko logs transport trouble ("Socket exception: Connection reset by peer") at ERROR,
and with no handler configured Python prints such records on stderr, in the middle of the
tunnel's live line. They are kept in the per-host log instead; `--debug` also shows them.
This module imports nothing heavy: the CLI sets `SHOW` before any session exists.
"""

from __future__ import annotations

import logging

from orchestrate.core.store.paths import host_log

#: Set by `orchestrate --debug`: library records also go to stderr.
SHOW = False
LIBRARIES = ("paramiko",)

_routed: set[str] = set()


def route(name: str | None) -> None:
    """Send the libraries' records to `name`'s host log (once per name and process).

    A process talks to one instance's host at a time (`status` over many rows reads none),
    so the records of a process belong to the host log of the session it opened.
    """
    for library in LIBRARIES:
        logger = logging.getLogger(library)
        shown = any(getattr(h, "_orchestrate_stderr", False) for h in logger.handlers)
        if SHOW and not shown:
            handler = logging.StreamHandler()
            handler._orchestrate_stderr = True  # type: ignore[attr-defined]
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        logger.propagate = False  # never Python's last-resort printer on stderr
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        if name and name not in _routed:
            _routed.add(name)
            to_file = logging.FileHandler(host_log(name), encoding="utf-8")
            to_file.setFormatter(
                logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s")
            )
            logger.addHandler(to_file)

