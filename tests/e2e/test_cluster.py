"""A Ray cluster end to end: a head and two workers launched once on the multi-node bed.

Each bed node is its own network namespace with its own sshd and Docker engine; the fake GCE
gives the instances the nodes' external (natIP) and internal (networkIP) addresses and the
nodes enforce the fake's firewall rules, so the cluster rule the product creates is what
decides who reaches Ray's ports. The launch, `status`, `scale`, the relaunch that repairs a
lost worker and `down` are the real CLI in a subprocess; the notebook is driven through the
real tunnel and Jupyter's websocket, as JupyterLab does.

The tests below share one launched cluster and run in order (the module is one scenario:
launch, look, use, scale, break, repair, delete); it fits CI's budget that way.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bed.fixtures_gce import write_service_account_file
from tests.bed.nodes import NodeBed, docker_in
from tests.bed.sshd import free_port
from tests.support.e2e import adopt_bed_key, write_gcp_profile
from tests.support.ray_view import alive_in_gcs

pytestmark = [pytest.mark.bed, pytest.mark.slow]

URL = re.compile(r"http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)")
DASHBOARD = re.compile(r"dashboard: http://localhost:(\d+)")
RULE = "orchestrate-cluster-rc"
RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard, client server


@dataclass
class Cluster:
    home: Path
    work: Path
    gce: Any
    nodes: NodeBed
    container: str
    url_port: int = 0
    token: str = ""
    dashboard_port: int = 0
    launch_seconds: float = 0.0
    table: dict[str, Any] | None = None

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> Any:
        env = {**os.environ, "ORCHESTRATE_HOME": str(self.home), "BROWSER": "true"}
        env.pop("ORCHESTRATE_CRASH_AT", None)
        result = subprocess.run(
            [sys.executable, "-m", "orchestrate.core.app.cli", *args],
            cwd=self.work, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"orchestrate {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def status(self) -> dict[str, Any]:
        (entry,) = json.loads(self.cli("status", "rc", "--json").stdout)
        return dict(entry)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    gce_api_server: Any,
    gce_service_account_key: Any,
    cluster_nodes: NodeBed,
    ssh_host: Any,
    jupyter_image: str,
) -> Iterator[Cluster]:
    from orchestrate.plugins.providers.gcp.driver import forget_sign_ins

    root = tmp_path_factory.mktemp("cluster")
    home, work = root / "home", root / "work"
    work.mkdir()
    forget_sign_ins()
    gce_api_server.reset()
    gce_api_server.use_nodes(cluster_nodes)
    adopt_bed_key(home, ssh_host.key_path)
    credentials = write_service_account_file(
        root / "service-account.json", gce_api_server, gce_service_account_key
    )
    made = Cluster(home, work, gce_api_server, cluster_nodes, f"orch-cl-{uuid.uuid4().hex[:8]}")
    write_gcp_profile(
        work, name="cl", image=jupyter_image, port=free_port(), remote_port=free_port(),
        container=made.container, project=gce_api_server.project, credentials=credentials,
        endpoint=gce_api_server.endpoint, ssh_user=cluster_nodes[0].user,
        ssh_port=cluster_nodes[0].ssh_port, home=home, nodes=3,
    )  # fmt: skip
    made.table = {
        "project": gce_api_server.project,
        "credentials": str(credentials),
        "api_endpoint": gce_api_server.endpoint,
    }
    try:
        before = len(gce_api_server.requests)
        began = time.monotonic()
        launched = made.cli(
            "launch", "rc", "--profile", "cl", "--detach", "--no-browser", "--yes", check=False
        )
        if launched.returncode != 0:
            raise AssertionError(launched.stderr + diagnose(made))
        made.launch_seconds = time.monotonic() - began
        sent = len(gce_api_server.requests) - before
        print(f"\ncluster of 3 launched in {made.launch_seconds:.1f}s, {sent} API requests")
        print(launched.stderr)
        found = URL.search(launched.stdout)
        assert found, launched.stdout + launched.stderr
        made.url_port, made.token = int(found.group(1)), found.group(2)
        dashboard = DASHBOARD.search(launched.stderr)
        assert dashboard, launched.stderr
        made.dashboard_port = int(dashboard.group(1))
        yield made
    finally:
        made.cli("down", "rc", "--yes", check=False)
        gce_api_server.reset()
        cluster_nodes.reset()
        forget_sign_ins()


def test_status_lists_the_three_nodes(cluster: Cluster) -> None:
    entry = cluster.status()
    nodes = entry["nodes"]
    assert [n["name"] for n in nodes] == ["rc", "rc-w1", "rc-w2"]
    assert {n["status"] for n in nodes} == {"running"}
    assert len({n["zone"] for n in nodes}) == 1
    bed = {(n.external_address, n.internal_address) for n in cluster.nodes}
    assert {(n["address"], n["internal_address"]) for n in nodes} == bed
    assert entry["dashboard"] == f"http://localhost:{cluster.dashboard_port}"
    text = cluster.cli("status", "rc").stdout
    assert (
        "node 2 rc-w2" in text and f"dashboard: http://localhost:{cluster.dashboard_port}" in text
    )


ALIVE = """
import json, time, ray
if not ray.is_initialized():
    ray.init()
