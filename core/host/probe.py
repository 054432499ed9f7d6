"""The host probe: one remote command that returns every fact the host steps decide on.

One round trip matters: on a set-up host, connect + probe is all `launch` does before it can
say "nothing to do", and each extra command costs two network round trips. So the probe is a
single POSIX sh script sent as the exec request itself (no stdin round trip) that prints one
JSON object.

It cannot count on jq or python3 on the host (a minimal image has neither), so it builds the
JSON itself: `js` quotes any text as a JSON string (backslash, quote and control characters
escaped), and strings without a quote, backslash or control character skip the pipeline and
the subshell (`jv`, `add`): a busy small VM spends a few ms on each fork. The probe never
fails: a fact it cannot learn is null/false, and a command that could hang (nvidia-smi with a
wedged driver, docker with a stuck daemon) runs under `timeout`.

Facts JSON (schema 1)::

    {"schema": 1,
     "os": {"id", "version", "codename", "pretty", "kernel", "arch", "boot_id",
            "systemd": bool, "apt": bool, "secure_boot": bool|null},
     "user": {"name", "uid": int, "home", "privilege": "root"|"sudo"|"none"},
     "gpus": [{"slot", "device_id", "class"}],          # NVIDIA 03xx PCI functions, sysfs
     "lspci": str,                                      # `lspci -nn -d 10de:` (names), or ""
     "driver": {"loaded": str|null, "open": bool, "installed": str|null,
                "smi_ok": bool, "smi": str},            # smi: nvidia-smi's table
     "docker": {"installed": bool, "client": str|null, "running": bool,
                "server": str|null, "runtimes": [str], "default_runtime": str|null,
                "cgroup_driver": str|null, "error": str},  # client: see below
     "toolkit": {"version": str|null},                  # nvidia-ctk --version
     "image": {"name", "present": bool, "id": str|null, "cuda": str|null,
               "require_cuda": str|null},
     "container": {"name", "state": str|null, "image": str|null},
     "reboot_required": bool,                           # /var/run/reboot-required
     "jupyter": int|null,                               # see "Jupyter's answer" below
     "extra": {STEP: str}}                              # HostStep.probe snippets' stdout

docker's client: ``docker --version`` is asked only when the daemon does not answer, to
tell what is installed then; a daemon that answers gives its own version (``server``),
and the probe saves a Go program's start.

Jupyter's answer: asked for (`probe(..., jupyter=True)`), the probe also sends Jupyter's
``GET /api/status`` with the notebook token to the host's 127.0.0.1:REMOTE_PORT, the port
the tunnel forwards to, and reports the HTTP status of the answer (null: not asked, no
container running, or nothing that speaks HTTP answered). On a set-up host a 200 proves
what the check through the tunnel proved, except the tunnel's own forward, in the same
exec: `launch` then shows the URL without a channel and a request of its own. The token
comes on the probe's stdin, sent right behind the exec request (no round trip), and only
bash builtins touch it, so it is never on a command line `ps` shows; bash's /dev/tcp makes
the connection (no curl on a minimal host; bash is what the stages already run).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import HostError
from orchestrate.core.api.gpu_table import PciGpu, normalize_slot, parse_lspci
from orchestrate.core.api.hoststeps import (
    ContainerFacts,
    DockerFacts,
    DriverFacts,
    Facts,
    HostStep,
    ImageFacts,
    OsFacts,
    StepContext,
    UserFacts,
)
from orchestrate.core.api.templates import fill

if TYPE_CHECKING:  # pragma: no cover - types only
    from orchestrate.core.ssh.channelio import CommandResult
    from orchestrate.core.ssh.session import Session

SCHEMA = 1
#: How long a probe may take on the host: each command in it has its own shorter limit.
PROBE_TIMEOUT_S = 120.0
#: The probe's last line: seeing it, the session stops reading without waiting for the exit
#: status sshd sends after the output (most of a round trip on a slow link).
END = "##orchestrate probe-end"

# The script is sh, not Python: keep it readable as shell. @IMAGE@ and @CONTAINER@ are
# replaced with shell-quoted values, @EXTRA@ with the steps' snippets, by `probe_script`.
_PROBE = r"""
# orchestrate host probe: prints one JSON object (see orchestrate/core/host/probe.py).
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
image=@IMAGE@
container=@CONTAINER@
# the notebook's port on the host's loopback, or empty: Jupyter's answer was not asked for
jupyter_port=@JUPYTER_PORT@

