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
import dataclasses
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

#: The label core puts on every instance (in `LaunchSpec.labels`) with its instance name;
#: the default `Provider.find` recognises orchestrate's instances by it.
NAME_LABEL = "orchestrate-name"

#: The label core puts on every node of a cluster (in `LaunchSpec.labels`) with the
#: cluster's name; `ClusterNetworks.ensure_cluster_network` opens traffic between the
#: instances that carry it with the same value.
CLUSTER_LABEL = "orchestrate-cluster"


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
    #: the cluster this instance is a node of (None for a lone instance). The provider
    #: marks the instance (a network tag, a security group) so that the rule from
    #: `ClusterNetworks.ensure_cluster_network(cluster, options)` applies to it.
    cluster: str | None = None


@dataclass
class InstanceRecord:
    """What a provider returns about one instance; core stores it in the state row.

    `cloud_id` is whatever the provider needs to find the instance again (a self link,
    an EC2 instance id); `extra` holds small provider-specific facts, JSON-serialisable.

    `options` is filled by core, not by the provider: the validated options the instance
    was launched with, so `get`, `start`, `stop` and `destroy` reach the cloud the way
    `create` did instead of re-deriving the connection from `extra`. It is None only for a
    row whose options no longer validate (a provider upgrade renamed a key).
    `labels` are the instance's tags as the cloud reports them; the default `find` matches
    core's `orchestrate-name` label among them.
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
    labels: dict[str, str] = field(default_factory=dict)
    #: the address other instances of the same network reach it on (GCE's networkIP, EC2's
    #: private IP). Cluster nodes talk to each other on it, never on `address`.
    internal_address: str | None = None
    options: Any = field(default=None, compare=False, repr=False)


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
    #: The regions the instance may land in, as far as the options say without asking the
    #: cloud (the profile's zones); empty: not known before the create. The price line
    #: names them when the price file's figures are for another region.
    regions: tuple[str, ...] = ()


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

    What the machine must give core (the image's duty): a login as `ssh_user(options)` with
    the key `spec.ssh_public_key`, that user root or with password-less `sudo -n`, sshd
    allowing TCP forwarding (the notebook tunnel), bash, and apt (Debian or Ubuntu: host
    steps install docker and the NVIDIA driver with it).

    Startup scripts: with `bootstrap = "startup-script"` in the profile, `spec.startup_script`
    is a bash script that `create` must hand to the cloud as user data, run once as root at
    first boot (cloud-init's `runcmd`, GCE's `startup-script` metadata). Core then connects
    over SSH and polls for the marker file the script writes when done, instead of running
    the steps itself. A cloud that cannot run user data raises
    `ProfileError("... cannot run a startup script", hint='use bootstrap = "ssh"')` from
    `validate_options` or `preflight`, before anything is created.

    Autostop: the host agent powers the machine off from inside (`shutdown -h now`) when the
    notebook is idle. `get` must then report `STOPPED` (a cloud that deletes instances on
    guest power-off is unsuitable, or must say so in `description`), and `start` must bring
    the same disk back.
    """

    #: the value of `--provider` and of `provider =` in a profile.
    name: str = ""
    #: one line shown by `orchestrate providers`.
    description: str = ""
    #: the login user of the image the provider boots, used for SSH.
    default_ssh_user: str = "orchestrate"
    #: True when the machine is not the provider's to power off or delete (an existing host
    #: reached over SSH): `stop` and `down` then remove orchestrate's containers there (the
    #: notebook container, and any other carrying the `orchestrate-name` label) instead of
    #: calling `Provider.stop`, and `destroy` only forgets the machine. Cloud providers leave
    #: it False.
    stops_container_only: bool = False

    #: the options dataclass the default `validate_options` checks a sub-table against
    #: (`orchestrate.core.api.typedoptions`); None: the provider writes `validate_options`.
    options_class: type[Any] | None = None

    def validate_options(self, table: Mapping[str, Any], where: str) -> Any:
        """Check the `[profiles.NAME.<provider>]` sub-table and return typed options.

        Raise `ProfileError` naming `where` (file and table) and the key for bad input.
        Missing keys take the provider's defaults here, so the returned object is complete.
        The default derives everything from `options_class` (`typedoptions.options_from`);
        override it for checks across keys, calling `options_from` first.
        """
        if self.options_class is None:
            raise NotImplementedError(f"provider {self.name} sets no options_class")
        from orchestrate.core.api.typedoptions import options_from

        return options_from(self.options_class, table, where)

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
        """The options as shown by `profiles NAME` and `--dry-run` and kept in the state row:
        paths, never contents.

        The default returns the fields of a dataclass (tuples as lists), which suits options
        that hold no secret, as the contract asks; it is what core passes back to
        `validate_options` to give `get`, `start`, `stop` and `destroy` their options. A
        provider whose shown form is not a valid table keeps it a valid table or accepts
        that those calls fall back to the launched profile's sub-table.
        """
        if dataclasses.is_dataclass(options) and not isinstance(options, type):
            return {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(options).items()
                if value is not None
            }
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

    def region_of(self, zone: str, options: Any) -> str:
        """The region a zone of these options belongs to, so a regional quota error skips
        its sibling zones."""
        return zone

    @abc.abstractmethod
    def create(self, spec: LaunchSpec, zone: str) -> InstanceRecord:
        """Create the instance in `zone`; return its record as soon as the cloud has it.

        The record may be `PENDING` (with its `cloud_id`): core stores it, then polls `get`
        with the shared `Retry.poll` until it is `RUNNING` with an address, so a provider
        writes no wait loop of its own. Returning early also lets core store the cloud id
        before the boot, so a crash meanwhile loses nothing.
        """

    @abc.abstractmethod
    def get(self, record: InstanceRecord) -> InstanceRecord:
        """Fresh status and address of the instance; raise `NotFound` when it is gone.

        `record.options` holds the options it was launched with (see `InstanceRecord`).
        A guest power-off (autostop) must read as `STOPPED`.
        """

    @abc.abstractmethod
    def start(self, record: InstanceRecord) -> InstanceRecord:
        """Start a stopped instance; the returned record carries the new address. It may
        be `PENDING`: core polls `get` until it runs, as after `create`."""

    @abc.abstractmethod
    def stop(self, record: InstanceRecord) -> None:
        """Stop the instance so compute billing stops; the disk (and notebooks) stay."""

    @abc.abstractmethod
    def destroy(self, record: InstanceRecord) -> None:
        """Delete the instance and what only it used. Gone already is not an error."""

    def list(self, options: Any) -> Sequence[InstanceRecord]:
        """Every instance these options' account and place hold, with their `labels`.

        Only the default `find` calls it; the default returns none, so a provider
        implements `list` or overrides `find`, or a crash between the create call and the
        stored cloud id can leave an instance that `launch` does not see.
        """
        return []

    def find(self, spec: LaunchSpec) -> InstanceRecord | None:
        """The instance named like `spec` if the cloud already has it, else None.

        Core calls this when a state row exists without a cloud id: a crash between the
        create call and the record being stored must not lead to a second instance. The
        default picks, from `list(spec.options)`, the one whose `orchestrate-name` label is
        `spec.name` (core puts that label in `spec.labels`); override it only when the
        cloud can look an instance up more directly.
        """
        for record in self.list(spec.options):
            if record.labels.get(NAME_LABEL) == spec.name:
                return record
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