deadline = time.time() + {timeout}
while True:
    alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    if len(alive) == {count} or time.time() > deadline:
        break
    time.sleep(2)
print(json.dumps(alive))
"""

PINNED = """
import json, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=0)
def where():
    return ray.util.get_node_ip_address()

answers = {}
for node in ray.nodes():
    if node["Alive"]:
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        answers[node["NodeManagerAddress"]] = ray.get(
            where.options(scheduling_strategy=strategy).remote(), timeout=120
        )
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def kernel(cluster: Cluster) -> Iterator[Any]:
    """A kernel of the head's notebook, driven through the tunnel as JupyterLab does."""
    from tests.support.kernel_ws import KernelChannel, start_kernel

    channel = KernelChannel(
        cluster.url_port, cluster.token, start_kernel(cluster.url_port, cluster.token)
    )
    try:
        yield channel
    finally:
        channel.close()


def alive_from_kernel(kernel: Any, count: int, timeout: int = 300) -> list[str]:
    """The alive Ray nodes' addresses the notebook sees, once there are `count` (or the
    timeout passed: the assertion then shows what there was)."""
    out = kernel.output(ALIVE.format(count=count, timeout=timeout))
    return list(json.loads(out.strip().splitlines()[-1]))


def internal_addresses(cluster: Cluster, names: list[str] | None = None) -> list[str]:
    nodes = cluster.status()["nodes"]
    return sorted(n["internal_address"] for n in nodes if names is None or n["name"] in names)


def test_ray_init_in_the_notebook_sees_three_nodes(cluster: Cluster, kernel: Any) -> None:
    assert alive_from_kernel(kernel, 3) == internal_addresses(cluster)
    assert "ray: 3 nodes alive" in cluster.cli("status", "rc").stdout


def test_a_task_pinned_to_each_node_returns_that_nodes_address(
    cluster: Cluster, kernel: Any
) -> None:
    answers = json.loads(kernel.output(PINNED).strip().splitlines()[-1])
    assert sorted(answers) == internal_addresses(cluster)
    assert all(node == answer for node, answer in answers.items()), answers


def test_the_dashboard_answers_through_the_tunnel(cluster: Cluster) -> None:
    import urllib.error
    import urllib.request

    token = (cluster.home / "state" / "clusters" / "rc.token").read_text().strip()
    url = f"http://127.0.0.1:{cluster.dashboard_port}/api/version"

    def get(headers: dict[str, str]) -> int:
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=20) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    deadline = time.monotonic() + 120
    status = 0
    while status != 200 and time.monotonic() < deadline:
        try:
            status = get({"Authorization": f"Bearer {token}"})
        except OSError:
            time.sleep(2)
    assert status == 200
    assert get({}) in (401, 403), "the dashboard answers without the cluster's token"