has() { command -v "$1" >/dev/null 2>&1; }

# js TEXT: TEXT as a JSON string. Control characters other than tab and newline are dropped,
# tabs become spaces, newlines become \n; backslash and double quote are escaped.
js() {
    case $1 in
        *[\"\\]* | *[[:cntrl:]]*)
            printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\010\013-\037' | tr '\t' ' ' |
                sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' |
                awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }')"
            ;;
        *) printf '"%s"' "$1" ;;
    esac
}
# jv TEXT: sets J to TEXT as a JSON string. Plain text (the usual case) costs no process:
# each $(...) is a fork, a few ms on a busy small VM, and the facts hold dozens of strings.
jv() {
    case $1 in
        *[\"\\]* | *[[:cntrl:]]*) J=$(js "$1") ;;
        *) J="\"$1\"" ;;
    esac
}
# add PREFIX TEXT: appends PREFIX and TEXT as a JSON string to the facts ($o); addn: null
# when TEXT is empty.
add() { jv "$2"; o="$o$1$J"; }
addn() { if [ -n "$2" ]; then add "$1" "$2"; else o="$o${1}null"; fi; }
# tf COMMAND...: sets T to true or false by the command's exit status.
tf() { if "$@"; then T=true; else T=false; fi; }
# t SECONDS COMMAND...: run with a time limit where coreutils' timeout exists.
t() { if has timeout; then timeout "$@"; else shift; "$@"; fi; }

uid=$(id -u)
docker_installed=false docker_client='' docker_running=false docker_info='' docker_error=''
image_present=false image_id='' image_cuda='' image_require='' container_state='' container_image=''
# The docker questions start first and run while the rest is read: each is a Go program's
# start and a daemon request (about 40 ms apiece and 20 ms of CPU on a small VM), the
# longest part of a probe that is on every launch's path, twice on a cold one. The three
# questions for the daemon run at the same time under one sudo, started before the probe
# knows that sudo works (a refused sudo asks nothing, and they are asked again as the
# login user below); Jupyter's answer is asked beside them. Their answers meet in a
# private folder. The client's own version is reported only when the daemon does not
# answer (it then tells what is installed): a daemon that answers says its own version,
# and the probe does not pay a fourth Go start for it. It is asked beside the others
# where the daemon is surely down (no socket at the default path).
dq=''
if has docker; then
    docker_installed=true
    dq=$(mktemp -d 2>/dev/null) || dq=''
fi
root_pid=''
if [ -n "$dq" ]; then
    # shellcheck disable=SC2016
    fmt='{{.ServerVersion}}|{{.CgroupDriver}}|{{.DefaultRuntime}}|{{range $k, $v := .Runtimes}}'
    fmt="$fmt{{\$k}} {{end}}"
    fmt_image='{{.Id}}{{range .Config.Env}}{{println}}{{.}}{{end}}'
    fmt_state='{{.State.Status}}|{{.Config.Image}}'
    # shellcheck disable=SC2016
    ask='{ docker info --format "$2" >"$1/info" 2>&1; echo $? >"$1/info.rc"; } &
        { docker image inspect --format "$3" "$5" >"$1/image" 2>/dev/null
          echo $? >"$1/image.rc"; } &
        { docker inspect --type container --format "$4" "$6" >"$1/state" 2>/dev/null
          echo $? >"$1/state.rc"; } &
        wait'
    # ask_daemon [sudo -n]: the three questions, as root through sudo, or as the login
    ask_daemon() {
        t 20 "$@" sh -c "$ask" sh "$dq" "$fmt" "$fmt_image" "$fmt_state" "$image" "$container" \
            >"$dq/root" 2>&1
    }
    if [ "$uid" -eq 0 ]; then
        ask_daemon &
        root_pid=$!
    elif has sudo; then
        ask_daemon sudo -n &
        root_pid=$!
    fi
    client_pid=''
    if [ -n "${DOCKER_HOST:-}" ] || [ ! -S /var/run/docker.sock ]; then
        docker --version >"$dq/client" 2>/dev/null &
        client_pid=$!
    fi
    jupyter_pid=''
    if [ -n "$jupyter_port" ] && has bash; then
        # Jupyter's answer, beside the docker questions (see the module's docstring). An
        # asynchronous command's stdin is /dev/null in sh: the token's stdin goes through
        # fd 4. HTTP/1.0, so Jupyter closes after its answer; only its status line is read.
        exec 4<&0
        # shellcheck disable=SC2016
        t 3 bash -c '
            IFS= read -r token || [ -n "$token" ] || exit 0
            exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
            printf "GET /api/status HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n%s\r\n\r\n" \
                "$1" "Authorization: token $token" >&3
            IFS=" " read -r proto code _ <&3 || exit 0
            case $proto in HTTP/1.*) printf %s "${code%%[!0-9]*}" ;; esac' sh "$jupyter_port" \
            <&4 >"$dq/jupyter" 2>/dev/null &
        jupyter_pid=$!
        exec 4<&-
    fi
