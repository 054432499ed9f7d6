"""A long remote command that Ctrl-C ends on the host too, not only here.

A command on an SSH channel without a pty (`logs --follow`'s `docker logs -f`) is not told
when the client goes away: it runs on until it next writes, which for a quiet notebook may
be never. So the command first says its process group (sshd starts each command as a
session leader), and a Ctrl-C here sends that group SIGTERM over a second command before the
interrupt goes on. It works the same over a direct connection and a shared one
(`core/ssh/control`), which has no channel to close.
"""

from __future__ import annotations

import contextlib
import shlex
from typing import Any

from orchestrate.core.ssh.channelio import CommandResult, OnLine

#: The first line the wrapped command prints: the process group to end on Ctrl-C.
_MARK = "orchestrate-process-group "

#: How long the SIGTERM to the group may take before the interrupt goes on anyway.
KILL_TIMEOUT_S = 10.0


def run_until_interrupted(session: Any, command: str, on_line: OnLine) -> CommandResult:
    """`session.run(command)`, feeding `on_line`; on Ctrl-C the command's process group on
    the host gets SIGTERM, then KeyboardInterrupt goes on to the caller."""
    group: list[int] = []

    def first_line(line: str, stream: str) -> None:
        if not group and stream == "stdout" and line.startswith(_MARK):
            group.append(int(line.removeprefix(_MARK)))
            return
        on_line(line, stream)

    wrapped = f'echo "{_MARK}$$"; exec sh -c {shlex.quote(command)}'
    try:
        return session.run(wrapped, on_line=first_line)  # type: ignore[no-any-return]
    except KeyboardInterrupt:
        if group:
            from orchestrate.core.api.errors import HostError

            # A HostError: the connection is gone, and with it the command's channel.
            with contextlib.suppress(HostError):
                session.run(f"kill -TERM -- -{group[0]} 2>/dev/null", timeout=KILL_TIMEOUT_S)
        raise