def test_the_secret_is_a_root_file_on_each_node_and_nowhere_else(cluster: Cluster) -> None:
    token = (cluster.home / "state" / "clusters" / "rc.token").read_text().strip()
    assert len(token) == 64
    for node in cluster.nodes:
        folder = "/etc/orchestrate/cluster"
        shown = node.exec(f"stat -c '%U %a' {folder}/token {folder} && cat {folder}/token")
        lines = shown.stdout.split()
        assert lines[:4] == ["root", "600", "root", "700"], shown.stdout
        assert lines[4] == token
    assert token.encode() not in (cluster.home / "state" / "state.db").read_bytes()
    assert token not in json.dumps(cluster.gce.instances)  # never in metadata
    logs = cluster.home / "state" / "logs"
    assert not any(token in f.read_text(errors="replace") for f in logs.iterdir() if f.is_file())


def test_rays_ports_are_refused_from_the_laptop(cluster: Cluster) -> None:
    for node in cluster.nodes:
        for port in RAY_PORTS:
            try:
                socket.create_connection((node.external_address, port), timeout=2).close()
                reached = True
            except OSError:
                reached = False
            assert not reached, f"{node.external_address}:{port} answers the laptop"
    rule = cluster.gce.firewalls[RULE]
    assert rule["sourceTags"] == [RULE] and rule["targetTags"] == [RULE]


def test_scale_to_two_and_back_to_three(cluster: Cluster, kernel: Any) -> None:
    down = cluster.cli("scale", "rc", "--nodes", "2")
    assert "removed rc-w2" in down.stdout
    assert [n["name"] for n in cluster.status()["nodes"]] == ["rc", "rc-w1"]
    assert sorted(cluster.gce.instances) == ["rc", "rc-w1"]
    # Drained, not lost: Ray counts the removed node out at once.
    assert alive_from_kernel(kernel, 2, timeout=30) == internal_addresses(cluster)
    up = cluster.cli("scale", "rc", "--nodes", "3")
    assert "rc has 3 nodes" in up.stdout
    nodes = cluster.status()["nodes"]
    assert [n["name"] for n in nodes] == ["rc", "rc-w1", "rc-w2"]
    assert {n["status"] for n in nodes} == {"running"}
    assert alive_from_kernel(kernel, 3) == internal_addresses(cluster)


def test_a_lost_worker_is_shown_and_a_relaunch_repairs_it(cluster: Cluster, kernel: Any) -> None:
    instance = cluster.gce.instances["rc-w1"]
    zone = str(instance["zone"]).rsplit("/", 1)[-1]
    _delete_instance(cluster, zone, "rc-w1")  # the VM is gone, as after a host failure
    shown = {n["name"]: n for n in cluster.status()["nodes"]}
    assert shown["rc-w1"]["status"] == "missing"
    assert shown["rc"]["status"] == "running"
    again = cluster.cli("launch", "rc", "--profile", "cl", "--detach", "--no-browser", "--yes")
    assert "creating rc-w1" in again.stderr
    nodes = cluster.status()["nodes"]
    assert {n["status"] for n in nodes} == {"running"} and len(nodes) == 3
    # The nodes that kept running apply nothing; the new worker is set up from scratch.
    assert again.stderr.count("host already set up: 1 probe, 0 steps applied") == 2, again.stderr
    assert "[rc-w2] host already set up" in again.stderr
    assert alive_from_kernel(kernel, 3) == internal_addresses(cluster)


def _node_of(cluster: Cluster, name: str) -> Any:
    """The bed node an instance of the cluster runs on."""
    zone = str(cluster.gce.instances[name]["zone"]).rsplit("/", 1)[-1]
    node = cluster.gce.host_of(zone, name)
    assert node is not None, name
    return node


def _gce_status(cluster: Cluster, name: str) -> str:
    """The instance's status read through the API (a request: the fake then also notes what
    the bed's guests asked for, such as a power-off)."""
    zone = str(cluster.gce.instances[name]["zone"]).rsplit("/", 1)[-1]
    return str(_api(cluster, "GET", zone, name)["status"])


