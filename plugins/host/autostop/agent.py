#!/usr/bin/env python3
"""orchestrate's autostop agent: powers an idle notebook host off so a forgotten GPU stops
billing. It runs ON THE HOST, from a systemd timer (``--once`` every minute) or as a loop
(``--loop``, for hosts without systemd), so it works with the user's laptop closed.

The host is idle when, for the whole window:

- no established TCP connection reaches the notebook port. An SSH tunnel from the laptop
  arrives through sshd, which connects to 127.0.0.1:PORT on the host for each browser
  connection, so an open notebook tab counts while an idle tunnel does not;
- no Jupyter kernel is busy and none was active within the window (Jupyter's own
  ``/api/kernels``, read with the notebook token), and no Jupyter terminal was either;
- nobody is logged in (utmp ``USER_PROCESS`` entries of live processes: interactive SSH
  sessions. A tunnel or a plain ``ssh host command`` allocates no terminal and is no login).

On a Ray cluster (``cluster_role`` in the config) the nodes decide together without any
cloud credentials, new port or SSH key on the head. The head also counts Ray's own work as
activity: any CPU or GPU that ``ray status`` reports in use on any node (running tasks and
actors, busy GPUs included). When the cluster has been idle for the window, the head stops
the workers first, then itself:

- through its own Ray container (whose environment already points Ray at the cluster's
  token file), it runs a small driver (`STOP_WORKERS_DRIVER`, on stdin: nothing on a command
  line) that pins one task to each alive worker (hard node affinity). The task writes a
  stop request (`STOP_REQUEST_NAME`) into Ray's temp folder, which the worker's Ray
  container mounts from its host;
- each worker's agent looks for that file at every check. A request older than the node's
  boot or the agent's last arming (``launch``/``start``) is stale: left from before a stop,
  it must not power a freshly started node off. Every request is consumed (deleted) before
  the agent acts on it, so one request stops a node once. A fresh one powers the node off
  at once (Ray's container stopped first, so it leaves Ray's node table), unless someone is
  logged in to the worker: then the worker stays up and its own window rule below decides;
- the head waits, at most two checks and a minute (`Config.worker_wait`), until the asked
  workers have left Ray's node table, then stops its own Ray container and powers off. It
  records what it did ("asked 2 workers to stop; 2 left Ray within 10 s"), which ``status``
  shows.

Each worker also counts "the head answers on its GCS port" as its activity, so a worker
that was not asked (it could not be reached, or someone was logged in) powers itself off a
window after it last heard from the head, and just the same when the head was lost: the
head never waits forever, and workers never bill on their own.

Then it writes why to its log and to a last-stop file, and runs the power-off command
(``systemctl poweroff``): on GCE and EC2 a guest power-off stops the instance, which stops
compute and GPU billing.

Why it is written this way: it must run on any cloud image with nothing installed, so it
uses the Python 3 standard library alone (Ubuntu cloud images ship python3; Python 3.8 and
newer, so no syntax from later versions outside annotations), reads ``/proc/net/tcp*`` itself
instead of needing ``ss``, and parses utmp itself instead of needing ``who``. Every decision
is in `decide`, a pure function, so the same logic is what the tests run for real.

An unreadable kernel list (a wrong token, Jupyter hanging) counts as activity, logged and
shown by ``orchestrate status``: stopping a host in the middle of someone's training because
the agent could not see it would be worse than billing a little longer. A Jupyter that does
not answer at all (container stopped) has no kernels to protect.
"""

from __future__ import annotations

import argparse
import calendar
import errno
import fcntl
import http.client
import json
import os
import posixpath
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

AGENT_VERSION = "1.1.0"

DEFAULT_CONFIG = "/etc/orchestrate/autostop.json"
DEFAULT_STATE_DIR = "/var/lib/orchestrate"
DEFAULT_LOG_FILE = "/var/log/orchestrate-autostop.log"
DEFAULT_UTMP = "/var/run/utmp"
DEFAULT_POWEROFF = "systemctl poweroff || shutdown -h now || poweroff"
DEFAULT_INTERVAL = 60.0

#: Files in the state folder. The step's own probe snippet reads the version file; all are
#: world-readable and hold no secret, so `status` can read them over SSH without root.
VERSION_FILE = "autostop-agent.version"
STATE_FILE = "autostop-state.json"
LAST_STOP_FILE = "autostop-last.json"
LOCK_FILE = "autostop.lock"
#: In a cluster node's Ray temp folder: the head's request that the worker power off. Ray's
#: temp folder because it is the one place a task on the worker (which runs as the login user
#: in the worker's Ray container) and the worker's agent (root, on the host) both reach.
STOP_REQUEST_NAME = "orchestrate-stop-request.json"

#: A gap this long without a check means nobody watched the host meanwhile: the idle time
#: starts over rather than counting time the agent did not see (at least 5 minutes).
GAP_CHECKS = 5
GAP_MIN_SECONDS = 300.0

LOG_MAX_BYTES = 1 << 20