@runtime_checkable
class ClusterNetworks(Protocol):
    """What a provider implements to make clusters (`launch --nodes N`, N > 1).

    Core creates and deletes the N instances through `create` and `destroy`, with
    `LaunchSpec.cluster` set; the provider only adds the network rule that lets the
    cluster's nodes reach each other on their internal addresses, on every port, and
    nothing else: the rule's source and target are the cluster's own instances (GCE:
    source and target tags; EC2: a security group that admits itself), never an address
    range. A provider without it cannot make clusters, and `launch --nodes` says so.
    """

    def ensure_cluster_network(self, cluster: str, options: Any) -> None:
        """Create the rule for `cluster` if missing (called before the first create)."""
        ...

    def release_cluster_network(self, cluster: str, options: Any) -> None:
        """Delete that rule once the cluster's last node is gone. Gone already is fine."""
        ...


@dataclass(frozen=True)
class GpuOffer:
    """One GPU shape a provider rents, as `OwnPrices.gpu_offers` lists it for `orchestrate
    gpus`: the GPU, the machine type that carries it and what the whole instance costs."""

    gpu: str
    model: str
    memory_gb: float
    machine_type: str
    count: int = 1
    #: USD per hour for the whole instance; None: not sold that way.
    on_demand: float | None = None
    spot: float | None = None
    where: tuple[str, ...] = ()


@runtime_checkable
class OwnPrices(Protocol):
    """What a provider implements when it prices its own instances (a cloud that core's
    price file has no section for): `launch`'s price line and `confirm_above`, the cost
    `status` shows and the `orchestrate gpus` catalog then come from it.

    The numbers are the provider's to keep current (a small table in the plugin, or its
    cloud's pricing API); core says they are approximate and whose they are.
    """

    def price(self, query: PriceQuery) -> float | None:
        """USD per hour for a running instance of `query` (from `price_query`), or None
        when the provider has no price for it (`launch` then says "price unknown")."""
        ...

    def gpu_offers(self) -> Sequence[GpuOffer]:
        """Every GPU shape the provider rents, for `orchestrate gpus`."""
        ...