#: The agents the autostop tests install: a window of seconds, a check every half second (the
#: profile's minimum is a duration too, but its check every minute would take minutes here).
AGENT_WINDOW_S = 4.0
NODE_NAMES = ("rc", "rc-w1", "rc-w2")


def _install_agent(cluster: Cluster, name: str) -> Any:
    """Install the product's real autostop agent on the node of instance `name`, as the
    autostop step would on that cluster node, with `AGENT_WINDOW_S`; its bed node.

    It watches a notebook port nobody uses: the kernel the tests above opened keeps a
    connection to the real one, and the notebook's part of the rule is the lone host's
    tests'. The agent's power-off is the node's own `systemctl poweroff`, which the bed notes
    and the fake then turns into a stop."""
    from orchestrate.core.api.hoststeps import ClusterContext, StepContext
    from orchestrate.plugins.host.autostop.step import install_script

    head, node = _node_of(cluster, "rc"), _node_of(cluster, name)
    index = NODE_NAMES.index(name)
    context = StepContext(
        instance=name, gpu=None, notebook_image="none", token="not-used",
        autostop=f"{AGENT_WINDOW_S:g}s", remote_port=free_port(),
        extra={"autostop_interval": 0.5},
        cluster=ClusterContext(
            name="rc", role="worker" if index else "head", index=index, size=len(NODE_NAMES),
            head_address=head.internal_address, node_address=node.internal_address,
        ),
    )  # fmt: skip
    script = node.workdir / "autostop-install.sh"
    script.write_text(install_script(context, AGENT_WINDOW_S))
    node.exec(["bash", str(script)], timeout=60)
    return node


def test_a_worker_whose_head_is_gone_powers_itself_off_a_window_later(cluster: Cluster) -> None:
    """The worker's real agent (`_install_agent`), watching the head's GCS port across the
    bed's internal link; the head (no agent there) is stopped behind everyone's back.

    The bed's nodes share this machine's /proc, so the agent also sees the host-setup stages
    of other test sessions on the machine as "host setup in progress" (on a VM it sees only
    its own): the assertions allow for that activity, which only delays the power-off."""
    from orchestrate.plugins.host.autostop import agent

    worker = _install_agent(cluster, "rc-w2")
    window = AGENT_WINDOW_S
    state = f"{agent.DEFAULT_STATE_DIR}/{agent.STATE_FILE}"
    time.sleep(window + 2)  # a whole window with the head answering: the worker stays up
    seen = json.loads(worker.exec(["cat", state]).stdout)
    assert "the cluster's head answers" in seen["active"], seen
    assert _gce_status(cluster, "rc-w2") == "RUNNING"
    zone = str(cluster.gce.instances["rc"]["zone"]).rsplit("/", 1)[-1]
    _api(cluster, "POST", zone, "rc", "/stop")  # the head is gone behind everyone's back
    deadline = time.monotonic() + 120
    while _gce_status(cluster, "rc-w2") != "TERMINATED":
        assert time.monotonic() < deadline, worker.exec(
            f"cat {agent.DEFAULT_LOG_FILE}", check=False
        ).stdout
        time.sleep(1)
    last = json.loads(
        worker.exec(["cat", f"{agent.DEFAULT_STATE_DIR}/{agent.LAST_STOP_FILE}"]).stdout
    )
    assert last["message"] == "stopped by autostop after 4 s idle", last
    assert "the cluster's head does not answer" in last["reason"], last
    assert float(last["idle_seconds"]) >= window, last
    assert _gce_status(cluster, "rc-w1") == "RUNNING"  # only the agent's own node stopped
    assert worker.docker("ps", "-q").stdout.strip() == ""  # powered off: nothing runs