#: What the command line of a host-setup stage holds: orchestrate's runner writes each stage
#: to a file named like this and runs it with bash (core/host/runner.py; a test holds the two
#: together). A stage running counts as activity, so the agent, armed first, never powers a
#: host off in the middle of a long driver install; a stage older than the window (a hung
#: apt) counts no more, so a stuck setup does not keep a GPU billing for ever.
SETUP_MARK = "/tmp/orchestrate-stage-script."

# glibc's struct utmp on 64-bit Linux (x86_64, aarch64): 384 bytes.
_UTMP = struct.Struct("=hxxi32s4s32s256shhiii4i20s")
_USER_PROCESS = 7
_TCP_ESTABLISHED = "01"
#: Only "busy": Jupyter reports a kernel no client has talked to yet as "starting" forever
#: (measured with Notebook 6 and jupyter_server), and such a kernel must not keep a host up;
#: its start time is its last_activity, which the window covers.
_BUSY_STATES = ("busy",)

if TYPE_CHECKING:  # annotations only: `dict[str, Any]` cannot be evaluated on Python 3.8
    JsonDict = dict[str, Any]


# -- configuration -------------------------------------------------------------------------


@dataclass
class Config:
    """What the agent watches and does. Read from the JSON config file (0600, root: it holds
    the notebook token), then overridden by command-line flags."""

    idle_seconds: float
    port: int = 8888
    jupyter_url: str = "http://127.0.0.1:8888"
    token: str = ""
    poweroff_command: str = DEFAULT_POWEROFF
    state_dir: str = DEFAULT_STATE_DIR
    log_file: str = DEFAULT_LOG_FILE
    interval: float = DEFAULT_INTERVAL
    utmp: str = DEFAULT_UTMP
    #: also write the power-off reason to the kernel log, which reaches the serial console
    #: (GCE's getSerialPortOutput, EC2's GetConsoleOutput) even after the host is off
    console: bool = True
    #: "" on a lone instance; "head" or "worker" on a Ray cluster's node
    cluster_role: str = ""
    #: the head's internal address and GCS port (what a worker watches)
    head_address: str = ""
    ray_port: int = 6379
    #: this node's Ray container: the head's is asked by ``ray status`` and runs the driver
    #: that stops the workers; every node's is stopped before its power-off
    ray_container: str = "orchestrate-ray-head"
    #: on a cluster node, the host folder its Ray container mounts as Ray's temp folder
    #: (``ray_container_tmp``): where the head's stop request reaches a worker
    ray_tmp_dir: str = ""
    ray_container_tmp: str = "/tmp/ray"
    #: how long the head waits for the asked workers to leave Ray; 0: `worker_wait` decides
    worker_stop_wait: float = 0.0

    @classmethod
    def from_dict(cls, data: JsonDict) -> Config:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "idle_seconds" not in known:
            raise ValueError("the autostop config has no idle_seconds")
        config = cls(**known)
        config.idle_seconds = float(config.idle_seconds)
        config.interval = float(config.interval)
        config.port = int(config.port)
        config.ray_port = int(config.ray_port)
        config.worker_stop_wait = float(config.worker_stop_wait)
        if config.cluster_role not in ("", "head", "worker"):
            raise ValueError(f"unknown cluster_role {config.cluster_role!r}")
        if config.idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        return config

    def path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def stop_request_file(self) -> str:
        """Where a worker finds the head's stop request on its host ("" off a cluster)."""
        return os.path.join(self.ray_tmp_dir, STOP_REQUEST_NAME) if self.ray_tmp_dir else ""

    def worker_wait(self) -> float:
        """How long the head waits for asked workers to leave Ray: a worker sees the request
        at its next check (a minute apart under the timer), then stops its Ray container
        (up to 30 s). Two checks and a minute cover both; a worker that takes longer stops
        itself by its own window rule anyway."""
        return self.worker_stop_wait or 2 * self.interval + 60.0


def parse_duration(text: str) -> float:
    """Seconds in "90s", "60m", "2h", "1d"; a bare number is minutes (like the profiles)."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 90s")
    unit = match.group(2) or "m"
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def human(seconds: float) -> str:
    """How the window and idle times read in messages: "3 s", "60 min", "90 min", "4.5 h"."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


# -- observing the host --------------------------------------------------------------------


@dataclass
class KernelView:
    """What Jupyter said about its kernels and terminals."""

    reachable: bool = False
    error: str | None = None
    kernels: int = 0
    busy: list[str] = field(default_factory=list)
    #: (name, time of its last activity) of every kernel and terminal that reports one
    activity: list[tuple[str, float]] = field(default_factory=list)

    def recent(self, now: float, window: float) -> list[tuple[str, float]]:
        """(name, seconds ago) of kernels and terminals active within the window."""
        return [(name, max(now - t, 0.0)) for name, t in self.activity if now - t < window]