fi

if [ "$uid" -eq 0 ]; then
    privilege=root
elif has sudo && sudo -n true >/dev/null 2>&1; then
    privilege=sudo
else
    privilege=none
fi
# as_root COMMAND...: docker's socket is root's on a fresh host; 20 s at most (a stuck daemon).
as_root() { if [ "$privilege" = sudo ]; then t 20 sudo -n "$@"; else t 20 "$@"; fi; }

ID='' VERSION_ID='' VERSION_CODENAME='' PRETTY_NAME=''
# shellcheck disable=SC1091
[ -r /etc/os-release ] && . /etc/os-release
boot_id=''
[ -r /proc/sys/kernel/random/boot_id ] && read -r boot_id </proc/sys/kernel/random/boot_id
secure_boot=null
for f in /sys/firmware/efi/efivars/SecureBoot-*; do
    [ -r "$f" ] || continue
    case $(od -An -tu1 "$f" 2>/dev/null | awk '{ print $NF }') in
        1) secure_boot=true ;;
        0) secure_boot=false ;;
    esac
done

gpus=''
for dev in /sys/bus/pci/devices/*; do
    [ -r "$dev/vendor" ] || continue
    read -r vendor <"$dev/vendor"
    [ "$vendor" = 0x10de ] || continue
    read -r class <"$dev/class"
    case $class in 0x03*) ;; *) continue ;; esac
    read -r device <"$dev/device"
    jv "${dev##*/}"
    gpus="$gpus${gpus:+,}{\"slot\":$J"
    jv "${device#0x}"
    gpus="$gpus,\"device_id\":$J"
    jv "$class"
    gpus="$gpus,\"class\":$J}"
done
lspci_out=''
if [ -n "$gpus" ] && has lspci; then lspci_out=$(lspci -nn -d 10de: 2>/dev/null); fi

drv_loaded='' drv_open=false drv_installed='' smi_ok=false smi=''
if [ -r /proc/driver/nvidia/version ]; then
    drv_loaded=$(awk '/NVRM/ { for (i = 1; i <= NF; i++)
        if ($i ~ /^[0-9]+\.[0-9]+(\.[0-9]+)?$/) { print $i; exit } }' /proc/driver/nvidia/version)
    grep -q 'Open Kernel' /proc/driver/nvidia/version && drv_open=true
fi
if [ -n "$gpus" ] && has modinfo; then
    drv_installed=$(modinfo -F version nvidia 2>/dev/null | head -n 1)
fi
if has nvidia-smi; then
    if smi=$(t 30 nvidia-smi 2>&1); then smi_ok=true; fi
fi
toolkit=''
if has nvidia-ctk; then
    toolkit=$(nvidia-ctk --version 2>/dev/null | awk '/version/ { print $NF; exit }')
fi
uname_rm=$(uname -r -m)
user_name=$(id -un)
# the steps' snippets (HostStep.probe), as the members of "extra", while docker answers
o=''
@EXTRA@
extra=$o