def test_stop_stops_every_node_and_start_brings_the_cluster_back(cluster: Cluster) -> None:
    # Left by the test above: the head and one worker stopped already, one worker running.
    began = time.monotonic()
    stopped = cluster.cli("stop", "rc")
    stop_s = time.monotonic() - began
    assert "rc stopped (every node)" in stopped.stdout, stopped.stdout + stopped.stderr
    assert {n: i["status"] for n, i in cluster.gce.instances.items()} == dict.fromkeys(
        ["rc", "rc-w1", "rc-w2"], "TERMINATED"
    )
    for node in cluster.nodes:
        running = node.docker("ps", "-q").stdout.strip()
        assert running == "" and node.docker("ps", "-aq").stdout.strip(), node.name
    shown = cluster.status()["nodes"]
    assert {n["status"] for n in shown} == {"stopped"}, shown
    began = time.monotonic()
    started = cluster.cli("start", "rc", "--detach", "--no-browser")
    start_s = time.monotonic() - began
    found = URL.search(started.stdout)
    assert found, started.stdout + started.stderr
    nodes = cluster.status()["nodes"]
    assert [n["name"] for n in nodes] == ["rc", "rc-w1", "rc-w2"]
    assert {n["status"] for n in nodes} == {"running"}, nodes
    assert set(cluster.gce.instances) == {"rc", "rc-w1", "rc-w2"}
    assert {i["status"] for i in cluster.gce.instances.values()} == {"RUNNING"}
    # Ray's node table on the head (what ray.nodes() reads; `ray status`, which the
    # product's `status` shows, trails it by seconds: tests/support/ray_view.py)
    began = time.monotonic()
    head = _node_of(cluster, "rc")
    while (alive := alive_in_gcs(head)) != 3:
        assert time.monotonic() < began + 180, f"Ray counts {alive} nodes alive"
        time.sleep(1)
    print(f"\nstop {stop_s:.1f}s, start {start_s:.1f}s, then Ray saw 3 nodes "
          f"{time.monotonic() - began:.1f}s later\n{started.stderr}")  # fmt: skip
    # autostop = "off" in the profile: the start removed the agent the test above installed
    from orchestrate.plugins.host.autostop.step import AGENT_PATH

    assert _node_of(cluster, "rc-w2").exec(["test", "-e", AGENT_PATH], check=False).returncode


def test_an_idle_cluster_powers_its_workers_off_before_its_head(cluster: Cluster) -> None:
    """Every node's real agent (`_install_agent`, workers first, so none is armed after the
    head asks). The head finds the cluster idle a window later (no Ray work: the notebook's
    driver from the tests above holds nothing), asks both workers through Ray to stop, waits
    until they left Ray's node table, then powers itself off. The order is the bed's own
    record: the time each node's `systemctl poweroff` wrote its note. Nothing ticks the fake
    until all three are there, so the notes stay until then; then the fake stops the three
    instances. Then `start` brings the cluster back for the test after this one."""
    from orchestrate.plugins.host.autostop import agent, report
    from orchestrate.plugins.host.ray import layout

    began = time.monotonic()
    while (alive := alive_in_gcs(_node_of(cluster, "rc"))) != len(NODE_NAMES):
        assert time.monotonic() < began + 180, f"Ray counts {alive} nodes alive"
        time.sleep(1)
    nodes = {name: _install_agent(cluster, name) for name in reversed(NODE_NAMES)}
    armed = time.time()
    asked: dict[str, float] = {}  # the power-off note's time, per instance
    seen: dict[str, Any] = {}  # the agent's files as `status` reads them, at that moment
    deadline = time.monotonic() + 180
    while len(asked) < len(nodes):
        for name, node in nodes.items():
            if name not in asked and node.power_note.exists():
                asked[name] = node.power_note.stat().st_mtime
                # at once: on the bed the agent outlives its power-off until the fake's
                # next request, and a window later would record another one
                seen[name] = report.parse_status(node.exec(report.status_command()).stdout)
        assert time.monotonic() < deadline, (asked, _agent_logs(nodes.values()))
        time.sleep(0.1)
    logs = _agent_logs(nodes.values())
    head_at = asked.pop("rc")
    assert max(asked.values()) < head_at, (asked, head_at, logs)
    print(f"\nidle cluster: workers powered off {[round(t - armed, 1) for t in asked.values()]}"
          f" s after the agents were armed, the head {head_at - armed:.1f} s")  # fmt: skip
    instances = cluster.gce.instances  # the fake takes the notes: a stop for each
    assert {name: instances[name]["status"] for name in NODE_NAMES} == dict.fromkeys(
        NODE_NAMES, "TERMINATED"
    )
    line = report.last_stop_line(seen["rc"]) or ""
    assert "stopped by autostop after 4 s idle" in line, logs
    assert "asked 2 workers to stop; 2 left Ray within" in line, logs
    for name in ("rc-w1", "rc-w2"):
        worker = nodes[name]
        reason = seen[name].last_stop.get("reason")
        assert reason == "the cluster's head asked: the whole cluster has been idle", logs
        folder = f"{layout.HOST_ROOT}/rc-{NODE_NAMES.index(name)}/{layout.TMP_SUBDIR}"
        consumed = worker.exec(["test", "-e", f"{folder}/{agent.STOP_REQUEST_NAME}"], check=False)
        assert consumed.returncode == 1, f"{name} left the head's request behind"
    started = cluster.cli("start", "rc", "--detach", "--no-browser")
    assert {n["status"] for n in cluster.status()["nodes"]} == {"running"}, started.stderr


