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


def ensure_ssh_key(comment: str = "orchestrate") -> SshKey:
    """The user's key pair, created on first use with owner-only permissions."""
    private = key_path()
    public = private.with_name(private.name + ".pub")
    if private.exists() and public.exists():
        mode = private.stat().st_mode & 0o777
        if mode & 0o077:
            raise OrchestrateError(
                f"ssh key {private} is readable by others (mode {mode:o})",
                hint=f"run chmod 600 {private}",
            )
        return SshKey(private, public.read_text(encoding="utf-8").strip())
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
    # Create with 0600 from the start: a chmod after writing leaves a window.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    line = f"{public_bytes.decode()} {comment}"
    public.write_text(line + "\n", encoding="utf-8")
    return SshKey(private, line)
