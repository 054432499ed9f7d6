"""Host steps: what plugins contribute to set a host up, and the order they run in.

A step is a name, the steps it comes after, a ``needed(facts)`` decision and an idempotent
bash script. Facts come from one probe (`orchestrate.core.host.probe`), so deciding what to do
costs no extra round trip; the runner (`orchestrate.core.host.runner`) sends the needed scripts in
one remote shell per stage. Plugins return steps from the ``orchestrate_host_steps(context)``
hook, and may return none: the GPU steps contribute nothing when the profile asks for no
accelerator, which is how a CPU notebook host works.

Scripts run as root (the runner wraps the stage in ``sudo -n`` for a non-root login). The
login user's name and home are exported as ``ORCHESTRATE_LOGIN_USER``/``_HOME``, since ``~``
under sudo is root's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import PluginError

if TYPE_CHECKING:  # pragma: no cover - types only
    from orchestrate.core.api.gpu_table import PciGpu
    from orchestrate.core.api.provider import GpuRequest


@dataclass(frozen=True)
class ClusterContext:
    """Where a host stands in a cluster (`launch --nodes N`); None on a lone instance.

    Addresses are internal ones (`InstanceRecord.internal_address`): nodes talk to each
    other only there. `token_file` is the path on the host of the cluster's secret (a 0600
    file, root's, written by core over SSH before any step runs); steps read it on the
    host, so the secret never appears in a script, a command line or a log.
    """

    name: str
    role: str  # "head" or "worker"
    index: int  # 0 for the head, 1.. for workers
    size: int
    head_address: str
    node_address: str
    token_file: str = "/etc/orchestrate/cluster/token"
    ray_port: int = 6379
    dashboard_port: int = 8265

    @property
    def is_head(self) -> bool:
        return self.role == "head"


@dataclass(frozen=True)
class StepContext:
    """What the steps need to know about the launch; built once per command.

    ``token`` is a secret: the runner redacts it from its log and from ``--dry-run``.
    ``reboot_command`` runs on the host when a step asks for a reboot. ``extra`` carries
    values for third-party steps.
    """

    instance: str
    gpu: GpuRequest | None
    notebook_image: str
    token: str = ""
    notebook_container: str = "orchestrate-notebook"
    notebooks_host_dir: str = "~/notebooks"
    notebooks_container_dir: str = "/notebooks"
    remote_port: int = 8888
    autostop: str | None = None
    reboot_command: str = "systemctl reboot || reboot"
    extra: Mapping[str, Any] = field(default_factory=dict)
    cluster: ClusterContext | None = None

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log or the terminal."""
        found = [self.token] + [
            str(v) for k, v in self.extra.items() if "token" in k or "secret" in k
        ]
        return tuple(s for s in found if s)


# -- facts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsFacts:
    id: str = ""
    version: str = ""
    codename: str = ""
    pretty: str = ""
    kernel: str = ""
    arch: str = ""
    boot_id: str = ""
    systemd: bool = False
    apt: bool = False
    secure_boot: bool | None = None


@dataclass(frozen=True)
class UserFacts:
    name: str = ""
    uid: int = -1
    home: str = ""
    #: "root", "sudo" (passwordless) or "none"
    privilege: str = "none"


@dataclass(frozen=True)
class DriverFacts:
    #: version of the loaded kernel module, None when none is loaded
    loaded: str | None = None
    open_modules: bool = False
    #: version of the module installed for the running kernel (modinfo), loaded or not
    installed: str | None = None
    smi_ok: bool = False
    smi: str = ""


@dataclass(frozen=True)
class DockerFacts:
    installed: bool = False
    #: `docker --version`, asked only when the daemon does not answer (else None)
    client_version: str | None = None
    running: bool = False
    server_version: str | None = None
    runtimes: tuple[str, ...] = ()
    default_runtime: str | None = None
    cgroup_driver: str | None = None
    error: str = ""


