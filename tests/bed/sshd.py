"""A real OpenSSH server for the test bed.

The product talks to a cloud VM over SSH (paramiko).  Locally, the "VM" is this
machine: Debian's own ``/usr/sbin/sshd`` started on a loopback port with a
generated host key and a single authorized client key, logging in a plain user
shaped like a cloud image's default user.  Nothing is faked: key exchange,
authentication, exec channels, ``direct-tcpip`` forwarding and sudo are the real
thing.

Traps this module handles (see DESIGN.md section 7):

- sshd needs its privilege-separation directory: ``mkdir -p /run/sshd``.
- sshd re-executes itself for every connection, so it must be started by its
  absolute path.
- keys live under temporary folders, hence ``StrictModes no``.
- with ``UsePAM no`` sshd refuses *locked* accounts (password field ``!...``):
  the login user gets ``*`` instead (no password, but not locked).
- sshd reads ``AuthorizedKeysFile`` with the *login user's* uid, so that file and
  every folder above it must be readable/traversable by that user; pytest's own
  ``tmp_path`` folders are 0700 and root-owned, which is why :func:`start_sshd`
  checks this up front and fails with a clear message instead of a bare
  "Permission denied (publickey)".
- ``-o Port=`` *adds* a port instead of replacing the configured one, so the
  port is written into the config file only.
- root's bash here sources a slow ``~/.bashrc`` for every command run over SSH
  (Debian's bash sources it even for non-interactive sshd sessions); the login
  user gets a trivial one.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
DEFAULT_LOGIN_USER = "orchestrate"

# Non-interactive shells (every `ssh host cmd`) return at once; interactive
# ones get nothing special either.  Debian's bash sources ~/.bashrc for sshd
# sessions even when non-interactive, so this file is on every command's path.
_TRIVIAL_BASHRC = """\
# orchestrate test bed: keep shells started by sshd fast and predictable.
case $- in
    *i*) ;;
    *) return ;;
esac
"""


class SshdError(RuntimeError):
    """sshd could not be configured or did not come up."""


def _run(
    argv: list[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a helper command, capturing output so failures can be reported in full."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SshdError(
            f"{' '.join(argv)} failed with exit status {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc


def generate_keypair(path: Path, *, comment: str = "orchestrate-bed") -> tuple[Path, str]:
    """Create an ed25519 keypair without passphrase at ``path`` (and ``path.pub``).

    Returns ``(private_key_path, public_key_line)`` where the line is
    ``"ssh-ed25519 AAAA... comment"``.  The private key is chmod 600 because both
    OpenSSH and users of the product refuse or warn about readable keys.  An
    existing key at ``path`` is replaced, so a caller never picks up a stale one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)
    public = path.with_name(path.name + ".pub").read_text().strip()
    return path, public