@dataclass
class Observation:
    """One look at the host: everything `decide` needs, gathered in `observe`."""

    now: float
    boot_id: str
    connections: list[str]
    jupyter: KernelView
    logins: list[str]
    #: how long each host-setup stage running now has been running, in seconds
    setups: list[float] = field(default_factory=list)
    #: on a cluster's head: Ray's work in progress ("ray: 2 CPU, 1 GPU in use"), or why
    #: Ray could not be read (which counts as activity, like an unreadable Jupyter)
    ray: list[str] = field(default_factory=list)
    #: on a cluster's worker: whether the head answered on its GCS port; None elsewhere
    head_answers: bool | None = None
    #: on a cluster's worker: when the head's stop request was written (its file's time on
    #: this host's clock); None when there is none
    stop_request: float | None = None
    #: when this host booted (seconds since the epoch), for telling a stale request
    booted_at: float | None = None

    def fresh_setups(self, window: float) -> list[float]:
        return [age for age in self.setups if age < window]

    def activity(self, window: float) -> list[str]:
        """Why the host is in use now; an empty list means idle."""
        reasons: list[str] = []
        for age in self.fresh_setups(window):
            reasons.append(f"host setup in progress for {human(age)}")
        if self.connections:
            shown = ", ".join(self.connections[:3])
            more = f" (+{len(self.connections) - 3})" if len(self.connections) > 3 else ""
            reasons.append(f"{len(self.connections)} connection(s) to the notebook: {shown}{more}")
        if self.jupyter.error:
            reasons.append(f"cannot read Jupyter's kernels ({self.jupyter.error}): not stopping")
        if self.jupyter.busy:
            reasons.append(f"kernel busy: {', '.join(self.jupyter.busy)}")
        for name, age in self.jupyter.recent(self.now, window):
            reasons.append(f"{name} active {human(age)} ago")
        if self.logins:
            reasons.append(f"logged in: {', '.join(self.logins)}")
        reasons.extend(self.ray)
        if self.head_answers:
            reasons.append("the cluster's head answers")
        return reasons

    def in_use_now(self, window: float = float("inf")) -> bool:
        """Activity at this very moment (as opposed to kernel activity in the past)."""
        return bool(
            self.connections
            or self.logins
            or self.jupyter.busy
            or self.jupyter.error
            or self.fresh_setups(window)
            or self.ray
            or self.head_answers
        )

    def local_use(self) -> list[str]:
        """What keeps a worker up against the head's stop request: someone using this very
        node (a login, a notebook connection, a busy kernel). The head answering does not,
        and neither does a setup stage: the head stopping the cluster is the end of it."""
        reasons: list[str] = []
        if self.connections:
            reasons.append(f"{len(self.connections)} connection(s) to the notebook")
        if self.logins:
            reasons.append(f"logged in: {', '.join(self.logins)}")
        if self.jupyter.busy:
            reasons.append(f"kernel busy: {', '.join(self.jupyter.busy)}")
        return reasons

    def idle_summary(self, port: int, window: float) -> str:
        kernels = (
            f"{self.jupyter.kernels} kernel(s), none busy or active in the last {human(window)}"
            if self.jupyter.reachable
            else "Jupyter not answering"
        )
        summary = f"no connection to port {port}; {kernels}; nobody logged in"
        if self.head_answers is False:
            summary += "; the cluster's head does not answer"
        return summary


def _hex_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _hex_address(address: str) -> str:
    """ "0100007F:22B8" -> "127.0.0.1:8888" (kernel order: 32-bit words, host endianness)."""
    host, port = address.rsplit(":", 1)
    raw = bytes.fromhex(host)
    words = b"".join(
        struct.pack("=I", struct.unpack(">I", raw[i : i + 4])[0]) for i in range(0, len(raw), 4)
    )
    if len(words) == 4:
        text = socket.inet_ntop(socket.AF_INET, words)
    else:
        text = socket.inet_ntop(socket.AF_INET6, words)
        if text.startswith("::ffff:"):
            text = text[len("::ffff:") :]
        text = f"[{text}]" if ":" in text else text
    return f"{text}:{int(port, 16)}"


def connections_to(
    port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")
) -> list[str]:
    """Established TCP connections with the notebook port at either end, as "a -> b".

    Both ends count: the server side (a client connected to Jupyter's published port) and the
    client side (sshd forwarding a tunnel connects *to* the port). One browser connection
    through a tunnel therefore shows as two entries: sshd's and docker-proxy's.
    """
    found: list[str] = []
    for table in tables:
        try:
            with open(table, encoding="ascii") as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _TCP_ESTABLISHED:
                continue
            local, remote = fields[1], fields[2]
            if _hex_port(local) == port or _hex_port(remote) == port:
                found.append(f"{_hex_address(remote)} -> {_hex_address(local)}")
    return found


_ISO = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$")


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of Jupyter's ISO 8601 times ("2025-01-15T12:00:00.123456Z")."""
    match = _ISO.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    stamp = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    if match.group(7):
        stamp += float("0." + match.group(7))
    zone = match.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        stamp -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return stamp


def read_kernels(kernels: Any, terminals: Any, now: float) -> KernelView:
    """A `KernelView` from Jupyter's /api/kernels and /api/terminals answers (parsed JSON).

    A kernel is busy when its ``execution_state`` is busy; every kernel's and
    terminal's ``last_activity`` is kept, so the idle time counts from the latest one.
    """
    if not isinstance(kernels, list):
        return KernelView(reachable=True, error="/api/kernels did not answer a list")
    view = KernelView(reachable=True, kernels=len(kernels))
    for kernel in kernels:
        if not isinstance(kernel, dict):
            continue
        name = f"kernel {str(kernel.get('id', '?'))[:8]} ({kernel.get('name', '?')})"
        if kernel.get("execution_state") in _BUSY_STATES:
            view.busy.append(name)
        last = parse_time(str(kernel.get("last_activity") or ""))
        if last is not None:
            view.activity.append((name, min(last, now)))
    for terminal in terminals if isinstance(terminals, list) else []:
        if not isinstance(terminal, dict):
            continue
        last = parse_time(str(terminal.get("last_activity") or ""))
        if last is not None:
            view.activity.append((f"terminal {terminal.get('name', '?')}", min(last, now)))
    return view


