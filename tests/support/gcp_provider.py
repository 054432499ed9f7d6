"""What the GCP provider's tests share: a public key to install and a recorder of the
provider's progress events (what `launch` would print), for asserting their order."""

from __future__ import annotations

from typing import Any

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2wLUy8M1pXxFAKEFAKEFAKEkeyq0 me@laptop"


class Events(list[tuple[str, str]]):
    """The provider's `on_event` callback: keeps (kind, message) in order."""

    def __call__(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self.append((kind, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self]
