"""One error family, so the CLI can print any failure as one line and pick the exit code.

Providers raise the typed cloud errors below instead of their SDK's exceptions: the failover
loop in core decides what to try next from the type and scope alone, so it stays shared by
every provider.
"""

from __future__ import annotations

from pathlib import Path


class OrchestrateError(Exception):
    """Base of every error the CLI prints as one line (no traceback without --debug)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: what the user must know besides the fix, added where it is known (e.g. that
        #: the instance is still running and billing); said after the hint
        self.notes: list[str] = []

    def line(self) -> str:
        """The single line a user sees: what went wrong, how to fix it, then the notes."""
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return "; ".join([text, *self.notes])


class Interrupted(OrchestrateError):
    """Ctrl-C during a command that must still say what it leaves behind: exit 130."""

    exit_code = 130


class UsageError(OrchestrateError):
    """Bad input on the command line or in a profile: exit 2 like a usage error."""

    exit_code = 2


class ProfileError(UsageError):
    """A profile file is malformed or holds a wrong value; the message names file, line, key."""


class PluginError(OrchestrateError):
    """A plugin failed to load or implements a hook that does not exist."""


class StateError(OrchestrateError):
    """The local state store cannot be read or written."""


class ProviderError(OrchestrateError):
    """A cloud said no. Subclasses carry the scope the failover loop needs."""


class CapacityError(ProviderError):
    """The zone has no capacity for this shape right now: try the next zone."""

    def __init__(self, message: str, *, zone: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.zone = zone


class QuotaError(ProviderError):
    """A quota is exhausted. scope is "region" (try another region) or "cloud" (stop)."""

    def __init__(
        self, message: str, *, scope: str, region: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        if scope not in ("region", "cloud"):
            raise ValueError(f"quota scope must be region or cloud, not {scope!r}")
        self.scope = scope
        self.region = region


class AuthError(ProviderError):
    """Credentials are missing, unreadable or refused: nothing else will work, stop."""


class CreateRefused(ProviderError):
    """The cloud refused the create request itself (a 4xx answer to the insert, before any
    operation started): nothing exists, so `launch` keeps no row for it."""


class NotFound(ProviderError):
    """The instance is gone on the cloud side."""


class HostError(OrchestrateError):
    """Something on the host failed: SSH, a host step, the container."""


class HostKeyMismatch(HostError):
    """The host presented a key other than the pinned one: refuse before running anything."""


class StepFailed(HostError):
    """A host step exited non-zero: which step, and the log with its whole output.

    Typed fields rather than attributes patched onto a `HostError`, so a caller (a plugin's
    ``orchestrate_after_step``, a retry of one step) can read them with a type checker's help.
    """

    def __init__(
        self, message: str, *, step: str, log_path: Path | None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        self.log_path = log_path