def _agent_logs(nodes: Any) -> str:
    """Each node's autostop log, for an assertion's message."""
    from orchestrate.plugins.host.autostop import agent

    return "\n".join(
        f"--- {node.name}:\n" + node.exec(f"cat {agent.DEFAULT_LOG_FILE}", check=False).stdout
        for node in nodes
    )


def test_down_copies_from_the_head_and_leaves_no_instance_container_or_row(
    cluster: Cluster,
) -> None:
    head = next(n for n in cluster.nodes if n.external_address == cluster.status()["address"])
    marker = f"cluster-{uuid.uuid4().hex[:8]}.txt"
    home = head.exec(f"getent passwd {head.user} | cut -d: -f6").stdout.strip()
    head.exec(f"install -m 644 /dev/null {home}/notebooks/{marker} && "
              f"echo from-the-head > {home}/notebooks/{marker}")  # fmt: skip
    copy = cluster.work / "copied"
    done = cluster.cli("down", "rc", "--yes", "--sync-notebooks", str(copy))
    head.exec(f"rm -f {home}/notebooks/{marker}", check=False)
    assert (copy / marker).read_text().strip() == "from-the-head"
    assert "rc deleted (3 nodes)" in done.stdout
    assert cluster.gce.instances == {}
    assert RULE not in cluster.gce.firewalls
    assert json.loads(cluster.cli("status", "--json").stdout) == []
    for node in cluster.nodes:
        listed = docker_in(node, "ps", "-aq")
        assert listed.returncode == 0 and listed.stdout.strip() == "", listed.stdout


def diagnose(cluster: Cluster) -> str:
    """What the nodes' engines hold and say, for a failed launch's message."""
    lines = []
    for node in cluster.nodes:
        listed = docker_in(node, "ps", "-a", "--format", "{{.Names}} {{.Status}}")
        lines.append(f"--- {node.external_address}: {listed.stdout.strip()}")
        for name in listed.stdout.split("\n"):
            if name.strip():
                logs = docker_in(node, "logs", "--tail", "25", name.split()[0])
                lines.append(f"    {name.split()[0]}: {(logs.stdout + logs.stderr)[-2500:]}")
    return "\n".join(lines)


def _delete_instance(cluster: Cluster, zone: str, name: str) -> None:
    """Delete an instance behind orchestrate's back, through the fake's own API."""
    _api(cluster, "DELETE", zone, name)


def _api(cluster: Cluster, method: str, zone: str, name: str, suffix: str = "") -> Any:
    """One call on an instance through the fake's own API, its operation waited for."""
    from orchestrate.plugins.providers.gcp import GcpProvider
    from orchestrate.plugins.providers.gcp.resources import instance_path

    provider = GcpProvider(retry_deadline_s=10.0)
    options = provider.validate_options(dict(cluster.table or {}), "test")
    _, api = provider.connect(options)
    answer = api.request(method, instance_path(zone, name) + suffix, context="test", zone=zone)
    if method != "GET":
        api.wait(answer, context="test", zone=zone, timeout_s=60)
    return answer