def _get_json(url: str, token: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _down(exc: BaseException) -> bool:
    """Jupyter is not running: refused, or reset by docker-proxy with no container behind."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(
        exc, (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected)
    ):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET)


def query_jupyter(config: Config, now: float, timeout: float = 10.0) -> KernelView:
    """Ask Jupyter for its kernels (and terminals, where the server has them)."""
    if not config.jupyter_url or not config.token:
        return KernelView(reachable=False)
    base = config.jupyter_url.rstrip("/")
    try:
        kernels = _get_json(f"{base}/api/kernels", config.token, timeout)
    except urllib.error.HTTPError as exc:
        hint = " (wrong token?)" if exc.code in (401, 403) else ""
        return KernelView(reachable=True, error=f"HTTP {exc.code} from /api/kernels{hint}")
    except Exception as exc:  # anything else: down, or unreadable
        if _down(exc):
            return KernelView(reachable=False)
        return KernelView(reachable=True, error=f"{type(exc).__name__}: {exc}")
    try:
        terminals = _get_json(f"{base}/api/terminals", config.token, timeout)
    except Exception:  # terminals are optional (404 without terminado): kernels decide
        terminals = []
    return read_kernels(kernels, terminals, now)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def utmp_logins(path: str = DEFAULT_UTMP, proc: str = "/proc") -> list[str]:
    """Interactive logins from utmp: USER_PROCESS entries whose process is still alive
    (a crashed sshd can leave a stale entry behind)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    found: list[str] = []
    size = _UTMP.size
    for offset in range(0, len(data) - size + 1, size):
        entry = _UTMP.unpack_from(data, offset)
        kind, pid, line, user, host = entry[0], entry[1], entry[2], entry[4], entry[5]
        if kind != _USER_PROCESS or not os.path.exists(os.path.join(proc, str(pid))):
            continue
        where = f" from {_cstr(host)}" if _cstr(host) else ""
        found.append(f"{_cstr(user)} on {_cstr(line)}{where}")
    return found


def logind_logins(folder: str = "/run/systemd/sessions") -> list[str]:
    """Interactive logins from systemd-logind's session files, for hosts without utmp:
    sessions with a terminal (a tunnel or `ssh host cmd` session has none)."""
    found: list[str] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        if name.endswith(".ref"):
            continue
        values: dict[str, str] = {}
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                for line in handle:
                    key, _, value = line.rstrip("\n").partition("=")
                    values[key] = value
        except OSError:
            continue
        if values.get("TTY") and values.get("STATE", "active") in ("active", "online"):
            where = f" from {values['REMOTE_HOST']}" if values.get("REMOTE_HOST") else ""
            found.append(f"{values.get('USER', '?')} on {values['TTY']}{where}")
    return found


def logins(config: Config) -> list[str]:
    if os.path.exists(config.utmp):
        return utmp_logins(config.utmp)
    return logind_logins()


def setup_ages(proc: str = "/proc", mark: str = SETUP_MARK) -> list[float]:
    """Seconds each running host-setup stage has been running (see `SETUP_MARK`), from the
    processes' start times in /proc: no file to leave behind when a launch dies."""
    try:
        with open(os.path.join(proc, "uptime"), encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        names = os.listdir(proc)
    except (OSError, ValueError, IndexError):
        return []
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    ages: list[float] = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "cmdline"), "rb") as handle:
                if mark.encode() not in handle.read():
                    continue
            with open(os.path.join(proc, name, "stat"), encoding="utf-8") as handle:
                # the fields after the command name, which is in parentheses and may hold spaces
                fields = handle.read().rsplit(")", 1)[1].split()
            ages.append(max(uptime - int(fields[19]) / ticks, 0.0))
        except (OSError, ValueError, IndexError):
            continue
    return ages


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


_RAY_USAGE = re.compile(r"^\s*([\d.]+)/([\d.]+)\s+(CPU|GPU)\s*$", re.MULTILINE)
_RAY_NODE = re.compile(r"^\s*(\d+)\s+node_[0-9a-f]+", re.MULTILINE)


def parse_ray_status(text: str) -> JsonDict | None:
    """``ray status``'s report as ``{"nodes", "CPU": [used, total], "GPU": [used, total]}``;
    None when the text is not Ray's report. Also what ``orchestrate status`` shows."""
    if "Active:" not in text:
        return None
    active = text.split("Active:", 1)[1].split("Pending:", 1)[0]
    view: JsonDict = {"nodes": sum(int(m.group(1)) for m in _RAY_NODE.finditer(active))}
    for kind in ("CPU", "GPU"):
        view[kind] = [0.0, 0.0]
    for match in _RAY_USAGE.finditer(text):
        view[match.group(3)] = [float(match.group(1)), float(match.group(2))]
    return view


