"""A live SSH connection lent to other commands through a local control socket.

A detached tunnel already holds an authenticated, host-key-pinned connection to the host.
A `launch`, `status NAME` or `logs` that runs while it lives asks it to run their commands
instead of paying a TCP connect, a key exchange and an authentication (about six round
trips on a real link) of their own, as OpenSSH's ControlMaster does.

Trust: the socket lives in the private state dir (0700) and is itself 0600, and the server
also refuses any peer whose uid is not its own (SO_PEERCRED). It serves only the one host it
is connected to, and says which on each connection (address, port, user, pinned host key):
the client uses it only when that matches its state row, so a host key forgotten or
re-pinned since the tunnel started sends the client back to a direct, pinned connect.

Wire format (a Unix stream socket, one request per connection): the server writes one JSON
line (the hello); the client writes one JSON line (`{"command", "stdin", "timeout"}` or
`{"op": "active"}`), then reads frames: a kind byte (``o`` stdout line, ``e`` stderr line,
``x`` exit status), a 4-byte big-endian length and the payload. Output goes line by line,
as `Session.run`'s `on_line` gives it, so `logs --follow` streams.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import HostError
from orchestrate.core.ssh.channelio import CommandResult, OnLine

#: A Unix socket path longer than this cannot be bound (sun_path is 108 bytes with its NUL).
MAX_PATH_BYTES = 107
_HEADER = struct.Struct(">cI")
#: How long a client waits for the server's hello: it is local, so a silent server is a
#: stuck one and the direct connect is better.
HELLO_TIMEOUT_S = 2.0


def usable_path(path: Path) -> bool:
    """Whether `path` can name a Unix socket (a deep ORCHESTRATE_HOME may make it too long)."""
    return len(os.fsencode(path)) <= MAX_PATH_BYTES


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the control socket closed")
        data.extend(chunk)
    return bytes(data)


def _read_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("the control socket closed")
        data.extend(chunk)
        if len(data) > limit:
            raise ValueError("control line too long")
    return bytes(data)


class ControlServer:
    """Serves `session`'s connection on a Unix socket at `path` until `close`.

    `hello` is what each client is told first (the host, its pinned key, the tunnel's
    ports); `session` is core's Session, whose `run` uses its current transport, so the
    server keeps working after the tunnel reconnected.
    """

    def __init__(self, session: Any, path: Path, hello: dict[str, Any]) -> None:
        self.session = session
        self.path = path
        self.hello = (json.dumps(hello, sort_keys=True) + "\n").encode()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a tunnel that was killed
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no moment where another user could connect
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self._closing = threading.Event()
        self._spare_lock = threading.Lock()
        self._spare: Any = None
        self._refill()
        self._thread = threading.Thread(target=self._accept_loop, name="control", daemon=True)
        self._thread.start()

    def _refill(self) -> None:
        """Open the next command's session channel ahead, in the background: a command then
        costs one round trip (exec and output) instead of two."""

        def open_one() -> None:
            transport = self.session.transport
            try:
                chan = transport.open_session(timeout=self.session.connect_timeout_s)
            except Exception:  # a dropped link: the next command opens its own
                return
            with self._spare_lock:
                if self._spare is None and not self._closing.is_set():
                    self._spare, chan = chan, None
            if chan is not None:
                chan.close()

        threading.Thread(target=open_one, name="control-spare", daemon=True).start()

    def _take_spare(self) -> Any:
        """The channel opened ahead, when it is still open on the current connection."""
        with self._spare_lock:
            chan, self._spare = self._spare, None
        self._refill()
        if chan is None:
            return None
        if chan.closed or chan.get_transport() is not self.session.transport:
            chan.close()
            return None
        return chan

    def close(self) -> None:
        """Stop serving and remove the socket, so the next client does not try it."""
        self._closing.set()
        with self._spare_lock:
            if self._spare is not None:
                self._spare.close()
                self._spare = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(client,), name="control-client", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                return  # the socket is 0600 already; a root peer of another user still is not us
            try:
                client.sendall(self._hello_now())
                request = json.loads(_read_line(client))
                if request.get("op") == "active":
                    client.sendall(_frame(b"x", b"0" if self.session.active else b"1"))
                    return
                self._run(client, request)
            except (OSError, EOFError, ValueError):
                return  # the client went away (a probe that had what it wanted) or spoke garbage

    def _hello_now(self) -> bytes:
        """The hello, with whether the lent connection is up at this moment. A tunnel whose
        connection dropped (its host powered off by autostop, a reconnect under way) still
        answers here, and a client lent that dead transport would fail; told, it connects
        directly instead."""
        hello = json.loads(self.hello)
        hello["active"] = bool(self.session.active)
        return (json.dumps(hello, sort_keys=True) + "\n").encode()

    def _run(self, client: socket.socket, request: dict[str, Any]) -> None:
        def on_line(line: str, stream: str) -> None:
            kind = b"o" if stream == "stdout" else b"e"
            client.sendall(_frame(kind, line.encode()))

        stdin = request.get("stdin")
        try:
            result = self.session.run(
                str(request["command"]),
                stdin=None if stdin is None else str(stdin).encode("latin-1"),
                timeout=request.get("timeout"),
                on_line=on_line,
                channel=self._take_spare(),
            )
            rc = result.rc
        except HostError as exc:
            client.sendall(_frame(b"e", f"orchestrate: {exc.line()}".encode()))
            rc = -1
        client.sendall(_frame(b"x", str(rc).encode()))


class SharedSession:
    """A session whose commands run on another process's connection (`ControlServer`).

    It offers what the flows use of core's Session: `run`, `active`, `reconnect`, `close`,
    `host_key` and the host's address. `reconnect` (a host step rebooted the host) makes a
    direct, pinned connection and uses it from then on: the tunnel reconnects on its own
    schedule, and a setup must not wait for it.
    """

    def __init__(self, path: Path, hello: dict[str, Any], key_path: Path, name: str) -> None:
        self.path = path
        self.hello = hello
        self.address = str(hello["address"])
        self.port = int(hello["port"])
        self.user = str(hello["user"])
        self.host_key = str(hello["host_key"])
        self.key_path = key_path
        self.name = name
        self.commands = 0
        self.connects = 0
        self.direct: Any = None

    def _request(self, request: dict[str, Any], timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(HELLO_TIMEOUT_S)
            sock.connect(str(self.path))
            _read_line(sock)
            sock.sendall((json.dumps(request) + "\n").encode())
            sock.settimeout(timeout)
        except (OSError, EOFError, ValueError) as exc:
            sock.close()
            raise HostError(
                f"the tunnel's connection to {self.address}:{self.port} is gone: {exc}",
                hint="run the command again",
            ) from exc
        return sock

    @property
    def active(self) -> bool:
        """Whether the shared connection (or the direct one that replaced it) is up."""
        if self.direct is not None:
            return bool(self.direct.active)
        try:
            sock = self._request({"op": "active"}, HELLO_TIMEOUT_S)
        except HostError:
            return False
        with sock:
            try:
                kind, size = _HEADER.unpack(_read_exact(sock, _HEADER.size))
                return kind == b"x" and _read_exact(sock, size) == b"0"
            except (OSError, EOFError):
                return False

    def run(
        self,
        command: str,
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        on_line: OnLine | None = None,
        done_when: Callable[[str], bool] | None = None,
    ) -> CommandResult:
        """As `Session.run`, over the shared connection (output arrives line by line)."""
        if self.direct is not None:
            return self.direct.run(  # type: ignore[no-any-return]
                command, stdin=stdin, timeout=timeout, on_line=on_line, done_when=done_when
            )
        self.commands += 1
        raw = stdin.encode() if isinstance(stdin, str) else stdin
        request = {
            "command": command,
            "stdin": None if raw is None else raw.decode("latin-1"),
            "timeout": timeout,
        }
        out: list[str] = []
        err: list[str] = []
        rc = -1
        with self._request(request, None if timeout is None else timeout + 5) as sock:
            try:
                while True:
                    kind, size = _HEADER.unpack(_read_exact(sock, size=_HEADER.size))
                    payload = _read_exact(sock, size).decode("utf-8", "replace")
                    if kind == b"x":
                        rc = int(payload)
                        break
                    stream = "stdout" if kind == b"o" else "stderr"
                    (out if kind == b"o" else err).append(payload + "\n")
                    if on_line is not None:
                        on_line(payload, stream)
                    if done_when is not None and kind == b"o" and done_when("".join(out)):
                        rc = 0
                        break
            except TimeoutError as exc:
                raise HostError(
                    f"remote command did not finish within {timeout:.0f} s: {command[:80]!r}"
                ) from exc
            except (OSError, EOFError) as exc:
                raise HostError(
                    f"the tunnel's connection to {self.address}:{self.port} dropped "
                    f"mid-command: {exc}",
                    hint="run the command again",
                ) from exc
        return CommandResult(rc=rc, stdout="".join(out), stderr="".join(err))

    def reconnect(self, *, deadline_s: float | None = None, on_wait: Any = None) -> Any:
        """A direct connection to the same host with the same pinned key, used from now on."""
        from orchestrate.core.ssh.session import DEFAULT_DEADLINE_S, Session

        if self.direct is not None:
            self.direct.reconnect(deadline_s=deadline_s or DEFAULT_DEADLINE_S, on_wait=on_wait)
        else:
            self.direct = Session.connect(
                self.address,
                self.port,
                self.user,
                self.key_path,
                pinned_host_key=self.host_key,
                deadline_s=deadline_s or DEFAULT_DEADLINE_S,
                on_wait=on_wait,
                name=self.name,
            )
        self.connects += 1
        return self

    @property
    def transport(self) -> Any:
        """The direct connection's transport; a shared session has none to lend."""
        if self.direct is None:
            raise HostError("a shared session has no transport of its own")
        return self.direct.transport

    def close(self) -> None:
        """Close the direct connection if one was made; the shared one is the tunnel's."""
        if self.direct is not None:
            self.direct.close()


def open_shared(
    path: Path, expected: dict[str, Any], key_path: Path, name: str
) -> SharedSession | None:
    """The shared session at `path` when it serves the host `expected` describes, else None.

    One local connect: a stale socket (its tunnel died) is refused at once, and neither a
    server for another host, user or host key nor one whose connection is down is used.
    """
    if not usable_path(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HELLO_TIMEOUT_S)
        sock.connect(str(path))
        hello = json.loads(_read_line(sock))
    except (OSError, EOFError, ValueError):
        return None
    finally:
        sock.close()
    if not isinstance(hello, dict) or hello.get("active") is False:
        return None
    from orchestrate.core.ssh.session import normalize_key

    for field, want in expected.items():
        got = hello.get(field)
        if field == "host_key":
            got, want = normalize_key(str(got or "")), normalize_key(str(want or ""))
        if got != want:
            return None
    return SharedSession(path, hello, key_path, name)