@dataclass(frozen=True)
class ImageFacts:
    name: str = ""
    present: bool = False
    id: str | None = None
    #: the image's CUDA_VERSION / NVIDIA_REQUIRE_CUDA environment, when it sets them
    cuda_version: str | None = None
    require_cuda: str | None = None


@dataclass(frozen=True)
class ContainerFacts:
    name: str = ""
    #: docker's State.Status ("running", "exited", ...) or None when there is no container
    state: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class Facts:
    """Everything the steps decide on, from one probe. `raw` is the probe's JSON as parsed.

    ``extra`` holds the output of the steps' own probe snippets (`HostStep.probe`), by step
    name, as text for that step to interpret.
    """

    os: OsFacts = field(default_factory=OsFacts)
    user: UserFacts = field(default_factory=UserFacts)
    gpus: tuple[PciGpu, ...] = ()
    driver: DriverFacts = field(default_factory=DriverFacts)
    docker: DockerFacts = field(default_factory=DockerFacts)
    toolkit_version: str | None = None
    image: ImageFacts = field(default_factory=ImageFacts)
    container: ContainerFacts = field(default_factory=ContainerFacts)
    reboot_required: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: HTTP status of Jupyter's /api/status with the context's token on the host's loopback,
    #: when the probe was asked to check (None: not asked, or no HTTP answer); 200 lets a
    #: launch on a set-up host skip its own check through the tunnel
    jupyter_status: int | None = None

    @property
    def has_nvidia_gpu(self) -> bool:
        return bool(self.gpus)

    def gpu_ready(self) -> bool:
        """Driver answering, toolkit installed, docker knows the nvidia runtime, cgroupfs."""
        return (
            self.driver.smi_ok
            and self.toolkit_version is not None
            and self.docker.running
            and "nvidia" in self.docker.runtimes
            and self.docker.cgroup_driver == "cgroupfs"
        )


# -- steps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStep:
    """One idempotent piece of host setup.

    - ``needed(facts)``: whether the step must run, from the probe's facts alone.
    - ``script(context, facts)``: a complete bash script (shellcheck-clean, starting with
      ``set -euo pipefail``) that is safe to run again. It may ask for a reboot by creating
      the file named in ``$ORCHESTRATE_REBOOT_FILE``; the stage then starts nothing new and
      ends once the steps running beside it are done.
    - ``after``: steps that must come first when present in the plan; a name no plugin
      provides is an error. Steps with no dependency path between them run at the same
      time, so a step must name every step whose work it needs (or would disturb).
      ``after_optional``: the same, but a missing step is fine (the notebook comes after
      ``verify`` on GPU hosts, and there is no ``verify`` on CPU hosts).
    - ``follows_changes``: also run when a step it comes after ran in this setup (``verify``
      after a new driver).
    - ``reboot_may_follow``: the script may ask for a reboot (shown by ``--dry-run``).
    - ``stage``: ordering hint among steps with no dependency between them, lower first
      (the order they start in).
    - ``probe``: a POSIX sh snippet added to the probe; its stdout lands in
      ``facts.extra[name]``, so a step can learn what it needs in the same round trip. It
      runs as the login user and may use ``as_root CMD`` (``sudo -n`` when needed, 20 s
      limit), ``has CMD``, ``$image`` and ``$container`` (the context's names); its stderr
      is dropped and its exit status ignored.
    - ``summarize(output, facts)``: one line for the CLI from the step's output.
    - ``warnings(facts)``: things the user should know before it runs (shown, not fatal).
    """

    name: str
    description: str
    needed: Callable[[Facts], bool]
    script: Callable[[StepContext, Facts], str]
    after: tuple[str, ...] = ()
    after_optional: tuple[str, ...] = ()
    follows_changes: bool = False
    reboot_may_follow: bool = False
    stage: int = 50
    probe: str | None = None
    summarize: Callable[[str, Facts], str | None] | None = None
    warnings: Callable[[Facts], Sequence[str]] | None = None