def ray_in_use(view: JsonDict) -> list[str]:
    """The activity in a parsed report: resources in use mean tasks or actors running."""
    busy = [f"{view[k][0]:g} {k}" for k in ("CPU", "GPU") if view[k][0] > 0]
    return [f"ray: {', '.join(busy)} in use"] if busy else []


def ray_activity(config: Config) -> list[str]:
    """The head's Ray work, read with ``ray status`` in its container. A container that is
    not running has no work to protect; any other failure counts as activity."""
    argv = ["docker", "exec", config.ray_container, "ray", "status"]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"cannot read Ray's state ({exc}): not stopping"]
    view = parse_ray_status(proc.stdout)
    if view is not None:
        return ray_in_use(view)
    output = (proc.stdout + proc.stderr).strip()
    if "No such container" in output or "is not running" in output:
        return []
    last = (output.splitlines() or [f"exit status {proc.returncode}"])[-1][:200]
    return [f"cannot read Ray's state ({last}): not stopping"]


def boot_time(stat: str = "/proc/stat") -> float | None:
    """When the host booted, in seconds since the epoch (the kernel's ``btime``)."""
    try:
        with open(stat, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def stop_request_time(path: str) -> float | None:
    """When the head's stop request at `path` was written, or None when there is none.

    Only the entry's own time is read (``lstat``), never its content: the folder belongs to
    the login user, and the agent is root, so it follows no link the folder may hold."""
    if not path:
        return None
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def head_answers(config: Config, timeout: float = 5.0) -> bool:
    """Whether the head's GCS port accepts a TCP connection (a worker's one sign of it)."""
    try:
        with socket.create_connection((config.head_address, config.ray_port), timeout=timeout):
            return True
    except OSError:
        return False


def observe(config: Config) -> Observation:
    """Look at the host once. Connections are read before Jupyter is asked, so the agent's
    own request to the notebook port is never one of them."""
    now = time.time()
    worker = config.cluster_role == "worker"
    connections = connections_to(config.port)
    jupyter = query_jupyter(config, now)
    return Observation(
        now=now,
        boot_id=boot_id(),
        connections=connections,
        jupyter=jupyter,
        logins=logins(config),
        setups=setup_ages(),
        ray=ray_activity(config) if config.cluster_role == "head" else [],
        head_answers=head_answers(config) if worker else None,
        stop_request=stop_request_time(config.stop_request_file()) if worker else None,
        booted_at=boot_time(),
    )


# -- deciding ------------------------------------------------------------------------------

ACTIVE = "active"
IDLE = "idle"
POWEROFF = "poweroff"

#: What a worker made of the head's stop request (the state's ``head_request``).
HONOURED = "honoured"
STALE = "stale"
DECLINED = "declined"


def head_request(obs: Observation, armed_at: Any) -> str | None:
    """A worker's verdict on the head's stop request; None when there is none.

    Stale when written before this boot or before the agent's last arming (``launch`` or
    ``start``): a request the node did not act on before it was stopped must not power it
    off once it is started again. Declined while someone uses this very node (a login): the
    worker then stays up, and its window rule stops it once the head is gone. Honoured
    otherwise: the head found the whole cluster idle."""
    if obs.stop_request is None:
        return None
    since = [t for t in (obs.booted_at, armed_at) if isinstance(t, (int, float))]
    if since and obs.stop_request < max(since):
        return STALE
    if obs.local_use():
        return DECLINED
    return HONOURED


def decide(previous: JsonDict, obs: Observation, config: Config) -> tuple[JsonDict, str, str]:
    """The new state, the action (active, idle or poweroff) and a note, from the previous
    state and one observation. Pure: no clock, no files.

    The state keeps ``last_active``, the latest evidence of use: a check that saw a
    connection, a login or a busy kernel, or a kernel's or terminal's own last activity. The
    host is powered off once that is a whole window old. Evidence the agent did not watch
    does not count as idle: the time starts over (at this check) the first time, after a
    reboot (another boot id: `start` brought the host back), and after a gap without checks.
    On a worker, the head's fresh stop request powers off at once (`head_request`).
    """
    window = config.idle_seconds
    last_active = previous.get("last_active")
    note = ""
    last_check = previous.get("last_check")
    gap_limit = max(GAP_CHECKS * config.interval, GAP_MIN_SECONDS)
    if not isinstance(last_active, (int, float)) or last_active > obs.now:
        last_active = None
    if previous.get("boot_id") not in (None, obs.boot_id):
        last_active, note = None, "new boot"
    elif isinstance(last_check, (int, float)) and not 0 <= obs.now - last_check <= gap_limit:
        last_active, note = None, f"no check for {human(obs.now - last_check)}"
    evidence = [t for _, t in obs.jupyter.activity]
    if obs.in_use_now(window) or last_active is None:
        evidence.append(obs.now)
    last_active = max([*evidence, *([last_active] if last_active is not None else [])])
    reasons = obs.activity(window)
    idle_for = obs.now - last_active
    action = ACTIVE if reasons else POWEROFF if idle_for >= window else IDLE
    request = (
        head_request(obs, previous.get("armed_at")) if config.cluster_role == "worker" else None
    )
    if request == HONOURED:
        action = POWEROFF
    state: JsonDict = {
        "schema": 1,
        "agent_version": AGENT_VERSION,
        "boot_id": obs.boot_id,
        "last_check": obs.now,
        "window_seconds": window,
        "interval_seconds": config.interval,
        "last_active": last_active,
        "idle_since": None if reasons else last_active,
        "idle_for_seconds": 0.0 if reasons else idle_for,
        "state": action,
        "active": reasons,
        "connections": len(obs.connections),
        "kernels": obs.jupyter.kernels,
        "jupyter_reachable": obs.jupyter.reachable,
        "jupyter_error": obs.jupyter.error,
        "logins": obs.logins,
        "armed_at": previous.get("armed_at"),
        "poweroffs": previous.get("poweroffs", 0),
    }
    if request is not None:
        state["head_request"] = request
    return state, action, note


# -- files ---------------------------------------------------------------------------------


def read_json(path: str) -> JsonDict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: str, data: JsonDict, mode: int = 0o644) -> None:
    """Write atomically (rename), so `status` never reads half a file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def log(config: Config, message: str, now: float | None = None) -> None:
    """One line in the agent's log (kept under 1 MiB: one old copy), and on stderr for the
    journal when systemd runs it."""
    line = f"{stamp(time.time() if now is None else now)} autostop: {message}\n"
    try:
        if os.path.getsize(config.log_file) > LOG_MAX_BYTES:
            os.replace(config.log_file, config.log_file + ".1")
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(config.log_file) or ".", exist_ok=True)
        with open(config.log_file, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as exc:
        sys.stderr.write(f"autostop: cannot write {config.log_file}: {exc}\n")
    sys.stderr.write(line)
    sys.stderr.flush()


def to_console(message: str) -> None:
    """The kernel log reaches the serial console, which the cloud keeps after power-off."""
    try:
        with open("/dev/kmsg", "w", encoding="utf-8") as handle:
            handle.write(f"orchestrate-autostop: {message}\n")
    except OSError:
        pass


# -- acting --------------------------------------------------------------------------------

#: Run by the head's agent in the head's Ray container (``python3 -`` with this on stdin;
#: arguments: the GCS address, the request's path inside the workers' containers, and how
#: long to wait). The container's environment holds Ray's token mode and token file, so no
#: secret is passed. It pins one task to each alive worker that writes the stop request into
#: the worker's Ray temp folder, waits until the asked workers have left Ray's node table
#: (or the wait is over), and prints what happened as one JSON line.
STOP_WORKERS_DRIVER = r"""
import json
import logging
import os
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

