"""B6 cluster launch: a 4-node Ray cluster until Ray sees 4 nodes, against one lone launch.

Goal: the cluster takes at most 1.3x the time of launching one instance.

Both sides run on the multi-node test bed (`tests/bed/nodes.py`): four bed nodes, each its
own network namespace with its own sshd and Docker engine holding the bed's notebook image
(with Ray), behind the fake GCE API that gives each instance a node's addresses and
enforces the firewall rules the product creates. The same fake, the same image, the same
nodes, the same CLI in a subprocess; each launch starts from a fresh ORCHESTRATE_HOME and
wiped nodes (as new VMs), and the two sides are interleaved so a busy moment hits both.

- one instance: `launch NAME --detach` with `nodes = 1`, from the process's start to its
  exit: the API calls, the SSH connection, host setup (its probe, the notebook container,
  Jupyter answering) and the detached tunnel. No Ray runs on a lone instance.
- the cluster: `launch NAME --detach` with `nodes = 4` (creates in parallel, the cluster's
  firewall rule, the token to each node, each node's host setup in parallel, Ray's head
  and three workers, the head's notebook and tunnels), then Ray's node table on the head
  (what `ray.nodes()` reads; `tests/support/ray_view.py`, run in the head node's namespaces,
  not over SSH) until it counts 4 alive nodes; the figure ends when that poll returns.
  When `ray status` (what `orchestrate status` shows) counts 4 too is a second row.

Counted per launch: the fake GCE's requests (the launch's only), and, from a traced run of
the CLI (`bench/trace.py`), the SSH connections, handshakes, authentications and session
channels (one command each) by the node they went to. The detached tunnel process is not
traced (its own connection is one more per launch, the same on both sides). The fake's
operations take no time: a cloud's seconds per create would be paid once by both sides
(the cluster's creates run in parallel), so they would only bring the ratio closer to 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, Context, Row, env_with, median, time_run

GOAL = 1.3
NODES = 4
RAY_TIMEOUT_S = 300.0
#: bench/trace.py's events that each cost at least one round trip to a node. A command's
#: exec request is not one of them: the product sends it right behind its channel's open
#: without waiting for sshd's reply (core/ssh/channelio.py), so a session channel is one
#: command.
SSH_KINDS = ("tcp-connect", "ssh-handshake", "ssh-auth", "channel-open")


@dataclass
class Bed:
    nodes: Any
    gce: Any
    image: str
    key_path: Path
    service_key: Any
    workdir: Path


@contextlib.contextmanager
def bed() -> Iterator[Bed]:
    """Four bed nodes with the notebook image, and the fake GCE handing them out."""
    from tests.bed.docker_engine import ensure_dockerd
    from tests.bed.fixtures_gce import generate_rsa_key
    from tests.bed.fixtures_host import DEFAULT_BED_CACHE
    from tests.bed.gce_fake import GceFake
    from tests.bed.jupyter_image import rootfs_for_import
    from tests.bed.nodes import start_nodes
    from tests.bed.sshd import ensure_login_user, generate_client_key

    cache = Path(os.environ.get("ORCHESTRATE_BED_CACHE", DEFAULT_BED_CACHE))
    workdir = Path(tempfile.mkdtemp(prefix="orch-b6-"))
    workdir.chmod(0o755)
    engine = ensure_dockerd(cache)
    try:
        user = ensure_login_user()
        key_path, public_key = generate_client_key(workdir / "client")
        with rootfs_for_import(cache) as image:
            nodes = start_nodes(
                NODES, cache_dir=cache, user=user, key_path=key_path,
                authorized_key=public_key, image=image,
            )  # fmt: skip
        try:
            with GceFake() as gce:
                yield Bed(nodes, gce, image[0], key_path, generate_rsa_key(), workdir)
        finally:
            nodes.close()
    finally:
        engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _cli(home: Path, work: Path, *args: str, traced: Path | None = None) -> float:
    """Seconds of one `orchestrate ARGS` (under bench.trace when `traced`); raises on failure."""
    argv = [sys.executable, "-m", "bench.trace", str(traced)] if traced else [
        sys.executable, "-m", "orchestrate.core.app.cli"]  # fmt: skip
    env = env_with(home, BROWSER="true", PYTHONPATH=str(ROOT))
    return time_run([*argv, *args], env=env, cwd=work, timeout=900)


def _until(head: Any, count: Any, nodes: int) -> float:
    """perf_counter() when `count(head)` first returned `nodes` (the poll's end)."""
    deadline = time.monotonic() + RAY_TIMEOUT_S
    seen = None
    while time.monotonic() < deadline:
        seen = count(head)
        if seen == nodes:
            return time.perf_counter()
        time.sleep(0.5)
    raise RuntimeError(f"{count.__name__}: Ray saw {seen} nodes, not {nodes}, after the timeout")


def _ssh_counts(trace: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per node address: how many of each SSH call the CLI made to it."""
    per: dict[str, Counter[str]] = {}
    for event in trace["events"]:
        kind = event["kind"]
        if kind not in SSH_KINDS:
            continue
        if kind == "channel-open":
            kind = f"channel-open {event.get('what', '?')}"
        per.setdefault(str(event.get("peer", "?")), Counter())[kind] += 1
    return {peer: dict(counts) for peer, counts in sorted(per.items())}


def _setup_seconds(trace: dict[str, Any]) -> dict[str, float]:
    """Host setup (probe, token, steps) per node address, from the trace's phase."""
    return {
        str(e.get("peer", "?")): round(e["end"] - e["start"], 2)
        for e in trace["events"]
        if e["kind"] == "phase:setup"
    }


def launch_once(b: Bed, nodes: int, tag: str) -> dict[str, Any]:
    """One launch of `nodes` from a fresh home on wiped nodes; deleted again afterwards."""
    from tests.bed.fixtures_gce import write_service_account_file
    from tests.bed.sshd import free_port
    from tests.support.e2e import adopt_bed_key, write_gcp_profile
    from tests.support.ray_view import alive_in_gcs, alive_in_ray_status

    root = b.workdir / tag
    home, work = root / "home", root / "work"
    work.mkdir(parents=True)
    b.gce.reset()
    b.nodes.reset()
    b.gce.use_nodes(b.nodes)
    adopt_bed_key(home, b.key_path)
    credentials = write_service_account_file(root / "sa.json", b.gce, b.service_key)
    write_gcp_profile(
        work, name="b6", image=b.image, port=free_port(), remote_port=free_port(),
        container="orch-b6", project=b.gce.project, credentials=credentials,
        endpoint=b.gce.endpoint, ssh_user=b.nodes[0].user, ssh_port=22, home=home, nodes=nodes,
    )  # fmt: skip
    name = "b6c" if nodes > 1 else "b6one"
    trace_file = root / "trace.json"
    try:
        began = time.perf_counter()
        launched = _cli(home, work, "launch", name, "--profile", "b6", "--detach",
                        "--no-browser", "--yes", traced=trace_file)  # fmt: skip
        api = len(b.gce.requests)
        api_kinds = Counter(f"{r.method} {r.path.rsplit('/', 1)[-1]}" for r in b.gce.requests)
        result: dict[str, Any] = {"launch_s": launched, "api_requests": api}
        if nodes > 1:
            instance = b.gce.instances[name]
            zone = str(instance["zone"]).rsplit("/", 1)[-1]
            head = b.gce.host_of(zone, name)
            result["gcs_s"] = _until(head, alive_in_gcs, nodes) - began
            result["seconds"] = result["gcs_s"]
            result["ray_status_s"] = _until(head, alive_in_ray_status, nodes) - began
        else:
            result["seconds"] = launched
        trace = json.loads(trace_file.read_text())
        result["ssh"] = _ssh_counts(trace)
        result["setup_s"] = _setup_seconds(trace)
        result["api_kinds"] = dict(api_kinds.most_common(8))
        return result
    finally:
        with contextlib.suppress(Exception):
            _cli(home, work, "down", name, "--yes")
        shutil.rmtree(root, ignore_errors=True)


def _per_node(results: list[dict[str, Any]], nodes: int) -> tuple[float, dict[str, float]]:
    """API requests and SSH calls per node (the last run's, divided by the node count)."""
    last = results[-1]
    totals: Counter[str] = Counter()
    for counts in last["ssh"].values():
        totals.update(counts)
    return last["api_requests"] / nodes, {k: v / nodes for k, v in sorted(totals.items())}


def run(ctx: Context) -> list[Row]:
    reps = 2
    singles: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    with bed() as b:
        ctx.log(f"  B6 bed: {NODES} nodes up in {b.nodes.startup_seconds:.1f} s")
        for rep in range(reps):
            singles.append(launch_once(b, 1, f"one{rep}"))
            clusters.append(launch_once(b, NODES, f"cluster{rep}"))
            ctx.log(
                f"  B6 rep {rep + 1}: one instance {singles[-1]['seconds']:.1f} s; cluster "
                f"launch returned {clusters[-1]['launch_s']:.1f} s, Ray saw {NODES} at "
                f"{clusters[-1]['seconds']:.1f} s (`ray status` at "
                f"{clusters[-1]['ray_status_s']:.1f} s); setup per node {clusters[-1]['setup_s']}"
            )
    single = median([s["seconds"] for s in singles])
    cluster = median([c["seconds"] for c in clusters])
    api_one, ssh_one = _per_node(singles, 1)
    api_cl, ssh_cl = _per_node(clusters, NODES)

    def said(counts: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in counts.items())

    detail = {
        "reps": reps,
        "single_s": [s["seconds"] for s in singles],
        "cluster_s": [c["seconds"] for c in clusters],
        "cluster_launch_returned_s": [c["launch_s"] for c in clusters],
        "ray_status_saw_all_s": [c["ray_status_s"] for c in clusters],
        "setup_s_per_node_single": [s["setup_s"] for s in singles],
        "setup_s_per_node_cluster": [c["setup_s"] for c in clusters],
        "api_requests_single": [s["api_requests"] for s in singles],
        "api_requests_cluster": [c["api_requests"] for c in clusters],
        "api_kinds_cluster": clusters[-1]["api_kinds"],
        "ssh_by_node_single": singles[-1]["ssh"],
        "ssh_by_node_cluster": clusters[-1]["ssh"],
    }
    return [
        Row(
            "B6", f"{NODES}-node cluster until Ray sees {NODES}", cluster, "s",
            baseline="1 lone launch", baseline_value=single, goal=f"<= {GOAL}x",
            met=cluster / single <= GOAL,
            notes=(
                f"bed nodes, fake GCE (operations take no time), median of {reps}; the "
                "cluster's launch returned at "
                f"{median(detail['cluster_launch_returned_s']):.1f} s, then Ray's node table "
                f"(state API on the head, what ray.nodes() reads) until {NODES} alive; the "
                "lone launch: API, SSH, host setup, Jupyter, detached tunnel"
            ),
            detail=detail,
        ),
        Row(
            "B6", "GCE API requests per node", api_cl, "req",
            baseline="1 lone launch", baseline_value=api_one,
            notes=f"cluster: {detail['api_requests_cluster'][-1]} for {NODES} nodes",
        ),
        Row(
            "B6", "SSH session channels per node", ssh_cl.get("channel-open session", 0.0),
            "chan", baseline="1 lone launch",
            baseline_value=ssh_one.get("channel-open session", 0.0),
            notes=f"one command each; counted in the traced CLI, per node: cluster "
            f"{said(ssh_cl)}; lone {said(ssh_one)}",
        ),
        Row(
            "B6", f"the same, until `ray status` counts {NODES}",
            median(detail["ray_status_saw_all_s"]), "s", baseline="1 lone launch",
            baseline_value=single,
            notes="what `orchestrate status` and the autostop agent read: Ray's autoscaler "
            "report, which trails the node table",
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    from bench.common import table

    print(table(run(Context(quick=False, results_dir=Path("/tmp")))))