if [ -n "$dq" ]; then
    # its own jobs only: a caller may have started others in this shell (the stage beside
    # the probe after a reboot, `stagescript.probe_then_stage_command`)
    [ -z "$root_pid" ] || wait "$root_pid"
    # no sudo: a login in the docker group may still ask the daemon itself
    [ "$privilege" != none ] || ask_daemon
    [ -z "$client_pid" ] || wait "$client_pid"
    [ -n "$jupyter_pid" ] && wait "$jupyter_pid"
    # answers are read with the shell's own read, without a process each
    rc=''
    [ -r "$dq/info.rc" ] && read -r rc <"$dq/info.rc"
    if [ "$rc" = 0 ]; then
        docker_running=true
        { read -r docker_info <"$dq/info"; } 2>/dev/null || :
    else
        docker_error=$(cat "$dq/info" "$dq/root" 2>/dev/null | tail -n 1)
        if [ -n "$client_pid" ]; then
            { read -r docker_client <"$dq/client"; } 2>/dev/null || :
        else
            docker_client=$(docker --version 2>/dev/null)
        fi
    fi
fi
if [ "$docker_running" = true ]; then
    rc=''
    [ -r "$dq/image.rc" ] && read -r rc <"$dq/image.rc"
    if [ "$rc" = 0 ]; then
        image_present=true
        # the image's id on the first line, then its environment: the first of each
        # variable counts
        first=true
        while IFS= read -r line || [ -n "$line" ]; do
            if [ "$first" = true ]; then
                image_id=$line first=false
                continue
            fi
            case $line in
                CUDA_VERSION=*) [ -n "$image_cuda" ] || image_cuda=${line#CUDA_VERSION=} ;;
                NVIDIA_REQUIRE_CUDA=*)
                    [ -n "$image_require" ] || image_require=${line#NVIDIA_REQUIRE_CUDA=} ;;
            esac
        done <"$dq/image"
    fi
    rc=''
    [ -r "$dq/state.rc" ] && read -r rc <"$dq/state.rc"
    if [ "$rc" = 0 ]; then
        state=''
        { read -r state <"$dq/state"; } 2>/dev/null || :
        container_state=${state%%|*}
        container_image=${state#*|}
    fi
fi
jupyter=''
if [ "$container_state" = running ] && [ -n "$dq" ]; then
    { read -r jupyter <"$dq/jupyter"; } 2>/dev/null || :
fi
case $jupyter in '' | *[!0-9]*) jupyter=null ;; esac
# removed in the background: the facts do not wait for it
[ -n "$dq" ] && { rm -rf "$dq" >/dev/null 2>&1 & }

IFS='|' read -r d_server d_cgroup d_default d_runtimes <<EOF
$docker_info
EOF
runtimes=''
for r in $d_runtimes; do jv "$r"; runtimes="$runtimes${runtimes:+,}$J"; done

# The facts are built in one variable and printed with one write at the end: sshd sends
# output as it reads it, and with Nagle on its side each later small piece would wait a
# round trip for an ACK.
o='{"schema":1'
add ',"os":{"id":' "$ID"
add ',"version":' "$VERSION_ID"
add ',"codename":' "$VERSION_CODENAME"
add ',"pretty":' "$PRETTY_NAME"
add ',"kernel":' "${uname_rm% *}"
add ',"arch":' "${uname_rm##* }"
add ',"boot_id":' "$boot_id"
tf test -d /run/systemd/system
o="$o,\"systemd\":$T"
tf has apt-get
o="$o,\"apt\":$T,\"secure_boot\":$secure_boot}"
add ',"user":{"name":' "$user_name"
o="$o,\"uid\":$uid"
add ',"home":' "${HOME:-}"
o="$o,\"privilege\":\"$privilege\"},\"gpus\":[$gpus]"
add ',"lspci":' "$lspci_out"
addn ',"driver":{"loaded":' "$drv_loaded"
o="$o,\"open\":$drv_open"
addn ',"installed":' "$drv_installed"
o="$o,\"smi_ok\":$smi_ok"
add ',"smi":' "$smi"
o="$o},\"docker\":{\"installed\":$docker_installed"
addn ',"client":' "$docker_client"
o="$o,\"running\":$docker_running"
addn ',"server":' "${d_server:-}"
o="$o,\"runtimes\":[$runtimes]"
addn ',"default_runtime":' "${d_default:-}"
addn ',"cgroup_driver":' "${d_cgroup:-}"
add ',"error":' "$docker_error"
addn '},"toolkit":{"version":' "$toolkit"
add '},"image":{"name":' "$image"
o="$o,\"present\":$image_present"
addn ',"id":' "$image_id"
addn ',"cuda":' "$image_cuda"
addn ',"require_cuda":' "$image_require"
add '},"container":{"name":' "$container"
addn ',"state":' "$container_state"
addn ',"image":' "$container_image"
tf test -e /var/run/reboot-required
o="$o},\"reboot_required\":$T,\"jupyter\":$jupyter,\"extra\":{$extra}}"
printf '%s\n%s\n' "$o" '@END@'
"""

_EXTRA_ITEM = """\
extra_out=$( {{
{snippet}
}} 2>/dev/null </dev/null ) || true
add {prefix} "$extra_out"
"""


def probe_script(
    context: StepContext, steps: Iterable[HostStep] = (), *, jupyter: bool = False
) -> str:
    """The probe for `context` (its image and container names), with every step's snippet;
    with `jupyter`, it also asks Jupyter on the notebook's port, reading the token from its
    stdin (`probe` sends it). Without, it never reads stdin: after a reboot the stage
    follows the probe on the same stdin (`stagescript.probe_then_stage_command`)."""
    extras = []
    for i, step in enumerate(s for s in steps if s.probe):
        extras.append(
            _EXTRA_ITEM.format(
                snippet=step.probe,
                prefix=shlex.quote(("," if i else "") + json.dumps(step.name) + ":"),
            )
        )
    return fill(
        _PROBE.lstrip("\n"),
        {
            "@IMAGE@": shlex.quote(context.notebook_image),
            "@CONTAINER@": shlex.quote(context.notebook_container),
            "@EXTRA@": "".join(extras).rstrip("\n"),
            "@JUPYTER_PORT@": str(int(context.remote_port)) if jupyter else "''",
            "@END@": END,
        },
    )


def probe_command(script: str) -> str:
    """The exec request that runs the probe: the script is the command itself, so the
    probe costs one channel open and one exec, with no stdin to send."""
    return "sh -c " + shlex.quote(script)


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _status(value: Any) -> int | None:
    """An HTTP status from the facts (a bool is no status, though Python calls it an int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_facts(text: str) -> Facts:
    """Facts from the probe's output; `HostError` (with the output's start) if it is not
    the JSON object the probe prints, which means the host's shell mangled it."""
    start = text.find("{")
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:] if start >= 0 else text)
    except json.JSONDecodeError as exc:
        raise HostError(
            f"the host probe printed something that is not JSON ({exc}): {text[:200]!r}",
            hint="the login shell printed extra output; check the user's shell profile",
        ) from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise HostError(f"the host probe answered an unknown schema: {text[:200]!r}")
    return facts_from_dict(data)


