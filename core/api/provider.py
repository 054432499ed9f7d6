"""The provider contract: the only cloud-specific step of the workflow.

A provider turns a validated launch spec into a running machine that core can reach over SSH,
and answers for that machine's life cycle afterwards. Everything after SSH (driver, docker,
container toolkit, notebook, tunnel, autostop) is shared, so a new cloud needs only this.

The shape follows docker-machine and SkyPilot: preflight, create in one zone, get, start, stop,
destroy. Providers raise the typed errors of `orchestrate.core.api.errors`; the failover loop
(`orchestrate.core.cloud.failover`) owns the decision of which zone or region to try next.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestrate.core.api.errors import ProfileError

# Instance states as core understands them; providers map their cloud's words onto these.
RUNNING = "running"
STOPPED = "stopped"
PENDING = "pending"
STOPPING = "stopping"
TERMINATED = "terminated"
UNKNOWN = "unknown"
STATES = (RUNNING, STOPPED, PENDING, STOPPING, TERMINATED, UNKNOWN)


@dataclass(frozen=True)
class GpuRequest:
    """The accelerator a profile asks for, in the provider's own naming."""

    name: str
    count: int = 1


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a provider needs to create one instance.

    `options` is the provider's own validated sub-table (whatever `validate_options`
    returned); core never looks inside it.
    """

    name: str
    provider: str
    options: Any
    ssh_user: str
    ssh_public_key: str
    gpu: GpuRequest | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    startup_script: str | None = None


@dataclass
class InstanceRecord:
    """What a provider returns about one instance; core stores it in the state row.

    `cloud_id` is whatever the provider needs to find the instance again (a self link,
    an EC2 instance id); `extra` holds small provider-specific facts, JSON-serialisable.
    """

    name: str
    provider: str
    zone: str | None
    cloud_id: str | None
    status: str
    address: str | None
    ssh_user: str
    ssh_port: int = 22
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PriceQuery:
    """The shape of an instance as the price file names it, from `Provider.price_query`.

    Core looks each part up in the dated price file (`orchestrate.core.money`); only the
    provider knows which of its options are the machine type, the disk or the spot flag.
    """

    machine_type: str
    gpu: GpuRequest | None = None
    spot: bool = False
    #: None: the provider's price list names the disk its instances get (EC2: gp3).
    disk_type: str | None = None
    disk_gb: float = 0


@dataclass(frozen=True)
class PlannedRequest:
    """One API request a launch would send, shown by --dry-run. Never holds a secret."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None


