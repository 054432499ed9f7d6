"""B2 warm relaunch on a 50 ms link, against the seed's alias done with OpenSSH.

Goals: a warm `orchestrate launch` (instance fully set up, nothing to do) takes at most 9
round trips until it shows the URL (Jupyter has answered on the host by then, inside the
probe, or through the tunnel when it did not), and at most 3 when a detached tunnel
is alive (its connection is lent through the control socket, and the tunnel is kept);
`launch --detach` takes at most 11; connect + probe + nothing to do takes at most 10.

Topology (everything real; traffic stays on loopback and in the namespaces made here):

    near namespace                      50 ms link (veth + NFQUEUE delay)     far namespace
    orchestrate launch  ───── SSH ───────────────────────────────────────────  sshd :22
    fake GCE API 127.0.0.1 (own process)                               127.0.0.1:RPORT relay
    local tunnel port 127.0.0.1:8899                                              │ (loopback
                                                                                  ▼  of "the VM")
    root namespace: dockerd (/var/run/docker.sock, reached by the far sshd's `sudo docker`
    through the shared filesystem) publishes Jupyter on 127.0.0.1:RPORT; bench/relay.py
    makes that the far namespace's 127.0.0.1:RPORT too.

The fake cloud says the instance's address is the far end of the link, so `launch` reaches
it like a VM; the API itself is local (its latency is not the subject here).

Round trips are counted on the wire (bench/capture.py: silences on the link that start with
a packet out and end with one in), which a busy machine's CPU time cannot blur; wall time
/ RTT is shown beside as an upper bound. A traced run (bench/trace.py) times each connect,
handshake, channel open, exec request and HTTP request, which splits the count by phase
(the connect + probe is the window from the TCP connect to the end of the probe).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cloud import FakeCloud, write_profile
from bench.common import ROOT, Context, Row, env_with, median, orchestrate_argv, private_home
from bench.relay import Relay

GOAL_RELAUNCH_RT = 9
GOAL_LIVE_RT = 3
GOAL_DETACH_RT = 11
GOAL_PROBE_RT = 10
URL = re.compile(r"http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)")
LOCAL_PORT = 8899
ALIAS_PORT = 8898
#: The traced window of a whole relaunch: process start to Jupyter's answer.
WHOLE = "launch .. jupyter answers"


@dataclass
class Bed:
    """One link with its far host, fake cloud, relay and a launched-once instance."""

    delay_ms: int
    link: Any
    home: Path
    work: Path
    env: dict[str, str]
    cli: list[str]
    user: str
    key: Path
    known_hosts: Path
    container: str
    remote_port: int
    token: str = ""
    rtt_s: float = 0.0
    cleanup: list[Any] = field(default_factory=list)

    def near(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.link.near_ns, *argv]

    def orchestrate(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.near([*self.cli, *args]), cwd=self.work, env=self.env, capture_output=True,
            text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"orchestrate {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc


@contextlib.contextmanager
def make_bed(delay_ms: int, image: str, log: Any) -> Iterator[Bed]:
    from tests.bed import sshd as sshdmod
    from tests.bed import wan
    from tests.bed.docker_engine import docker

    stack = contextlib.ExitStack()
    with stack:
        link = wan.wan_link(delay_ms, name_prefix="orchb2")
        stack.callback(link.close)
        rtt = statistics.median(wan.measure_round_trip(link, rounds=10)["rtts_s"])  # type: ignore[arg-type]
        user = sshdmod.ensure_login_user()
        keydir = Path(tempfile.mkdtemp(prefix="orch-b2-sshd-"))
        keydir.chmod(0o755)
        stack.callback(shutil.rmtree, keydir, ignore_errors=True)
        key, public = sshdmod.generate_client_key(keydir / "client")
        server = sshdmod.start_sshd(
            keydir / "server", user=user, authorized_key=public, listen=link.far_addr,
            netns=link.far_ns,
        )  # fmt: skip
        stack.callback(server.stop)
        remote_port = sshdmod.free_port()
        relay = Relay.start(link.far_ns, remote_port)
        stack.callback(relay.stop)
        home = private_home(f"b2-{delay_ms}ms")
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        work = home / "work"
        work.mkdir()
        config = home / "config"
        config.mkdir(mode=0o700)
        shutil.copyfile(key, config / "id_ed25519")
        os.chmod(config / "id_ed25519", 0o600)
        shutil.copyfile(str(key) + ".pub", config / "id_ed25519.pub")
        known_hosts = keydir / "known_hosts"
        known_hosts.write_text(f"{link.far_addr} {server.host_key_pub}\n")
        cloud = FakeCloud.start(home, addresses=(link.far_addr,), netns=link.near_ns)
        stack.callback(cloud.stop)
        container = f"orch-b2-{uuid.uuid4().hex[:8]}"
        stack.callback(lambda: docker("rm", "-f", container, check=False))
        write_profile(
            work, cloud, image=image, port=LOCAL_PORT, remote_port=remote_port,
            container=container, ssh_user=user, ssh_port=22,
        )  # fmt: skip
        cli, _ = orchestrate_argv()
        env = env_with(home)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        bed = Bed(delay_ms, link, home, work, env, cli, user, key, known_hosts, container,
                  remote_port, rtt_s=rtt)  # fmt: skip
        log(f"  B2 {delay_ms} ms link: rtt {rtt * 1000:.1f} ms; first launch (sets the host up)")
        first = bed.orchestrate("launch", "nb", "--profile", "bench", "--detach", "--no-browser")
        found = URL.search(first.stdout)
        if not found:
            raise RuntimeError(f"the first launch printed no URL:\n{first.stdout}\n{first.stderr}")
        bed.token = found.group(2)
        stack.callback(lambda: bed.orchestrate("tunnel", "nb", "--close", timeout=60))
        bed.orchestrate("tunnel", "nb", "--close", timeout=60)
        yield bed


@dataclass
class Timed:
    """One measured run: wall seconds, the wire round trips in its window, its packets."""

    seconds: float
    round_trips: int
    window: tuple[float, float]
    packets: list[Any] = field(default_factory=list, repr=False)
    steps: list[int] = field(default_factory=list)


def _capture(bed: Bed) -> Any:
    from bench.capture import Capture
    from tests.bed.wan import VETH_NAME

    return Capture(bed.link.near_ns, VETH_NAME, bed.link.near_addr).start()


def _count(bed: Bed, packets: list[Any], start: float, end: float) -> int:
    from bench.capture import round_trips

    return round_trips(packets, bed.rtt_s / 2, start, end)


def foreground_relaunch(bed: Bed, *, traced: Path | None = None) -> Timed:
    """`orchestrate launch` to its URL line: Jupyter has answered by then (on the host, to
    the probe; else through the tunnel, `jupyter.wait_ready`). Then Ctrl-C, as a user ends
    the tunnel."""
    argv = [*bed.cli, "launch", "nb", "--profile", "bench", "--no-browser"]
    if traced is not None:
        argv = [sys.executable, "-m", "bench.trace", str(traced), *argv[len(bed.cli) :]]
    env = {**bed.env, "PYTHONPATH": str(ROOT)} if traced is not None else bed.env
    capture = _capture(bed)
    wall_start = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(
        bed.near(argv), cwd=bed.work, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        elapsed = time.perf_counter() - start
        wall_end = time.time()
        packets = capture.stop()
        if not URL.search(line):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise RuntimeError(f"launch printed {line!r} instead of the URL:\n{err[-3000:]}")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        return Timed(
            elapsed, _count(bed, packets, wall_start, wall_end), (wall_start, wall_end), packets
        )
    finally:
        capture.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def detached_relaunch(bed: Bed, *, live_tunnel: bool = False) -> Timed:
    """`launch --detach`; with `live_tunnel`, while `tunnel --detach` runs: the launch then
    borrows the tunnel's connection for the probe and keeps the tunnel, so only the probe
    and Jupyter's answer cross the link."""
    if live_tunnel:
        bed.orchestrate("tunnel", "nb", "--detach")
        time.sleep(2)  # the tunnel's own start-up traffic (spare channels) is not the launch's
    capture = _capture(bed)
    wall_start = time.time()
    start = time.perf_counter()
    try:
        bed.orchestrate("launch", "nb", "--profile", "bench", "--detach", "--no-browser")
        elapsed = time.perf_counter() - start
        wall_end = time.time()
    finally:
        packets = capture.stop()
    bed.orchestrate("tunnel", "nb", "--close", timeout=60)
    return Timed(elapsed, _count(bed, packets, wall_start, wall_end), (wall_start, wall_end))


