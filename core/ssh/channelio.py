"""One command on one SSH channel: send it without waiting, then read its output.

What `Session.run` does once it has a channel, apart from the connection itself: the exec
request pipelined (sent without waiting for sshd's reply, through paramiko's private sender
in `compat`), then stdout and stderr read as they come, line by line for live progress.
"""

from __future__ import annotations

import select
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrate.core.api import compat
from orchestrate.core.api.errors import HostError

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko

#: on_line(line, stream) with stream "stdout" or "stderr", for live command output.
OnLine = Callable[[str, str], None]


@dataclass(frozen=True)
class CommandResult:
    """Exit status (-1 when the connection closed without one) and the whole output."""

    rc: int
    stdout: str
    stderr: str


#: Transports that carried an exec request of ours, with the quickest session-channel open
#: timed on each (None: none timed). sshd sets TCP_NODELAY on a connection's first exec,
#: and a channel open is one round trip: a tunnel over such a transport needs neither its
#: own nudge nor its own timing exchanges (`tunnel_link.LinkCare.nudge_once`).
_EXECS: weakref.WeakKeyDictionary[Any, float | None] = weakref.WeakKeyDictionary()
_EXECS_LOCK = threading.Lock()


def note_exec(transport: Any, open_s: float | None = None) -> None:
    """Record an exec sent on `transport`, and how long its channel took to open if timed."""
    with _EXECS_LOCK:
        known = _EXECS.get(transport)
        times = [t for t in (known, open_s) if t is not None]
        _EXECS[transport] = min(times) if times else None


def exec_seen(transport: Any) -> tuple[bool, float | None]:
    """Whether an exec of ours ran on `transport`, and its quickest timed channel open."""
    with _EXECS_LOCK:
        if transport not in _EXECS:
            return False, None
        return True, _EXECS[transport]


def exec_pipelined(chan: paramiko.Channel, command: str) -> None:
    """Send the exec request without waiting for sshd's reply (paramiko's exec_command
    waits a round trip for it). A refusal still closes the channel, which `collect` sees as
    a command that ended without output or exit status."""
    import paramiko
    from paramiko.common import cMSG_CHANNEL_REQUEST

    message = paramiko.Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(chan.remote_chanid)
    message.add_string("exec")
    message.add_boolean(True)
    message.add_string(command)
    if not compat.send_without_reply(chan, message):
        chan.exec_command(command)


def collect(
    chan: paramiko.Channel,
    timeout: float | None,
    on_line: OnLine | None,
    command: str,
    done_when: Callable[[str], bool] | None = None,
) -> CommandResult:
    """Read a channel's stdout and stderr until EOF (or `done_when`), feeding `on_line`,
    within `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out = bytearray()
    err = bytearray()
    partial = {"stdout": bytearray(), "stderr": bytearray()}

    def feed(data: bytes, stream: str) -> None:
        (out if stream == "stdout" else err).extend(data)
        if on_line is None:
            return
        buf = partial[stream]
        buf.extend(data)
        *lines, rest = bytes(buf).split(b"\n")
        buf[:] = rest
        for line in lines:
            on_line(line.decode("utf-8", "replace").rstrip("\r"), stream)

    finished_early = False
    while True:
        got = False
        if chan.recv_ready():
            feed(chan.recv(65536), "stdout")
            got = True
            if done_when is not None and done_when(out.decode("utf-8", "replace")):
                finished_early = True
                break
        if chan.recv_stderr_ready():
            feed(chan.recv_stderr(65536), "stderr")
            got = True
        if got:
            continue
        if chan.eof_received or chan.closed:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise HostError(
                f"remote command did not finish within {timeout:.0f} s: {command[:80]!r}"
            )
        # The channel's fileno is a pipe paramiko signals on new data, EOF and close.
        select.select([chan], [], [], 0.5)
    # EOF comes after all data (one transport thread feeds both in order): drain what is left.
    while chan.recv_ready() or chan.recv_stderr_ready():
        if chan.recv_ready():
            feed(chan.recv(65536), "stdout")
        if chan.recv_stderr_ready():
            feed(chan.recv_stderr(65536), "stderr")
    if on_line is not None:
        for stream, buf in partial.items():
            if buf:
                on_line(bytes(buf).decode("utf-8", "replace").rstrip("\r"), stream)
    if finished_early:
        rc = chan.exit_status if chan.status_event.is_set() else 0
    else:
        # exit-status follows EOF; a connection that died (reboot) closes without one.
        chan.status_event.wait(10)
        rc = chan.exit_status if chan.status_event.is_set() else -1
    return CommandResult(
        rc=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
    )


class Exchange:
    """One command whose input is written after part of its output was read: the host
    probe, then the stage the runner plans from the facts, in one exec (`Session.exchange`).
    The command's first output must not wait for its stdin."""

    def __init__(self, chan: paramiko.Channel, command: str) -> None:
        self.chan = chan
        self.command = command

    def read_until(self, done_when: Callable[[str], bool], timeout: float | None) -> CommandResult:
        """The output up to where `done_when` holds (or the whole, if the command ends first)."""
        return collect(self.chan, timeout, None, self.command, done_when)

    def finish(
        self,
        stdin: str | bytes | None,
        timeout: float | None,
        on_line: OnLine | None = None,
        done_when: Callable[[str], bool] | None = None,
    ) -> CommandResult:
        """Send `stdin` and EOF, then read the rest of the output and the exit status (or
        up to where `done_when` holds)."""
        if stdin:
            self.chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
        self.chan.shutdown_write()
        return collect(self.chan, timeout, on_line, self.command, done_when)
