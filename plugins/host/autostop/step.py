"""The ``autostop`` host step: install the agent, keep it configured, re-arm it, remove it.

The agent (`orchestrate.plugins.host.autostop.agent`) runs on the host, so it keeps watching
with the laptop closed. With systemd (every cloud image) a timer runs ``--once`` every
minute; without systemd (containers, the test bed) the step starts ``--loop`` detached
(``setsid nohup``) and the loop records its PID.

What the probe tells the step, in the same round trip (its `PROBE` snippet, as the login
user, no root): the installed agent's version and config hash, whether the timer or the loop
is running, and the agent's last state. The step is needed when:

- the agent is missing, another version, or configured differently (the config hash covers
  the window, port, token, power-off command and the agent's own source);
- it is not running (the loop does not survive a reboot on hosts without systemd);
- the host has been idle for more than half the window (or was powered off by autostop):
  `launch` and `start` re-arm it, so the idle time counts from the moment the user came back,
  not from before; a relaunch soon after the last one finds nothing to do;
- ``autostop = "off"`` and an agent is installed: the step removes it.

Host paths (`HostPaths`): the agent at ``/usr/local/lib/orchestrate/autostop.py``, its config
at ``/etc/orchestrate/autostop.json`` (0600: it holds the notebook token), its state, version
and last-stop files under ``/var/lib/orchestrate/`` (world-readable, no secrets, so ``status``
reads them over SSH without sudo), its log at ``/var/log/orchestrate-autostop.log``.

``context.extra`` keys for test beds and unusual hosts: ``autostop_root`` (a folder every host
path is put under), ``autostop_poweroff_command`` (instead of ``systemctl poweroff``),
``autostop_interval`` (seconds between checks of the loop; the timer is every minute).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from orchestrate.core.api.durations import parse_duration
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.core.api.templates import fill, heredoc_delimiter
from orchestrate.plugins.host.autostop import agent
from orchestrate.plugins.host.ray import layout as ray_layout
from orchestrate.plugins.host.ray.step import container_name as ray_container_name
from orchestrate.plugins.host.shell import step_script

NAME = "autostop"
UNIT = "orchestrate-autostop"
TIMER_SECONDS = 60.0

AGENT_PATH = "/usr/local/lib/orchestrate/autostop.py"
CONFIG_PATH = "/etc/orchestrate/autostop.json"
STATE_DIR = agent.DEFAULT_STATE_DIR
LOG_FILE = agent.DEFAULT_LOG_FILE
PID_FILE = "/run/orchestrate-autostop.pid"
CONFIG_HASH_FILE = "autostop-config.sha256"
UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class HostPaths:
    """Where the agent's files go on the host; ``root`` puts them all under one folder."""

    root: str = ""

    def _at(self, path: str) -> str:
        return self.root.rstrip("/") + path if self.root else path

    @property
    def agent(self) -> str:
        return self._at(AGENT_PATH)

    @property
    def config(self) -> str:
        return self._at(CONFIG_PATH)

    @property
    def state_dir(self) -> str:
        return self._at(STATE_DIR)

    @property
    def log_file(self) -> str:
        return self._at(LOG_FILE)

    @property
    def pid_file(self) -> str:
        return self._at(PID_FILE)

    @property
    def unit_dir(self) -> str:
        return self._at(UNIT_DIR)

    def state(self, name: str) -> str:
        return posixpath.join(self.state_dir, name)


def agent_source() -> str:
    """The agent's source as shipped in this package (what the step installs)."""
    return resources.files(__package__ or "").joinpath("agent.py").read_text(encoding="utf-8")


def window_seconds(context: StepContext) -> float | None:
    """The idle window in seconds; None for ``off``. The profile was validated already."""
    if context.autostop is None:
        return None
    value = parse_duration(context.autostop, where="autostop")
    return float(value) if value is not None else None


def paths_of(context: StepContext) -> HostPaths:
    return HostPaths(str(context.extra.get("autostop_root", "") or ""))


def agent_config(context: StepContext, window: float) -> dict[str, Any]:
    """The agent's JSON config for this launch (holds the token: written 0600 on the host)."""
    paths = paths_of(context)
    interval = float(context.extra.get("autostop_interval", TIMER_SECONDS))
    return {
        "idle_seconds": window,
        "port": context.remote_port,
        "jupyter_url": f"http://127.0.0.1:{context.remote_port}",
        "token": context.token,
        "poweroff_command": str(
            context.extra.get("autostop_poweroff_command") or agent.DEFAULT_POWEROFF
        ),
        "state_dir": paths.state_dir,
        "log_file": paths.log_file,
        "interval": interval,
        "utmp": agent.DEFAULT_UTMP,
        "console": not paths.root,
        **cluster_config(context),
    }


