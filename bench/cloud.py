"""The fake GCE API for benchmarks, in a process of its own, optionally in a namespace.

Why a separate process: the real API is another machine. In the benchmark's own process the
fake's HTTP threads would share a GIL with the client being measured (16 concurrent launches
in B4), and it could not live in the near network namespace of B2 while the benchmark runs
in the root one.

    python -m bench.cloud --credentials FILE [--latency S] [--address A ...]

prints one JSON line (endpoint, project, pid) once it serves, writes a service-account key
file the fake accepts to FILE, and runs until SIGTERM, when it writes a summary of the
requests it served to ``--stats`` (if given).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT


def serve(argv: list[str] | None = None) -> int:
    from tests.bed.fixtures_gce import generate_rsa_key, write_service_account_file
    from tests.bed.gce_fake import GceFake

    parser = argparse.ArgumentParser(prog="bench.cloud")
    parser.add_argument("--credentials", type=Path, required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="operation latency, s")
    parser.add_argument("--address", action="append", default=[], help="instance address")
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args(argv)

    fake = GceFake(instance_addresses=args.address or ["127.0.0.1"])
    fake.start()
    fake.faults.operation_latency = args.latency
    write_service_account_file(args.credentials, fake, generate_rsa_key())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    info = {"endpoint": fake.endpoint, "project": fake.project, "pid": os.getpid()}
    print(json.dumps(info), flush=True)
    stop.wait()
    if args.stats is not None:
        kinds: collections.Counter[str] = collections.Counter()
        for request in fake.requests:
            kinds[f"{request.method} {_kind(request.path)}"] += 1
        args.stats.write_text(
            json.dumps({"requests": len(fake.requests), "by_kind": dict(kinds)}, indent=1)
        )
    fake.stop()
    return 0


def _kind(path: str) -> str:
    """/compute/v1/projects/P/zones/Z/instances/N/start -> zones/*/instances/*/start."""
    parts = path.split("?")[0].strip("/").split("/")
    if parts[:3] == ["compute", "v1", "projects"]:
        parts = parts[4:]
    named = {"zones", "instances", "operations", "regions", "firewalls", "global", "images"}
    out = []
    for i, part in enumerate(parts):
        out.append("*" if i and parts[i - 1] in named - {"global"} else part)
    return "/".join(out) or "/"


@dataclass
class FakeCloud:
    """A running `bench.cloud` server process (ours: stopped by its PID only)."""

    endpoint: str
    project: str
    credentials: Path
    proc: subprocess.Popen[str]
    stats_path: Path | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        latency: float = 0.0,
        addresses: tuple[str, ...] = ("127.0.0.1",),
        netns: str | None = None,
        timeout: float = 30.0,
    ) -> FakeCloud:
        credentials = workdir / "service-account.json"
        stats = workdir / "gce-stats.json"
        argv = [sys.executable, "-m", "bench.cloud", "--credentials", str(credentials),
                "--latency", str(latency), "--stats", str(stats)]  # fmt: skip
        for address in addresses:
            argv += ["--address", address]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("{"):
            proc.kill()
            proc.wait(timeout=10)
            raise RuntimeError(f"the fake GCE API did not start: {line!r}")
        info = json.loads(line)
        return cls(info["endpoint"], info["project"], credentials, proc, stats)

    def stop(self) -> dict[str, Any]:
        """Stop the server (SIGTERM to its PID) and return its request summary."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.stats_path is not None and self.stats_path.exists():
            self.stats = json.loads(self.stats_path.read_text())
        return self.stats

    def __enter__(self) -> FakeCloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_profile(
    work: Path,
    cloud: FakeCloud,
    *,
    name: str = "bench",
    image: str = "orchestrate-bench/none",
    port: int = 8899,
    remote_port: int = 8888,
    container: str = "orchestrate-bench",
    ssh_user: str = "orchestrate",
    ssh_port: int = 22,
    home: Path | None = None,
) -> Path:
    """./orchestrate.toml with a CPU GCP profile against the fake (no GPU on the bed),
    trusted for ORCHESTRATE_HOME=`home` (default: the folder above `work`)."""
    from tests.support.e2e import write_gcp_profile

    return write_gcp_profile(
        work,
        name=name,
        image=image,
        port=port,
        remote_port=remote_port,
        container=container,
        project=cloud.project,
        credentials=cloud.credentials,
        endpoint=cloud.endpoint,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        home=home or work.parent,
    )


if __name__ == "__main__":
    sys.exit(serve())
