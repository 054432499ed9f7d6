"""A command run on a real pseudo-terminal, as a user runs it in theirs.

Ctrl-C is tested the way it happens: the test writes the terminal's interrupt character
(^C) to the pty, and the kernel's line discipline sends SIGINT to the terminal's foreground
process group (the command, and OpenSSH when it was exec'd). A program that puts the
terminal in raw mode (OpenSSH with a remote pty) gets the byte instead and forwards it, as
it does for a user.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

#: What a terminal sends for Ctrl-C (VINTR): the line discipline turns it into SIGINT.
CTRL_C = b"\x03"


def _make_controlling_terminal() -> None:
    """In the child, after `setsid`: the pty on stdin becomes its controlling terminal, so
    its foreground process group receives the terminal's signals."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`argv` running on a fresh pty of `columns` x `rows`; everything it writes (stdout and
    stderr, as on a real terminal) collects in `output`."""

    def __init__(
        self, argv: list[str], *, cwd: Path, env: dict[str, str], columns: int = 120
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.master = master
        self.output = bytearray()
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=_make_controlling_terminal,
            )
        finally:
            os.close(slave)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")

    def _pump(self, timeout: float) -> bool | None:
        """Read what is there within `timeout`: True when something came, None when nothing
        did, False once the pty has no writer left."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the pty's other end has exited
            return False
        if not chunk:
            return False
        self.output.extend(chunk)
        return True

    def expect(self, pattern: str, *, timeout: float = 60) -> re.Match[str]:
        """Wait for `pattern` (a regex) in the output; fail with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text, re.M)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (self._pump(min(left, 0.2)) is False and self.proc.poll() is not None):
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s in:\n{self.text}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def interrupt(self, timeout: float = 30) -> tuple[int, list[str]]:
        """Type Ctrl-C and wait for the exit: the status, and the lines the command wrote
        after the ^C (the terminal's own echo of it aside). What the command was still
        writing is read first, so it is not taken for what the ^C made it say."""
        while self._pump(0.5):
            pass
        before = len(self.output)
        self.send(CTRL_C)
        code = self.wait(timeout)
        after = self.output[before:].decode("utf-8", "replace").replace("\r\n", "\n")
        lines = [line.replace("^C", "").strip() for line in after.splitlines()]
        return code, [line for line in lines if line]

    def wait(self, timeout: float = 60) -> int:
        """The exit status, reading the output meanwhile so the command never blocks on a
        full pty."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout:.0f} s:\n{self.text}")
            self._pump(0.1)
        while self._pump(0.2):
            pass  # what it wrote just before exiting
        return int(self.proc.returncode)

    def close(self) -> None:
        """End the command if it still runs (a failed test), by its pid, and free the pty."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