def cluster_config(context: StepContext) -> dict[str, Any]:
    """On a cluster node, what the agent watches besides the host: Ray's work on the head,
    the head's GCS port and its stop request on a worker (the agent's docstring says how
    they stop together); and the node's own Ray container, stopped before its power-off."""
    cluster = context.cluster
    if cluster is None:
        return {}
    return {
        "cluster_role": cluster.role,
        "head_address": cluster.head_address,
        "ray_port": cluster.ray_port,
        "ray_container": ray_container_name(cluster),
        "ray_tmp_dir": ray_layout.tmp_dir(cluster),
        "ray_container_tmp": ray_layout.CONTAINER_TMP,
    }


def config_hash(context: StepContext, window: float) -> str:
    """Changes whenever the installed agent or its config would: the token enters only as
    its own hash, and the agent's source is part of it, so a new agent is reinstalled."""
    config = agent_config(context, window)
    config["token"] = hashlib.sha256(str(config["token"]).encode()).hexdigest()
    data = {"config": config, "agent": hashlib.sha256(agent_source().encode()).hexdigest()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- probe -----------------------------------------------------------------------------------

_PROBE = r"""d=@STATE_DIR@
pidfile=@PID_FILE@
agent=@AGENT@
if [ -r "$d/@HASH_FILE@" ]; then printf 'config=%s\n' "$(head -n 1 "$d/@HASH_FILE@")"; fi
if [ -r "$d/@VERSION_FILE@" ]; then printf 'version=%s\n' "$(head -n 1 "$d/@VERSION_FILE@")"; fi
if command -v python3 >/dev/null 2>&1; then printf 'python3=yes\n'; else printf 'python3=no\n'; fi
running=no
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
    systemctl is-active --quiet @UNIT@.timer; then
    running=timer
fi
if [ "$running" = no ] && [ -r "$pidfile" ]; then
    pid=''
    read -r pid <"$pidfile" || true
    case $pid in
        '' | *[!0-9]*) ;;
        *)
            if [ -r "/proc/$pid/cmdline" ] &&
                tr '\000' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$agent"; then
                running=loop
            fi
            ;;
    esac
fi
printf 'running=%s\n' "$running"
if [ -r "$d/@STATE_FILE@" ]; then printf 'state=%s\n' "$(tr -d '\n' <"$d/@STATE_FILE@")"; fi
if [ -r "$d/@LAST_FILE@" ]; then printf 'last=%s\n' "$(tr -d '\n' <"$d/@LAST_FILE@")"; fi
printf 'now=%s\n' "$(date +%s)"
"""


def probe_snippet(paths: HostPaths) -> str:
    """The step's part of the probe (POSIX sh, as the login user): ``key=value`` lines."""
    values = {
        "@STATE_DIR@": shlex.quote(paths.state_dir),
        "@PID_FILE@": shlex.quote(paths.pid_file),
        "@AGENT@": shlex.quote(paths.agent),
        "@HASH_FILE@": CONFIG_HASH_FILE,
        "@VERSION_FILE@": agent.VERSION_FILE,
        "@STATE_FILE@": agent.STATE_FILE,
        "@LAST_FILE@": agent.LAST_STOP_FILE,
        "@UNIT@": UNIT,
    }
    return fill(_PROBE, values)


@dataclass(frozen=True)
class HostAutostop:
    """What the probe found of the agent on the host."""

    probed: bool = False
    version: str | None = None
    config: str | None = None
    running: str | None = None
    python3: bool = True
    state: dict[str, Any] = field(default_factory=dict)
    last_stop: dict[str, Any] = field(default_factory=dict)
    #: the host's clock when probed (the agent's times are the host's)
    host_now: float | None = None

    @property
    def installed(self) -> bool:
        return bool(self.version or self.config or self.running)

    def idle_for(self) -> float | None:
        """How long the agent has seen the host idle, as of the probe; None when it is in use
        (or nothing says)."""
        if self.state.get("state") not in (agent.IDLE, agent.POWEROFF):
            return None
        since = self.state.get("idle_since")
        if not isinstance(since, (int, float)) or self.host_now is None:
            return None
        return max(self.host_now - since, 0.0)

    def needs_rearm(self, window: float) -> bool:
        """Re-arm at launch/start when less than half the window is left (or after a power-off
        by autostop): the user is back, the host must not stop under them. A relaunch soon
        after the last one finds nothing to do."""
        if self.state.get("state") == agent.POWEROFF:
            return True
        idle = self.idle_for()
        if idle is None:
            return self.state.get("state") == agent.IDLE and self.host_now is None
        return idle > window / 2


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_probe(text: str) -> HostAutostop:
    """`HostAutostop` from the snippet's output (an empty text: the snippet did not run)."""
    if not text.strip():
        return HostAutostop()
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value
    running = values.get("running", "no")
    return HostAutostop(
        probed=True,
        version=values.get("version") or None,
        config=values.get("config") or None,
        running=None if running in ("", "no") else running,
        python3=values.get("python3", "yes") == "yes",
        state=_json_object(values.get("state", "")),
        last_stop=_json_object(values.get("last", "")),
        host_now=float(values["now"]) if values.get("now", "").isdigit() else None,
    )


def host_autostop(facts: Facts) -> HostAutostop:
    """The agent as this step's own probe snippet saw it."""
    return parse_probe(facts.extra.get(NAME, ""))


# -- scripts ---------------------------------------------------------------------------------

_FUNCTIONS = r"""
# stop_loop: end a running --loop agent (found by its PID file, checked by its command line).
stop_loop() {
    local pid=''
    [ -r "$pid_file" ] || return 0
    read -r pid <"$pid_file" || true
    case $pid in
        '' | *[!0-9]*) ;;
        *)
            if [ -r "/proc/$pid/cmdline" ] &&
                tr '\000' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$agent"; then
                kill "$pid" 2>/dev/null || true
                local waited=0
                while [ -d "/proc/$pid" ] && [ "$waited" -lt 50 ]; do
                    sleep 0.1
                    waited=$((waited + 1))
                done
                if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
            fi
            ;;
    esac
    rm -f "$pid_file"
}

with_systemd() { [ -d /run/systemd/system ] && has systemctl; }

# unit_word WORD: WORD as one argument of a systemd Exec line: double-quoted, with systemd's
# specifier (%) and variable ($) signs doubled and quotes and backslashes escaped.
unit_word() {
    local word=$1
    word=${word//\\/\\\\}
    word=${word//\"/\\\"}
    word=${word//%/%%}
    word=${word//\$/\$\$}
    printf '"%s"' "$word"
}
"""

_INSTALL = r"""
need_root
python=$(command -v python3 || true)
[ -n "$python" ] || die "the autostop agent needs python3 on the host (Ubuntu cloud images \
have it); install python3, or set autostop = \"off\" in the profile"
install -d -m 0755 "$(dirname "$agent")" "$state_dir" "$(dirname "$log_file")" \
    "$(dirname "$pid_file")"
install -d -m 0700 "$(dirname "$config")"
tmp=$(mktemp "$(dirname "$agent")/.autostop.XXXXXX")
cat >"$tmp" <<'@AGENT_EOF@'
@AGENT_SOURCE@
@AGENT_EOF@
chmod 0755 "$tmp"
mv -f "$tmp" "$agent"
tmp=$(mktemp "$(dirname "$config")/.autostop.XXXXXX")
chmod 0600 "$tmp"
cat >"$tmp" <<'@CONFIG_EOF@'
@CONFIG_JSON@
@CONFIG_EOF@
mv -f "$tmp" "$config"
"$python" "$agent" --config "$config" --rearm 2>/dev/null
stop_loop
if with_systemd; then
    cat >"$unit_dir/@UNIT@.service" <<EOF
[Unit]
Description=orchestrate autostop: power the host off once the notebook has been idle
After=network-online.target docker.service

[Service]
Type=oneshot
Nice=10
ExecStart=$(unit_word "$python") $(unit_word "$agent") --config $(unit_word "$config") --once
EOF
    cat >"$unit_dir/@UNIT@.timer" <<'EOF'
[Unit]
Description=orchestrate autostop check, every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
EOF
    systemctl daemon-reload
    systemctl enable @UNIT@.timer >/dev/null 2>&1
    systemctl restart @UNIT@.timer
    mode="systemd timer, every minute"
else
    # No systemd (a container): a detached loop in its own session, so it outlives this SSH
    # session; it does not outlive a reboot, and the next launch/start restarts it.
    if has setsid; then
        setsid nohup "$python" "$agent" --config "$config" --loop --pid-file "$pid_file" \
            >/dev/null 2>&1 </dev/null &
    else
        nohup "$python" "$agent" --config "$config" --loop --pid-file "$pid_file" \
            >/dev/null 2>&1 </dev/null &
    fi
    waited=0
    until [ -s "$pid_file" ]; do
        [ "$waited" -lt 100 ] || die "the autostop loop did not start; see $log_file"
        sleep 0.1
        waited=$((waited + 1))
    done
    mode="loop, PID $(cat "$pid_file"), no systemd on this host"
fi
printf '%s\n' "$wanted" >"$state_dir/@HASH_FILE@"
"$python" "$agent" --version >"$state_dir/@VERSION_FILE@"
chmod 0644 "$state_dir/@HASH_FILE@" "$state_dir/@VERSION_FILE@"
log "autostop armed: powers the host off after $window_text idle ($mode)"
"""

_REARM = r"""
need_root
python3 "$agent" --config "$config" --rearm 2>/dev/null
log "autostop re-armed: powers the host off after $window_text idle"
"""

_REMOVE = r"""
need_root
if with_systemd; then
    systemctl disable --now @UNIT@.timer >/dev/null 2>&1 || true
    rm -f "$unit_dir/@UNIT@.timer" "$unit_dir/@UNIT@.service"
    systemctl daemon-reload
fi
stop_loop
rm -f "$agent" "$config" "$state_dir/@HASH_FILE@" "$state_dir/@VERSION_FILE@" \
    "$state_dir/@STATE_FILE@" "$state_dir/@LOCK_FILE@"
log "autostop removed (autostop = off): nothing stops this host when it is idle (history: \
$log_file)"
"""


def install_script(context: StepContext, window: float) -> str:
    """Install (or update) the agent and its config, re-arm it and make sure it runs."""
    paths = paths_of(context)
    source = agent_source().rstrip("\n")
    config = json.dumps(agent_config(context, window), indent=1, sort_keys=True)
    body = fill(
        _FUNCTIONS + _INSTALL,
        {
            "@AGENT_EOF@": heredoc_delimiter(source, "ORCHESTRATE_AUTOSTOP_AGENT"),
            "@CONFIG_EOF@": heredoc_delimiter(config, "ORCHESTRATE_AUTOSTOP_CONFIG"),
            "@AGENT_SOURCE@": source,
            "@CONFIG_JSON@": config,
            "@UNIT@": UNIT,
            "@HASH_FILE@": CONFIG_HASH_FILE,
            "@VERSION_FILE@": agent.VERSION_FILE,
        },
    )
    return step_script(body, _variables(paths, window, config_hash(context, window)))


def rearm_script(context: StepContext, window: float) -> str:
    """Start the idle time over (the agent is installed, current and running)."""
    paths = paths_of(context)
    return step_script(
        _REARM, {"agent": paths.agent, "config": paths.config, "window_text": agent.human(window)}
    )


def remove_script(context: StepContext) -> str:
    """``autostop = "off"``: stop and remove the agent; its log and last-stop file stay."""
    body = fill(
        _FUNCTIONS + _REMOVE,
        {
            "@UNIT@": UNIT,
            "@HASH_FILE@": CONFIG_HASH_FILE,
            "@VERSION_FILE@": agent.VERSION_FILE,
            "@STATE_FILE@": agent.STATE_FILE,
            "@LOCK_FILE@": agent.LOCK_FILE,
        },
    )
    return step_script(body, _variables(paths_of(context), None, ""))


def _variables(paths: HostPaths, window: float | None, wanted: str) -> dict[str, str | int]:
    values: dict[str, str | int] = {
        "agent": paths.agent,
        "config": paths.config,
        "state_dir": paths.state_dir,
        "log_file": paths.log_file,
        "pid_file": paths.pid_file,
        "unit_dir": paths.unit_dir,
    }
    if window is not None:
        values["window_text"] = agent.human(window)
    if wanted:
        values["wanted"] = wanted
    return values


# -- the step --------------------------------------------------------------------------------


def autostop_step(context: StepContext) -> HostStep:
    """The step for this launch: install/re-arm with a window, remove with ``off``."""
    window = window_seconds(context)
    paths = paths_of(context)
    wanted = config_hash(context, window) if window is not None else ""

    def up_to_date(seen: HostAutostop) -> bool:
        return seen.version == agent.AGENT_VERSION and seen.config == wanted and bool(seen.running)

    def needed(facts: Facts) -> bool:
        seen = host_autostop(facts)
        if window is None:
            return seen.installed
        return not up_to_date(seen) or seen.needs_rearm(window)

    def script(ctx: StepContext, facts: Facts) -> str:
        if window is None:
            return remove_script(ctx)
        if up_to_date(host_autostop(facts)):
            return rearm_script(ctx, window)
        return install_script(ctx, window)

    def summarize(output: str, facts: Facts) -> str | None:
        lines = [line for line in output.splitlines() if line.startswith("autostop ")]
        return lines[-1] if lines else None

    def warnings(facts: Facts) -> Sequence[str]:
        seen = host_autostop(facts)
        if window is None:
            return ["autostop is off: nothing stops this instance when it is idle"]
        if seen.probed and not seen.python3:
            return ["the host has no python3: the autostop agent cannot run there"]
        return []

    description = (
        f"autostop agent: power the host off after {agent.human(window)} idle"
        if window is not None
        else "autostop is off: remove the agent"
    )
    return HostStep(
        name=NAME,
        description=description,
        needed=needed,
        script=script,
        # First of all: armed before the driver, docker and the image pull, so a setup that
        # fails or is interrupted later still leaves a host that stops itself. The agent
        # needs only python3, and counts a running setup stage as activity.
        stage=-10,
        probe=probe_snippet(paths),
        summarize=summarize,
        warnings=warnings,
    )
