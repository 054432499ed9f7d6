"""Asking before something costly or destructive, the same way for every command.

Without a terminal there is nobody to ask: a script gets one line saying to pass --yes,
never a prompt that reads end-of-file and ends as "interrupted".
"""

from __future__ import annotations

import sys

import typer
from orchestrate.core.api.errors import UsageError


def confirm_or_refuse(question: str, *, refused: str, no_terminal_hint: str) -> None:
    """Ask `question` (default no); raise a one-line usage error when not confirmed.

    `refused` says what did not happen; `no_terminal_hint` how to go on without a terminal.
    """
    if not sys.stdin.isatty():
        raise UsageError(f"{question} -- no terminal to ask", hint=no_terminal_hint)
    if not typer.confirm(question, default=False):
        raise UsageError(refused, hint="pass --yes to skip asking")
