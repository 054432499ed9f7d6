"""An OpenSSH config file for orchestrate's hosts, so plain `ssh NAME` works.

It is rewritten from the state rows whenever an address or a pinned key changes (a stopped
GCE instance comes back on a new IP), with a known_hosts file of the pinned keys so OpenSSH
checks the same key orchestrate pinned. `~/.ssh/config` includes it only when the user says
so (`orchestrate ssh-config --install`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from orchestrate.core.api.grammar import address
from orchestrate.core.store.paths import config_dir, private_dir, write_private
from orchestrate.core.store.state import InstanceRow

ALIAS_PREFIX = ""  # instance names are the Host aliases


def config_path() -> Path:
    return config_dir() / "ssh_config"


def known_hosts_path() -> Path:
    return config_dir() / "known_hosts"


def quoted(value: object, *, tokens: bool = True) -> str:
    """A value for an ssh_config line: double-quoted (a folder with a space, as in macOS's
    `~/Library/Application Support`, is one argument), backslashes and quotes escaped, and
    `%` doubled where OpenSSH expands `%h`-style tokens (IdentityFile, UserKnownHostsFile)."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"an ssh_config value cannot hold a control character: {text!r}")
    if tokens:
        text = text.replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(rows: Iterable[InstanceRow], identity: Path) -> tuple[str, str]:
    """The ssh_config and known_hosts texts for the rows that have an address."""
    config = ["# Written by orchestrate; edits are overwritten.", ""]
    known = []
    for row in rows:
        if not row.address:
            continue
        config += [
            f"Host {ALIAS_PREFIX}{row.name}",
            f"    HostName {quoted(address(row.address, f'the address of {row.name}'))}",
            f"    Port {int(row.ssh_port)}",
            f"    User {quoted(row.ssh_user or 'orchestrate')}",
            f"    IdentityFile {quoted(identity)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {quoted(known_hosts_path())}",
            "    StrictHostKeyChecking yes",
            f"    HostKeyAlias orchestrate-{row.name}",
            "    ServerAliveInterval 30",
            "",
        ]
        if row.host_key:
            known.append(f"orchestrate-{row.name} {row.host_key}")
    return "\n".join(config), "\n".join(known) + ("\n" if known else "")


def write(rows: Iterable[InstanceRow], identity: Path) -> Path:
    """Rewrite both files atomically (a concurrent `ssh` never reads half a file)."""
    private_dir(config_dir())
    config, known = render(rows, identity)
    write_private(known_hosts_path(), known)
    write_private(config_path(), config)
    return config_path()


def include_line() -> str:
    return f"Include {quoted(config_path(), tokens=False)}"


def install_include(user_config: Path | None = None) -> bool:
    """Add the Include line at the top of ~/.ssh/config once; False if already there.

    OpenSSH applies the first value it reads for each option, and an Include inside a Host
    block would only apply there, so the line goes first.
    """
    target = user_config or Path.home() / ".ssh" / "config"
    line = include_line()
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    if line in existing.splitlines():
        return False
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(target, f"{line}\n\n{existing}" if existing else f"{line}\n")
    return True
