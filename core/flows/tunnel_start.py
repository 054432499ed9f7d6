"""Starting a background tunnel process, and what it tells the command that started it.

The process (`background`) talks to its parent over its stdout, one line each:

- ``progress MESSAGE``: a line for the user (waiting for SSH), said by the parent;
- ``probe JSON``: the host probe's result (`{"rc", "stdout", "stderr"}`), when asked for;
- ``ready PORT``: the tunnel listens on PORT and the row names the process;
- ``error JSON``: it failed (`{"kind", "message", "hint", "exit_code", "notes"}`), and exits.

Why the probe goes through it: `launch --detach` on a host set up before needs one SSH
login, not two. An encrypted SSH session cannot be handed to another process, so the
background process, which must hold the connection for days, makes it, runs the probe the
launch sends it (on its stdin, token included: never a command line) before its tunnel's
own start-up traffic, and lends its connection to the launch through its control socket
for anything else (a setup step, a container's logs). The launch keeps printing the lines
and failing with the errors it did when it connected itself.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn

from orchestrate.core.api import errors
from orchestrate.core.api.errors import HostError, OrchestrateError
from orchestrate.core.host.probe import PROBE_TIMEOUT_S

if TYPE_CHECKING:  # pragma: no cover - types only
    from orchestrate.core.ssh.channelio import CommandResult

MODULE = "orchestrate.core.flows.background"
#: How long a launch waits for the probe's result: the process's own wait for SSH (a host
#: just started) and the probe's time limit, with room for its start-up.
PROBE_WAIT_S = 300.0 + PROBE_TIMEOUT_S + 30.0


def encode_error(exc: OrchestrateError) -> str:
    """An error as the ``error`` line's JSON, for the parent to raise again as it was."""
    return json.dumps(
        {
            "kind": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "exit_code": exc.exit_code,
            "notes": exc.notes,
        }
    )


def decode_error(text: str) -> OrchestrateError | None:
    """The error an ``error`` line's JSON describes (its class when it is one of the API's
    simple ones, else a `HostError` with its exit status), or None if it is no such JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    kind = getattr(errors, str(data.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, OrchestrateError)):
        kind = HostError
    hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    try:
        exc = kind(data["message"], hint=hint)
    except TypeError:  # a class with fields of its own (a zone, a step): the line is enough
        exc = HostError(data["message"], hint=hint)
    code = data.get("exit_code")
    if isinstance(code, int) and code != exc.exit_code:
        exc.exit_code = code
    exc.notes.extend(str(note) for note in data.get("notes") or [])
    return exc


class Say:
    """The background process's side: one line at a time to the parent, which may be gone
    (killed after starting it): then the process serves on, as a detached tunnel was asked
    for, and says nothing more."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.gone = False

    def __call__(self, kind: str, text: str) -> None:
        if self.gone:
            return
        try:
            self.out.write(f"{kind} {' '.join(text.splitlines())}\n")
            self.out.flush()
        except BrokenPipeError:
            self.gone = True


class DetachedStart:
    """A background tunnel process on its way up: `wait` for its port, or `cancel` it.

    Split from `start_detached` so that `launch --detach` on a host set up before can start
    the process right after the cloud step. With `probe` (the command and its stdin) the
    process also runs the host probe first and `probed` returns its result: the launch's
    only SSH login is then the process's.
    """

    def __init__(
        self, name: str, port: int, *, explicit: bool, probe: tuple[str, str] | None = None
    ) -> None:
        from orchestrate.core.store.paths import private_dir, state_dir

        self.name = name
        self.log = private_dir(state_dir() / "logs") / f"{name}.tunnel.log"
        self.asked_probe = probe is not None
        self._buffer = b""
        args = [sys.executable, "-m", MODULE, name, str(port)]
        if explicit:
            args.append("--explicit")
        if probe is not None:
            args.append("--probe")
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if probe is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C in the terminal must not end the tunnel
            )
        if probe is not None:
            assert self.proc.stdin is not None
            command, stdin = probe
            try:
                self.proc.stdin.write(
                    (json.dumps({"command": command, "stdin": stdin}) + "\n").encode()
                )
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # it died at once: its error line (or its silence) says why

    def _line(self, deadline: float) -> str:
        """The next whole line, or "" at EOF or when `deadline` passed."""
        stdout = self.proc.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            ready, _, _ = select.select([stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    return ""
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace").strip()

    def probed(
        self, progress: Callable[[str], None], timeout_s: float = PROBE_WAIT_S
    ) -> CommandResult:
        """The probe's result, once the process has connected and run it; its progress
        lines go to `progress` meanwhile. Its failure is raised as it was raised there."""
        from orchestrate.core.ssh.channelio import CommandResult

        deadline = time.monotonic() + timeout_s
        while True:
            line = self._line(deadline)
            kind, _, rest = line.partition(" ")
            if kind == "progress":
                progress(rest)
                continue
            if kind == "probe":
                data: dict[str, Any] = json.loads(rest)
                return CommandResult(int(data["rc"]), str(data["stdout"]), str(data["stderr"]))
            self._failed(line)

    def wait(self, timeout_s: float = 60.0) -> int:
        """The local port the tunnel bound, once it says it is ready."""
        line = self._line(time.monotonic() + timeout_s)
        if line.startswith("ready "):
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            return int(line.split()[1])
        self._failed(line)

    def _failed(self, text: str) -> NoReturn:
        self.cancel()
        if text.startswith("error "):
            error = decode_error(text.removeprefix("error "))
            if error is not None:
                if not self.asked_probe:
                    # `tunnel --detach`: the tunnel is what failed, and its log says more.
                    error.message = f"the background tunnel for {self.name} did not start: " + (
                        error.message
                    )
                    error.hint = "; ".join(h for h in (error.hint, f"see {self.log}") if h)
                raise error
        tail = (
            self.log.read_text(errors="replace").strip().splitlines()[-1:]
            if self.log.exists()
            else []
        )
        reason = text.removeprefix("error ") or (tail[0] if tail else "no answer")
        raise HostError(
            f"the background tunnel for {self.name} did not start: {reason}", hint=f"see {self.log}"
        )

    def cancel(self) -> None:
        """End the process (the launch that started it failed); it clears its own row."""
        from orchestrate.core.flows.processes import end_child

        end_child(self.proc)