address, path, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
began = time.time()
ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
head = ray.get_runtime_context().get_node_id()
workers = {
    node["NodeID"]: node["NodeManagerAddress"]
    for node in ray.nodes()
    if node["Alive"] and node["NodeID"] != head
}


@ray.remote(num_cpus=0, max_retries=0)
def ask(path, request):
    partial = "%s.%d.tmp" % (path, os.getpid())
    with open(partial, "w") as handle:
        json.dump(request, handle)
    os.replace(partial, path)


request = {"from": ray.util.get_node_ip_address(), "at": began}
pending = {}
for node in workers:
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    pending[node] = ask.options(scheduling_strategy=strategy).remote(path, request)
asked, unreachable = [], []
for node, ref in pending.items():
    try:
        ray.get(ref, timeout=max(began + wait / 2 - time.time(), 5.0))
        asked.append(node)
    except Exception as exc:
        unreachable.append("%s (%s)" % (workers[node], type(exc).__name__))
while True:
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    left = [node for node in asked if node not in alive]
    if len(left) == len(asked) or time.time() - began > wait:
        break
    time.sleep(0.5)
print(json.dumps({
    "asked": sorted(workers[node] for node in asked),
    "left": sorted(workers[node] for node in left),
    "unreachable": unreachable,
}), flush=True)
ray.shutdown()
"""


def workers_note(result: JsonDict | None, error: str = "") -> str:
    """What the head did about its workers, in words (its log, its last-stop record and so
    ``status``): from the driver's JSON line and the seconds it all took, or why there is
    no line."""
    if result is None:
        return f"could not ask the workers to stop ({error}): each stops a window after the head"
    asked = [str(a) for a in result.get("asked") or []]
    left = [str(a) for a in result.get("left") or []]
    unreachable = [str(u) for u in result.get("unreachable") or []]
    parts: list[str] = []
    if asked:
        noun = "worker" if len(asked) == 1 else "workers"
        seconds = human(float(result.get("seconds") or 0.0))
        parts.append(f"asked {len(asked)} {noun} to stop; {len(left)} left Ray within {seconds}")
        stayed = sorted(set(asked) - set(left))
        if stayed:
            parts.append(f"still in Ray: {', '.join(stayed)} (stops a window after the head)")
    if unreachable:
        parts.append(f"could not reach {', '.join(unreachable)} (stops a window after the head)")
    return "; ".join(parts) or "no worker in Ray to ask"


def _last_json(text: str) -> JsonDict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def stop_workers(config: Config) -> str:
    """The head asks its workers to power off (see the module docstring), waiting a bounded
    time for them to leave Ray; `workers_note` of what happened."""
    wait = config.worker_wait()
    target = posixpath.join(config.ray_container_tmp, STOP_REQUEST_NAME)
    address = f"{config.head_address}:{config.ray_port}"
    argv = ["docker", "exec", "-i", config.ray_container, "python3", "-", address, target]
    began = time.monotonic()
    try:
        proc = subprocess.run(
            [*argv, f"{wait:g}"],
            input=STOP_WORKERS_DRIVER,
            capture_output=True,
            text=True,
            timeout=wait + 120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return workers_note(None, str(exc))
    result = _last_json(proc.stdout)
    if result is None:
        output = (proc.stdout + proc.stderr).strip()
        return workers_note(None, (output.splitlines() or [f"exit {proc.returncode}"])[-1][:200])
    return workers_note({**result, "seconds": time.monotonic() - began})


def power_off(config: Config, state: JsonDict, obs: Observation) -> bool:
    """Record why, then run the power-off command. True when the command succeeded. A
    cluster's head asks its workers to power off first; every node stops its Ray container
    before it goes, so it leaves Ray's node table at once."""
    idle_for = float(state.get("idle_for_seconds") or 0.0)
    message = f"stopped by autostop after {human(config.idle_seconds)} idle"
    reason = obs.idle_summary(config.port, config.idle_seconds)
    if state.get("head_request") == HONOURED:
        reason = "the cluster's head asked: the whole cluster has been idle"
    cluster_note = ""
    if config.cluster_role == "head":
        log(config, f"idle for {human(idle_for)}: asking the workers to stop first", obs.now)
        cluster_note = stop_workers(config)
        log(config, cluster_note)
    record = {
        "ts": obs.now,
        "time": stamp(obs.now),
        "message": message,
        "reason": reason,
        "idle_seconds": idle_for,
        "window_seconds": config.idle_seconds,
        "boot_id": obs.boot_id,
        "command": config.poweroff_command,
    }
    if cluster_note:
        record["cluster"] = cluster_note
    write_json(config.path(LAST_STOP_FILE), record)
    log(config, f"powering off: idle for {human(idle_for)} ({reason})")
    if config.console:
        to_console(f"{message}: {reason}")
    if config.cluster_role and config.ray_container:
        # Ray stopped first: the node leaves Ray's node table at once (so the head stops
        # waiting for it), and the head's GCS port goes quiet for workers it could not ask.
        stop_ray = ["docker", "stop", "--time", "30", config.ray_container]
        began = time.monotonic()
        try:
            subprocess.run(stop_ray, stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(config, f"could not stop Ray before powering off: {exc}")
        else:
            log(config, f"Ray's container stopped in {human(time.monotonic() - began)}")
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", config.poweroff_command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(config, f"power-off command failed: {exc}")
        return False
    if proc.returncode != 0:
        output = proc.stdout.decode("utf-8", "replace").strip()[-300:]
        log(config, f"power-off command exited {proc.returncode}: {output}")
        return False
    return True


def check(config: Config, observe_fn: Callable[[Config], Observation] = observe) -> str:
    """One check: observe, decide, record, and power off when the window is over."""
    state_path = config.path(STATE_FILE)
    previous = read_json(state_path)
    obs = observe_fn(config)
    state, action, note = decide(previous, obs, config)
    if obs.stop_request is not None:
        consume_stop_request(config, obs, state.get("head_request"))
    if note and previous.get("last_active") is not None:
        log(config, f"idle time starts over ({note})", obs.now)
    was = previous.get("state")
    if action == ACTIVE and (
        was != ACTIVE or _kinds(previous.get("active")) != _kinds(state["active"])
    ):
        log(config, "in use: " + "; ".join(state["active"]), obs.now)
    elif action == IDLE and was != IDLE:
        log(
            config,
            f"idle ({obs.idle_summary(config.port, config.idle_seconds)}); powering off "
            f"{human(config.idle_seconds)} after the last activity unless something happens",
            obs.now,
        )
    if action == POWEROFF:
        # Start over after a power-off, so a command that returns without stopping the host
        # (or a host brought back) waits a whole window again.
        state["last_active"] = obs.now
        state["poweroffs"] = int(state.get("poweroffs") or 0) + 1
        write_json(state_path, state)
        if power_off(config, state, obs):
            # from its end: a head may have waited a while for its workers
            state["last_active"] = max(time.time(), obs.now)
        else:
            state["last_active"] = previous.get("last_active") or obs.now
            state["state"] = IDLE
        write_json(state_path, state)
        return action
    write_json(state_path, state)
    return action


def consume_stop_request(config: Config, obs: Observation, verdict: Any) -> None:
    """Delete the head's stop request before acting on it, so one request stops the node
    once, and say in the log what became of it."""
    try:
        os.unlink(config.stop_request_file())
    except FileNotFoundError:
        pass
    except OSError as exc:
        log(config, f"cannot delete the head's stop request: {exc}", obs.now)
    if verdict == STALE:
        written = stamp(obs.stop_request or obs.now)
        message = f"ignored the head's stop request of {written}: before this boot or arming"
    elif verdict == DECLINED:
        use = "; ".join(obs.local_use())
        message = f"the head asked this node to stop, but it is in use ({use}): staying up"
    else:
        message = "the cluster's head asked this node to stop: the cluster is idle"
    log(config, message, obs.now)


def _kinds(reasons: Any) -> list[str]:
    """Activity reasons without their changing details, so the log records changes only."""
    if not isinstance(reasons, list):
        return []
    return sorted({str(r).split(":")[0].split(" active ")[0] for r in reasons})


def rearm(config: Config) -> None:
    """`launch`/`start` were just run: the idle time starts now, whatever came before."""
    now = time.time()
    state = read_json(config.path(STATE_FILE))
    state.update(
        {
            "last_active": now,
            "idle_since": now,
            "idle_for_seconds": 0.0,
            "state": "armed",
            "armed_at": now,
            "last_check": now,
            "boot_id": boot_id(),
            "window_seconds": config.idle_seconds,
            "agent_version": AGENT_VERSION,
        }
    )
    write_json(config.path(STATE_FILE), state)
    log(config, f"armed: powering off after {human(config.idle_seconds)} idle", now)


class _Lock:
    """One agent at a time per state folder (a timer check never overlaps a loop)."""

    def __init__(self, config: Config) -> None:
        os.makedirs(config.state_dir, exist_ok=True)
        self.handle = open(config.path(LOCK_FILE), "a")  # noqa: SIM115 - held for the run

    def acquire(self) -> bool:
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def loop(config: Config, pid_file: str | None) -> int:
    """Check every `interval` seconds until SIGTERM."""
    lock = _Lock(config)
    if not lock.acquire():
        sys.stderr.write("autostop: another agent is running for this state folder\n")
        return 1
    stopping: list[int] = []

    def on_term(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if pid_file:
        with open(pid_file + ".tmp", "w", encoding="ascii") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(pid_file + ".tmp", pid_file)
    log(config, f"agent {AGENT_VERSION} checking every {config.interval:g} s (loop)")
    try:
        while not stopping:
            began = time.monotonic()
            try:
                check(config)
            except Exception as exc:  # a bad check must not end the watch
                log(config, f"check failed: {type(exc).__name__}: {exc}")
            while not stopping and time.monotonic() - began < config.interval:
                time.sleep(min(0.2, config.interval))
    finally:
        if pid_file:
            try:
                with open(pid_file, encoding="ascii") as handle:
                    mine = handle.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(pid_file)
            except OSError:
                pass
    log(config, "agent stopped")
    return 0


# -- command line --------------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> Config:
    data: JsonDict = {}
    if args.config and os.path.exists(args.config):
        data = read_json(args.config)
        if not data:
            raise ValueError(f"{args.config} is not a JSON object")
    elif args.config != DEFAULT_CONFIG and args.config:
        raise ValueError(f"{args.config}: no such file")
    overrides = {
        "idle_seconds": parse_duration(args.idle) if args.idle else None,
        "port": args.port,
        "jupyter_url": args.jupyter_url,
        "poweroff_command": args.poweroff_command,
        "state_dir": args.state_dir,
        "log_file": args.log_file,
        "interval": args.interval,
        "utmp": args.utmp,
        "console": False if args.no_console else None,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="autostop", description="Power an idle notebook host off (orchestrate)."
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one check (for a systemd timer)")
    mode.add_argument("--loop", action="store_true", help="check every --interval seconds")
    mode.add_argument("--rearm", action="store_true", help="start the idle time over now")
    mode.add_argument("--status", action="store_true", help="print the last check as JSON")
    mode.add_argument("--version", action="store_true", help="print the agent version")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="JSON config file")
    parser.add_argument("--idle", help="idle window, e.g. 60m or 5s (overrides the config)")
    parser.add_argument("--port", type=int, help="the notebook port on the host")
    parser.add_argument("--jupyter-url", help="Jupyter's base URL on the host")
    parser.add_argument("--poweroff-command", help="shell command that powers the host off")
    parser.add_argument("--state-dir", help="folder of the state, last-stop and version files")
    parser.add_argument("--log-file", help="the agent's log")
    parser.add_argument("--interval", type=float, help="seconds between checks in --loop")
    parser.add_argument("--utmp", help="utmp file with the logins")
    parser.add_argument("--pid-file", help="--loop writes its PID here")
    parser.add_argument("--no-console", action="store_true", help="no kernel-log message")
    args = parser.parse_args(argv)
    if args.version:
        print(AGENT_VERSION)
        return 0
    try:
        config = build_config(args)
    except (ValueError, TypeError) as exc:
        sys.stderr.write(f"autostop: bad configuration: {exc}\n")
        return 2
    if args.status:
        print(json.dumps(read_json(config.path(STATE_FILE)), indent=1, sort_keys=True))
        return 0
    if args.rearm:
        rearm(config)
        return 0
    if args.loop:
        return loop(config, args.pid_file)
    lock = _Lock(config)
    if not lock.acquire():
        return 0  # a loop (or another check) is watching already
    check(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