def facts_from_dict(data: Mapping[str, Any]) -> Facts:
    """Facts from the probe's JSON, tolerant of missing keys (an older probe, a test)."""
    os_ = _map(data.get("os"))
    user = _map(data.get("user"))
    drv = _map(data.get("driver"))
    dock = _map(data.get("docker"))
    img = _map(data.get("image"))
    cont = _map(data.get("container"))
    names = {normalize_slot(g.slot): g.name for g in parse_lspci(_s(data.get("lspci")))}
    gpus = tuple(
        PciGpu(
            slot=_s(g.get("slot")),
            device_id=_s(g.get("device_id")).lower(),
            name=names.get(normalize_slot(_s(g.get("slot"))), ""),
        )
        for g in data.get("gpus", [])
        if isinstance(g, dict)
    )
    uid = user.get("uid")
    secure_boot = os_.get("secure_boot")
    return Facts(
        os=OsFacts(
            id=_s(os_.get("id")),
            version=_s(os_.get("version")),
            codename=_s(os_.get("codename")),
            pretty=_s(os_.get("pretty")),
            kernel=_s(os_.get("kernel")),
            arch=_s(os_.get("arch")),
            boot_id=_s(os_.get("boot_id")),
            systemd=os_.get("systemd") is True,
            apt=os_.get("apt") is True,
            secure_boot=secure_boot if isinstance(secure_boot, bool) else None,
        ),
        user=UserFacts(
            name=_s(user.get("name")),
            uid=uid if isinstance(uid, int) else -1,
            home=_s(user.get("home")),
            privilege=_s(user.get("privilege")) or "none",
        ),
        gpus=gpus,
        driver=DriverFacts(
            loaded=_opt(drv.get("loaded")),
            open_modules=drv.get("open") is True,
            installed=_opt(drv.get("installed")),
            smi_ok=drv.get("smi_ok") is True,
            smi=_s(drv.get("smi")),
        ),
        docker=DockerFacts(
            installed=dock.get("installed") is True,
            client_version=_opt(dock.get("client")),
            running=dock.get("running") is True,
            server_version=_opt(dock.get("server")),
            runtimes=tuple(r for r in dock.get("runtimes", []) if isinstance(r, str)),
            default_runtime=_opt(dock.get("default_runtime")),
            cgroup_driver=_opt(dock.get("cgroup_driver")),
            error=_s(dock.get("error")),
        ),
        toolkit_version=_opt(_map(data.get("toolkit")).get("version")),
        image=ImageFacts(
            name=_s(img.get("name")),
            present=img.get("present") is True,
            id=_opt(img.get("id")),
            cuda_version=_opt(img.get("cuda")),
            require_cuda=_opt(img.get("require_cuda")),
        ),
        container=ContainerFacts(
            name=_s(cont.get("name")),
            state=_opt(cont.get("state")),
            image=_opt(cont.get("image")),
        ),
        reboot_required=data.get("reboot_required") is True,
        jupyter_status=_status(data.get("jupyter")),
        extra={k: v for k, v in _map(data.get("extra")).items() if isinstance(v, str)},
        raw=dict(data),
    )