def openssh_alias(bed: Bed) -> Timed:
    cfg = {
        "user": bed.user, "host": bed.link.far_addr, "port": 22, "key": str(bed.key),
        "known_hosts": str(bed.known_hosts), "container": bed.container,
        "local_port": ALIAS_PORT, "remote_port": bed.remote_port, "token": bed.token,
    }  # fmt: skip
    capture = _capture(bed)
    try:
        proc = subprocess.run(
            bed.near([sys.executable, "-m", "bench.openssh_alias", "--json", json.dumps(cfg)]),
            cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    finally:
        packets = capture.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the OpenSSH alias failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["status"] != 200:
        raise RuntimeError(f"Jupyter answered {result['status']} through ssh -L")
    # The alias's three steps run one after another: each one's round trips, summed.
    stamps = [result[k] for k in ("wall_start", "wall_started_container", "wall_tunnel_up",
                                  "wall_done")]  # fmt: skip
    steps = [_count(bed, packets, a, b) for a, b in itertools.pairwise(stamps)]
    return Timed(result["seconds"], sum(steps), (stamps[0], stamps[-1]), steps=steps)


def phases(trace: dict[str, Any], rtt_s: float) -> dict[str, Any]:
    """From a bench.trace file: counts of round-trip-costing events, seconds per phase, and
    the time windows (time.time()) in which the wire's round trips are counted per phase."""
    events = sorted(trace["events"], key=lambda e: e["start"])
    counts: dict[str, int] = {}
    for event in events:
        kind = event["kind"]
        if kind.startswith("phase:"):
            continue
        if kind == "channel-open":
            kind = f"channel-open {event.get('what', '?')}"
        counts[kind] = counts.get(kind, 0) + 1
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        first.setdefault(event["kind"], event)
    windows: dict[str, tuple[float, float]] = {}
    connect, jupyter = first.get("phase:connect"), first.get("phase:jupyter")
    probe = next((e for e in events if e["kind"] == "run"), None)
    if connect is not None:
        windows["connect"] = (connect["start"], connect["end"])
        if probe is not None:
            windows["probe"] = (probe["start"], probe["end"])
            windows["connect + probe"] = (connect["start"], probe["end"])
    if jupyter is not None:
        windows["tunnel + jupyter"] = (
            first.get("phase:tunnel-open", jupyter)["start"],
            jupyter["end"],
        )
    if jupyter is not None:
        windows[WHOLE] = (trace["started"], jupyter["end"])
    seconds = {name: round(end - start, 4) for name, (start, end) in windows.items()}
    return {"counts": counts, "seconds": seconds, "windows": windows}


#: The calls a relaunch makes one after another and waits on (bench/trace.py's names).
BLOCKING = ("tcp-connect", "ssh-handshake", "ssh-auth", "run", "http")


def traced_relaunch(bed: Bed) -> dict[str, Any]:
    """A foreground relaunch under bench.trace, its round trips counted on the wire.

    The count is the sum, over the calls the launch makes in turn and waits on (TCP connect,
    SSH handshake, authentication, the probe command, each HTTP request through the tunnel),
    of the round trips on the wire inside each call's window: inside a call the client only
    waits, so nothing else it does can be mistaken for a round trip.
    """
    trace_file = bed.home / "trace.json"
    run = foreground_relaunch(bed, traced=trace_file)
    trace = json.loads(trace_file.read_text())
    split = phases(trace, bed.rtt_s)
    calls: dict[str, int] = {}
    probe_seen = False
    for event in sorted(trace["events"], key=lambda e: e["start"]):
        kind = event["kind"]
        if kind not in BLOCKING:
            continue
        if kind == "run":
            if probe_seen:
                continue  # only the probe is on a warm relaunch's path
            probe_seen = True
        if kind == "http" and not str(event.get("what", "")).endswith(f":{LOCAL_PORT}"):
            continue  # the fake cloud's API is local
        label = "probe (channel open, exec, output)" if kind == "run" else kind
        calls[label] = calls.get(label, 0) + _count(bed, run.packets, event["start"], event["end"])
    windows = split["windows"].items()
    by_phase = {name: _count(bed, run.packets, start, end) for name, (start, end) in windows}
    return {
        "seconds": run.seconds,
        "round_trips": sum(calls.values()),
        "by_call": calls,
        "by_phase_chain": by_phase,
        "counts": split["counts"],
        "phase_seconds": split["seconds"],
    }


def _measure(bed: Bed, reps: int, ctx: Context) -> dict[str, Any]:
    fg: list[Timed] = []
    det: list[Timed] = []
    live: list[Timed] = []
    alias: list[Timed] = []
    traced: list[dict[str, Any]] = []
    for rep in range(reps):
        traced.append(traced_relaunch(bed))
        fg.append(foreground_relaunch(bed))
        det.append(detached_relaunch(bed))
        live.append(detached_relaunch(bed, live_tunnel=True))
        alias.append(openssh_alias(bed))
        rts = traced[-1]["round_trips"]
        ctx.log(
            f"  B2 rep {rep + 1}: launch {fg[-1].seconds:.3f} s / {rts} RT, --detach "
            f"{det[-1].seconds:.3f} s / {det[-1].round_trips} RT, live tunnel "
            f"{live[-1].seconds:.3f} s / {live[-1].round_trips} RT, OpenSSH alias "
            f"{alias[-1].seconds:.3f} s / {alias[-1].round_trips} RT"
        )
    by_call = {name: [t["by_call"].get(name, 0) for t in traced] for name in traced[-1]["by_call"]}
    return {
        "rtt_s": bed.rtt_s,
        "launch_s": [t.seconds for t in fg],
        "launch_rt": [t["round_trips"] for t in traced],
        "round_trips_by_call": by_call,
        "chains_by_phase": [t["by_phase_chain"] for t in traced],
        "traced_s": [t["seconds"] for t in traced],
        "events": traced[-1]["counts"],
        "phase_seconds": traced[-1]["phase_seconds"],
        "detached_s": [t.seconds for t in det],
        "detached_rt": [t.round_trips for t in det],
        "live_s": [t.seconds for t in live],
        "live_rt": [t.round_trips for t in live],
        "alias_s": [t.seconds for t in alias],
        "alias_rt": [t.round_trips for t in alias],
        "alias_rt_by_step": [t.steps for t in alias],
    }


def run(ctx: Context) -> list[Row]:
    from tests.bed.docker_engine import ensure_dockerd
    from tests.bed.jupyter_image import ensure_jupyter_image

    cache = Path(os.environ.get("ORCHESTRATE_BED_CACHE", "/var/cache/orchestrate-bed"))
    reps = 1 if ctx.quick else 7
    engine = ensure_dockerd(cache)
    try:
        image = ensure_jupyter_image(cache).tag
        with make_bed(50, image, ctx.log) as bed:
            m = _measure(bed, reps, ctx)
    finally:
        engine.stop()
    rtt = m["rtt_s"]
    ours_rt = median(m["launch_rt"])
    alias_rt = median(m["alias_rt"])
    by_call = m["round_trips_by_call"]
    probe = [
        sum(by_call[k][i] for k in by_call if not k.startswith("http"))
        for i in range(len(m["launch_rt"]))
    ]
    probe_rt = median(probe) if probe else None
    counts = m["events"]
    call_rt = {k: median(v) for k, v in by_call.items()}
    counted = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    detail = {"rtt_ms": rtt * 1000, "reps": reps, **m}
    return [
        Row(
            "B2",
            "warm relaunch until Jupyter answers (50 ms)",
            median(m["launch_s"]),
            "s",
            baseline="OpenSSH alias",
            baseline_value=median(m["alias_s"]),
            detail=detail,
            notes=f"median of {reps}; foreground `launch` to its URL line (Jupyter has "
            "answered the probe on the host); alias = ssh start script + ssh -fNL + first "
            f"request; wall / rtt = {median(m['launch_s']) / rtt:.1f} RT ours, "
            f"{median(m['alias_s']) / rtt:.1f} RT alias (upper bounds: CPU time included)",
        ),
        Row(
            "B2",
            "warm relaunch round trips (on the wire)",
            ours_rt,
            "RT",
            baseline="OpenSSH alias",
            baseline_value=alias_rt,
            goal=f"<= {GOAL_RELAUNCH_RT} RT",
            met=ours_rt <= GOAL_RELAUNCH_RT,
            notes=f"median of {reps}: {m['launch_rt']} vs alias {m['alias_rt']}; rtt "
            f"{rtt * 1000:.1f} ms; by call (medians) {call_rt}; client events {counted}",
        ),
        Row(
            "B2",
            "warm relaunch --detach round trips (on the wire)",
            median(m["detached_rt"]),
            "RT",
            baseline="OpenSSH alias",
            baseline_value=alias_rt,
            goal=f"<= {GOAL_DETACH_RT} RT",
            met=median(m["detached_rt"]) <= GOAL_DETACH_RT,
            notes=f"{median(m['detached_s']):.2f} s; {m['detached_rt']}; one SSH login: the "
            "background tunnel process connects, runs the launch's probe (which has Jupyter "
            "answer on the host) and lends its connection; launch returns once it listens",
        ),
        Row(
            "B2",
            "warm relaunch with a live tunnel, round trips (on the wire)",
            median(m["live_rt"]),
            "RT",
            baseline="OpenSSH alias",
            baseline_value=alias_rt,
            goal=f"<= {GOAL_LIVE_RT} RT",
            met=median(m["live_rt"]) <= GOAL_LIVE_RT,
            notes=f"{median(m['live_s']):.2f} s; {m['live_rt']}; `launch --detach` while "
            "`tunnel --detach` runs: the probe goes over the tunnel's connection (control "
            "socket), and the tunnel is kept",
        ),
        Row(
            "B2",
            "connect + probe, nothing to do",
            probe_rt,
            "RT",
            goal=f"<= {GOAL_PROBE_RT} RT",
            met=None if probe_rt is None else probe_rt <= GOAL_PROBE_RT,
            notes=f"TCP connect + SSH handshake + auth + probe, on the wire: {probe}",
        ),
    ]


if __name__ == "__main__":
    from bench.common import table

    print(table(run(Context(quick="--quick" in sys.argv, results_dir=Path("/tmp")))))