class Provider(abc.ABC):
    """Base class of provider plugins. Subclass it and register an instance through
    `orchestrate_register_providers`.

    Methods that talk to the cloud import their SDK inside the method, never at module level.
    """

    #: the value of `--provider` and of `provider =` in a profile.
    name: str = ""
    #: one line shown by `orchestrate providers`.
    description: str = ""
    #: the login user of the image the provider boots, used for SSH.
    default_ssh_user: str = "orchestrate"
    #: True when the machine is not the provider's to power off or delete (an existing host
    #: reached over SSH): `stop` then stops the notebook container instead of calling
    #: `Provider.stop`, and `down` removes the container itself before `destroy`, which only
    #: forgets the machine. Cloud providers leave it False.
    stops_container_only: bool = False

    @abc.abstractmethod
    def validate_options(self, table: Mapping[str, Any], where: str) -> Any:
        """Check the `[profiles.NAME.<provider>]` sub-table and return typed options.

        Raise `ProfileError` naming `where` (file and table) and the key for bad input.
        Missing keys take the provider's defaults here, so the returned object is complete.
        """

    def apply_overrides(self, options: Any, overrides: Mapping[str, Any]) -> Any:
        """Apply CLI flags (`zone`, `gpu`, ...) to validated options; default: none apply."""
        unknown = sorted(k for k, v in overrides.items() if v is not None)
        if unknown:
            raise ProfileError(
                f"provider {self.name} does not take --{unknown[0].replace('_', '-')}",
                hint="drop the flag or set the value in the profile's sub-table",
            )
        return options

    def gpu_request(self, options: Any) -> GpuRequest | None:
        """The accelerator these options ask for, or None for a CPU host."""
        return None

    def ssh_user(self, options: Any) -> str:
        """The login user core connects as for these options; default `default_ssh_user`.

        Override it when the user is an option of yours (the built-in providers take
        `ssh_user`), so core never guesses attribute names inside your options.
        """
        return self.default_ssh_user

    def price_query(self, options: Any) -> PriceQuery | None:
        """What `launch` and `status` price for these options, or None when unpriced.

        Core prices it from the dated price file's section named like the provider; a
        provider without a section there gets "unknown" prices, never a guess.
        """
        return None

    def redacted_options(self, options: Any) -> Mapping[str, Any]:
        """The options as shown by `profiles --show` and `--dry-run`: paths, never contents."""
        return {}

    def plan(self, spec: LaunchSpec) -> Sequence[PlannedRequest]:
        """The API requests `launch` would send, for --dry-run. No network, no secrets."""
        return []

    def preflight(self, spec: LaunchSpec) -> None:
        """Cheap checks before the first create: credentials, project, quota.

        Raise `QuotaError(scope="cloud")` when no zone can work, so no create is sent.
        """

    def candidate_zones(self, spec: LaunchSpec) -> Sequence[str]:
        """Zones to try in order; the failover loop walks them."""
        return [""]

    def region_of(self, zone: str) -> str:
        """The region a zone belongs to, so a regional quota error skips its sibling zones."""
        return zone

    @abc.abstractmethod
    def create(self, spec: LaunchSpec, zone: str) -> InstanceRecord:
        """Create the instance in `zone` and return it once the cloud says it is running."""

    @abc.abstractmethod
    def get(self, record: InstanceRecord) -> InstanceRecord:
        """Fresh status and address of the instance; raise `NotFound` when it is gone."""

    @abc.abstractmethod
    def start(self, record: InstanceRecord) -> InstanceRecord:
        """Start a stopped instance; the returned record carries the new address."""

    @abc.abstractmethod
    def stop(self, record: InstanceRecord) -> None:
        """Stop the instance so compute billing stops; the disk (and notebooks) stay."""

    @abc.abstractmethod
    def destroy(self, record: InstanceRecord) -> None:
        """Delete the instance and what only it used. Gone already is not an error."""

    def find(self, spec: LaunchSpec) -> InstanceRecord | None:
        """The instance named like `spec` if the cloud already has it, else None.

        Core calls this when a state row exists without a cloud id: a crash between the
        create call and the record being stored must not lead to a second instance.
        """
        return None


@runtime_checkable
class RefreshesMany(Protocol):
    """What a provider implements when its API reads many instances in one call.

    `status` over several rows of such a provider makes that call instead of one read per
    row: GCP lists every orchestrate instance of a project in one aggregated request, so 50
    rows cost one request, not 50. Providers without it are read row by row, in parallel.
    """

    def get_many(self, records: Sequence[InstanceRecord]) -> dict[str, InstanceRecord | None]:
        """Each record read again, keyed by its name; None for one gone on the cloud.

        Raises like `Provider.get` when the cloud cannot be asked at all.
        """
        ...


@runtime_checkable
class GpuLocations(Protocol):
    """What a provider implements to list where its GPUs are offered, from its own API.

    `orchestrate gpus` asks it when its credentials work and says which source each row's
    places came from. Returns GPU name -> regions (or zones). Raise an `OrchestrateError`
    (``AuthError`` when there are no credentials) and the catalog falls back to the price
    file.
    """

    def gpu_locations(self, options: Any) -> Mapping[str, Sequence[str]]:
        """The regions (or zones) each GPU is offered in, by the provider's GPU names."""
        ...