def generate_client_key(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """Generate the client keypair a test logs in with: ``directory/name`` (0600)."""
    return generate_keypair(directory / name, comment="orchestrate-bed-client")


def ensure_login_user(name: str = DEFAULT_LOGIN_USER) -> str:
    """Create (idempotently) a login user shaped like a cloud image's default user.

    Like ``ubuntu`` on Ubuntu images or ``admin`` on Debian ones: a home folder,
    bash with a trivial ``~/.bashrc``, no usable password but *not locked* (so
    sshd without PAM accepts key logins), and passwordless sudo through a file in
    ``/etc/sudoers.d``.  It is deliberately not in the ``docker`` group: on a
    fresh cloud VM the product has to use ``sudo docker``, and so do the tests.

    Needs root.  Returns the user name.
    """
    if os.geteuid() != 0:
        raise SshdError("ensure_login_user needs root (useradd, usermod, /etc/sudoers.d)")
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name])
    # "*" = no password can match, but the account is not locked ("!"), which
    # sshd checks itself when PAM is off.
    _run(["usermod", "-p", "*", name])
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    home.mkdir(mode=0o755, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    bashrc = home / ".bashrc"
    if not bashrc.exists() or bashrc.read_text() != _TRIVIAL_BASHRC:
        bashrc.write_text(_TRIVIAL_BASHRC)
        os.chown(bashrc, entry.pw_uid, entry.pw_gid)

    sudoers = Path("/etc/sudoers.d") / f"90-orchestrate-bed-{name}"
    rule = (
        "# orchestrate test bed: cloud-image style passwordless sudo\n"
        f"{name} ALL=(ALL) NOPASSWD:ALL\n"
    )
    if not sudoers.exists() or sudoers.read_text() != rule:
        tmp = sudoers.with_name(f".{sudoers.name}.tmp")
        tmp.write_text(rule)
        tmp.chmod(0o440)
        # A broken sudoers file would break sudo for everybody: validate first.
        _run(["visudo", "-c", "-q", "-f", str(tmp)])
        tmp.replace(sudoers)
    return name


def free_port(address: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``address`` (bind port 0, then release).

    There is a small window in which another process could take the port; the
    callers start their server immediately and fail loudly if the bind fails.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _listen_directive(address: str, port: int) -> str:
    """``ListenAddress`` with the port inside, bracketing IPv6 literals."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}"


def _user_can_read(user: str, path: Path) -> bool:
    """Whether ``user`` can read ``path`` (asks the kernel via runuser, no guessing)."""
    proc = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-r", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0


# Runs inside the sshd's network namespace (via `ip netns exec`) when the
# server is not reachable from ours: connect, read the identification line.
_BANNER_PROBE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(2)
data = b""
while b"\\n" not in data:
    chunk = s.recv(256)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode("ascii", "replace"))
"""


def _read_banner(address: str, port: int, netns: str | None) -> str:
    """Connect and return the server's SSH identification line ("" if none yet)."""
    if netns is not None:
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _BANNER_PROBE, address, str(port)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""
    try:
        with socket.create_connection((address, port), timeout=2) as sock:
            sock.settimeout(2)
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    return data.decode("ascii", "replace").strip()


@dataclass
class Sshd:
    """A running sshd started by :func:`start_sshd`; ``stop()`` ends exactly that process."""

    address: str
    port: int
    user: str
    host_key_pub: str
    pid: int
    workdir: Path
    config_path: Path
    log_path: Path
    netns: str | None = None
    banner: str = ""
    enter: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the sshd this object started, SIGKILL after ``timeout``, and reap it.

        Only the listener PID we spawned is signalled.  Per-connection sshd
        children end on their own when their clients disconnect; signalling them
        by name could hit somebody else's sshd.
        """
        proc = self._process
        if proc is None:
            return
        from orchestrate.core.flows.processes import end_child

        end_child(proc, grace_s=timeout)
        self._process = None

    def restart(self, ready_timeout: float | None = None) -> None:
        """Stop the listener and start it again with the same config and host key.

        This stands in for the host's reboot: SSH goes away and comes back on the same
        address with the same host key. The new process replaces the old one here, so
        `stop()` ends it. With ``ready_timeout``, return once it answers with its banner
        (the host is back), as `start_sshd` does.
        """
        self.stop()
        argv = [*self.enter, SSHD, "-D", "-e", "-f", str(self.config_path)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._process = process
        self.pid = process.pid
        if ready_timeout is None:
            return
        deadline = time.monotonic() + ready_timeout
        while not _read_banner(self.address, self.port, self.netns).startswith("SSH-"):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SshdError(f"sshd did not come back within {ready_timeout} s:\n{self.log()}")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        """Whether the listener process is still alive."""
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """sshd's stderr log so far (``-e``): useful in assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Sshd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sshd(
    workdir: Path,
    *,
    user: str,
    authorized_key: str,
    listen: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    enter: Sequence[str] = (),
    also_listen: Sequence[str] = (),
    ready_timeout: float = 15.0,
) -> Sshd:
    """Start ``/usr/sbin/sshd -D`` with its own host key and config in ``workdir``.

    ``authorized_key`` is the one public key line that may log in, and only
    ``user`` may log in.  With ``netns``, sshd runs inside that network
    namespace (``ip netns exec``) and ``listen`` should be an address there; the
    default port is then 22 (a namespace the tests made has nothing on it),
    otherwise a free port on ``listen`` in our namespace.  ``enter`` is a command prefix
    that puts sshd in other namespaces (``nsenter ...``, the multi-node bed's way into a
    node's network and mount namespaces) when ``listen`` is reachable from ours;
    ``also_listen`` are more addresses to listen on (same port), not probed.

    Returns once the port answers with an SSH identification line; raises
    :class:`SshdError` with sshd's own log if it exits or does not answer within
    ``ready_timeout`` seconds.  Needs root.
    """
    if os.geteuid() != 0:
        raise SshdError("start_sshd needs root (sshd privilege separation, host keys)")
    if not Path(SSHD).exists():
        raise SshdError(f"{SSHD} not found: install the Debian package openssh-server")
    try:
        pwd.getpwnam(user)
    except KeyError as exc:
        raise SshdError(f"login user {user!r} does not exist: call ensure_login_user()") from exc

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

    if port is None:
        port = 22 if netns is not None else free_port(listen)

    host_key, host_key_line = generate_keypair(workdir / "ssh_host_ed25519_key", comment="")
    host_key_pub = " ".join(host_key_line.split()[:2])

    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text(authorized_key.strip() + "\n")
    authorized_keys.chmod(0o644)
    if not _user_can_read(user, authorized_keys):
        raise SshdError(
            f"{authorized_keys} is not readable by {user!r}: sshd reads it with that user's "
            "uid, so every folder above it must be traversable (pytest's tmp_path is 0700; "
            "use a folder made with tempfile.mkdtemp() and chmod 0o755)"
        )

    pid_file = workdir / "sshd.pid"
    config_path = workdir / "sshd_config"
    config_path.write_text(
        "\n".join(
            [
                "# orchestrate test bed sshd; generated by tests/bed/sshd.py",
                f"Port {port}",
                f"ListenAddress {_listen_directive(listen, port)}",
                *(f"ListenAddress {_listen_directive(a, port)}" for a in also_listen),
                f"HostKey {host_key}",
                f"PidFile {pid_file}",
                f"AuthorizedKeysFile {authorized_keys}",
                f"AllowUsers {user}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                "StrictModes no",
                "UsePAM no",
                # Concurrent tests open many connections/sessions at once.
                "MaxStartups 100",
                "MaxSessions 100",
                "AllowTcpForwarding yes",
                "AllowAgentForwarding no",
                "X11Forwarding no",
                "PermitTTY yes",
                # Notice dead clients, so their per-connection processes end.
                "ClientAliveInterval 15",
                "ClientAliveCountMax 4",
                "TCPKeepAlive yes",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "LoginGraceTime 30",
                "LogLevel INFO",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    _run([SSHD, "-t", "-f", str(config_path)])

    argv = [*enter, SSHD, "-D", "-e", "-f", str(config_path)]
    if netns is not None:
        # `ip netns exec` setns()es and then execs, so the PID is sshd's own.
        argv = ["ip", "netns", "exec", netns, *argv]
    log_path = workdir / "sshd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = Sshd(
        address=listen,
        port=port,
        user=user,
        host_key_pub=host_key_pub,
        pid=process.pid,
        workdir=workdir,
        config_path=config_path,
        log_path=log_path,
        netns=netns,
        enter=tuple(enter),
        _process=process,
    )

    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise SshdError(
                f"sshd exited with status {process.returncode} before accepting connections "
                f"on {listen}:{port}; its log:\n{server.log()}"
            )
        banner = _read_banner(listen, port, netns)
        if banner.startswith("SSH-"):
            server.banner = banner
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise SshdError(
                f"sshd did not answer with an SSH banner on {listen}:{port} within "
                f"{ready_timeout:.0f} s; its log:\n{server.log()}"
            )
        time.sleep(0.05)