def probe_ended(out: str) -> bool:
    """Whether the probe's output so far is complete (its last line came)."""
    return out.endswith(f"\n{END}\n")


def facts_from_result(result: CommandResult) -> Facts:
    """Facts from a finished probe; `HostError` when it failed before printing them."""
    if result.rc != 0 and "{" not in result.stdout:
        raise HostError(
            f"the host probe failed with exit status {result.rc}: "
            f"{(result.stderr or result.stdout).strip()[-300:]}"
        )
    return parse_facts(result.stdout)


def probe(
    session: Session,
    context: StepContext,
    steps: Iterable[HostStep] = (),
    *,
    timeout: float = PROBE_TIMEOUT_S,
    jupyter: bool = False,
) -> Facts:
    """Run the probe over `session` and parse it: one channel, one exec. With `jupyter`,
    the facts also say how Jupyter answered the context's token on the host
    (`Facts.jupyter_status`); the token goes on stdin, behind the exec request."""
    if jupyter:
        command, stdin = probe_request(context, steps)
    else:
        command, stdin = probe_command(probe_script(context, steps)), None
    return facts_from_result(run_probe(session, command, stdin, timeout))


def run_probe(
    session: Session, command: str, stdin: str | None, timeout: float = PROBE_TIMEOUT_S
) -> CommandResult:
    """One exec of a probe `command` (with `stdin`: the token, for `probe_request`'s), read
    up to its end marker: here, and in the background tunnel process that probes for a
    `launch --detach`."""
    return session.run(command, stdin=stdin, timeout=timeout, done_when=probe_ended)


def probe_request(context: StepContext, steps: Iterable[HostStep] = ()) -> tuple[str, str]:
    """The probe that also asks Jupyter, as an exec command and its stdin (the token): what
    `probe(..., jupyter=True)` sends, and what a launch hands the background tunnel process
    that connects for it."""
    return probe_command(probe_script(context, steps, jupyter=True)), context.token + "\n"
