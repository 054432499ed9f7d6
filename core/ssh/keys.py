"""The user's SSH key for orchestrate's hosts: ed25519, generated once, private file 0600.

One key per user (not per instance) so `ssh NAME` and the ssh config entry keep working
across instances; the provider injects the public half at create time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrate.core.api.errors import OrchestrateError
from orchestrate.core.store.paths import config_dir, private_dir


@dataclass(frozen=True)
class SshKey:
    private_path: Path
    public_line: str


def key_path() -> Path:
    return config_dir() / "id_ed25519"


def _check_private(private: Path) -> None:
    """A key others can read is refused whatever else is true: it is a login to every host."""
    mode = private.stat().st_mode & 0o777
    if mode & 0o077:
        raise OrchestrateError(
            f"ssh key {private} is readable by others (mode {mode:o})",
            hint=f"run chmod 600 {private}",
        )


def _public_line_of(private: Path, comment: str) -> str:
    """The OpenSSH public line of an existing private key (when its .pub went missing)."""
    from cryptography.hazmat.primitives import serialization
    from orchestrate.core.api.files import read_regular

    try:
        key = serialization.load_ssh_private_key(read_regular(private, cap=64 << 10), None)
    except (OSError, ValueError, TypeError) as exc:
        raise OrchestrateError(
            f"ssh key {private} cannot be read ({exc}), and orchestrate never overwrites a key",
            hint=f"move {private} away to make a new key, or restore its .pub file",
        ) from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode()} {comment}"


def ensure_ssh_key(comment: str = "orchestrate") -> SshKey:
    """The user's key pair, created on first use with owner-only permissions.

    An existing private key is never replaced (it may be the only way into running hosts):
    a missing `.pub` is derived from it. A key readable by group or others is refused in
    every case.
    """
    private = key_path()
    public = private.with_name(private.name + ".pub")
    if private.exists():
        _check_private(private)
        if public.exists():
            return SshKey(private, public.read_text(encoding="utf-8").strip())
        line = _public_line_of(private, comment)
        public.write_text(line + "\n", encoding="utf-8")
        return SshKey(private, line)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_dir(private.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    # Create with 0600 from the start (a chmod after writing leaves a window), and only if
    # no file is there (O_EXCL): a key another process just wrote is never overwritten.
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return ensure_ssh_key(comment)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    _check_private(private)  # a umask cannot widen 0600, but say so if anything did
    line = f"{public_bytes.decode()} {comment}"
    public.write_text(line + "\n", encoding="utf-8")
    return SshKey(private, line)