@dataclass(frozen=True)
class StepResult:
    """How one step went: passed to ``orchestrate_after_step`` and kept in the run report."""

    name: str
    ok: bool
    rc: int
    seconds: float
    output_tail: tuple[str, ...] = ()
    summary: str | None = None
    reboot_requested: bool = False


def order_steps(steps: Iterable[HostStep]) -> list[HostStep]:
    """Steps in dependency order (stable: by ``stage``, then as contributed).

    Raises `PluginError` for two steps with one name, a hard dependency no plugin provides,
    or a cycle, naming the steps involved.
    """
    items = list(steps)
    by_name: dict[str, HostStep] = {}
    for step in items:
        if step.name in by_name:
            raise PluginError(f"two plugins contribute a host step named {step.name!r}")
        by_name[step.name] = step
    deps: dict[str, set[str]] = {}
    for step in items:
        missing = [d for d in step.after if d not in by_name]
        if missing:
            raise PluginError(
                f"host step {step.name!r} comes after {', '.join(map(repr, missing))}, "
                "which no plugin provides",
                hint="enable the plugin that provides it, or check the step name",
            )
        deps[step.name] = {d for d in (*step.after, *step.after_optional) if d in by_name}
    position = {step.name: i for i, step in enumerate(items)}
    dependants: dict[str, list[str]] = {name: [] for name in by_name}
    for name, before in deps.items():
        for dep in before:
            dependants[dep].append(name)
    waiting = {name: len(before) for name, before in deps.items()}
    ready = [(by_name[n].stage, position[n], n) for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[HostStep] = []
    while ready:
        _, _, name = heapq.heappop(ready)
        ordered.append(by_name[name])
        for child in dependants[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (by_name[child].stage, position[child], child))
    if len(ordered) != len(items):
        stuck = sorted(n for n, count in waiting.items() if count > 0)
        raise PluginError(f"host steps depend on each other in a cycle: {', '.join(stuck)}")
    return ordered


def collect_steps(hook: Any, context: StepContext) -> list[HostStep]:
    """Every step the plugins contribute for `context`, ordered.

    ``hook`` is the plugin manager's hook relay (``pm.hook``).
    """
    contributed: list[Sequence[HostStep]] = hook.orchestrate_host_steps(context=context)
    return order_steps(step for group in contributed for step in (group or ()))


#: The name of the step that arms the idle power-off (the ``host.autostop`` plugin's).
AUTOSTOP_STEP = "autostop"


def require_autostop(steps: Sequence[HostStep], context: StepContext) -> None:
    """Refuse a plan without an autostop step when the profile has autostop on.

    The promise is that a GPU never bills by accident; a plugin set without the agent (the
    plugin disabled, or registering nothing) would keep it silently. ``autostop = "off"``
    is the way to run without one.
    """
    from orchestrate.core.api.durations import parse_duration
    from orchestrate.core.api.errors import PluginError

    if context.autostop is None or parse_duration(context.autostop, where="autostop") is None:
        return
    if any(step.name == AUTOSTOP_STEP for step in steps):
        return
    raise PluginError(
        f"autostop is on ({context.autostop}) but no plugin plans the autostop step",
        hint="the host.autostop plugin is disabled or did not register; re-enable it, or set "
        'autostop = "off" to run without it',
    )


def plan(steps: Sequence[HostStep], facts: Facts, *, changed: Iterable[str] = ()) -> list[HostStep]:
    """The steps to run, in order: those ``needed(facts)``, plus ``follows_changes`` steps
    after one that runs now or ran earlier in this setup (``changed``)."""
    running: set[str] = set(changed)
    chosen: list[HostStep] = []
    for step in steps:
        deps = set(step.after) | set(step.after_optional)
        if step.needed(facts) or (step.follows_changes and deps & running):
            chosen.append(step)
            running.add(step.name)
    return chosen
