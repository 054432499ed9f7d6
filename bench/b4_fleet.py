"""B4 fleet: 16 launches at once against the fake GCE API with 1 s operations, against one.

Goal: the 16 take at most 1.5x the time of the single launch.

What is measured, and why at this level: each launch is orchestrate's own launch path up to
the first SSH connection (`bench/converge.py`: plan, intent row, find, preflight, zone
failover, create, wait for RUNNING, record stored), run in threads of one process with one
`Runtime` each. The SSH half of a launch is per host and independent (B2 measures it); on
the test bed every instance would be this one machine, so sixteen Jupyter containers on two
cores would measure the bed, not orchestrate. Each side starts from a fresh fake (no
firewall rule yet, so both pay for creating it) in its own process, and from a fresh
orchestrate process (sign-in included), as a user's first launch would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cloud import FakeCloud, write_profile
from bench.common import ROOT, Context, Row, env_with, median, private_home

GOAL_RATIO = 1.5


def _batch(count: int, latency: float, tag: str) -> dict[str, Any]:
    """One fresh fake, one fresh process bringing `count` instances up concurrently."""
    home = private_home(f"b4-{tag}")
    try:
        return _batch_in(home, count, latency)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _batch_in(home: Path, count: int, latency: float) -> dict[str, Any]:
    work = home / "work"
    work.mkdir()
    with FakeCloud.start(home, latency=latency) as cloud:
        write_profile(work, cloud)
        names = [f"fleet-{i + 1}" for i in range(count)]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.converge", "--concurrency", str(count), *names],
            cwd=work,
            env=env_with(home, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        wall = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"bench.converge printed nothing: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result["errors"]:
        raise RuntimeError(f"launches failed: {result['errors']}")
    result["process_wall_s"] = wall
    result["api"] = cloud.stats
    return result


def run(ctx: Context) -> list[Row]:
    count = 4 if ctx.quick else 16
    latency = 0.2 if ctx.quick else 1.0
    reps = 1 if ctx.quick else 3
    singles: list[dict[str, Any]] = []
    fleets: list[dict[str, Any]] = []
    for rep in range(reps):  # interleaved, so a busy moment hits both sides
        singles.append(_batch(1, latency, f"single{rep}"))
        fleets.append(_batch(count, latency, f"fleet{rep}"))
        ctx.log(
            f"  B4 rep {rep + 1}: single {singles[-1]['seconds']:.2f} s, "
            f"{count} at once {fleets[-1]['seconds']:.2f} s"
        )
    single = median([s["seconds"] for s in singles])
    fleet = median([f["seconds"] for f in fleets])
    ratio = fleet / single
    detail = {
        "count": count,
        "operation_latency_s": latency,
        "reps": reps,
        "single_s": [s["seconds"] for s in singles],
        "fleet_s": [f["seconds"] for f in fleets],
        "slowest_launch_in_fleet_s": max(max(f["each"].values()) for f in fleets),
        "api_requests_single": singles[-1]["api"].get("requests"),
        "api_requests_fleet": fleets[-1]["api"].get("requests"),
        "api_by_kind_single": singles[-1]["api"].get("by_kind"),
        "operations_waited_single": _operations(singles[-1]),
    }
    return [
        Row(
            "B4",
            f"{count} launches at once ({latency:g} s ops)",
            fleet,
            "s",
            baseline="1 launch",
            baseline_value=single,
            goal=f"<= {GOAL_RATIO}x",
            met=ratio <= GOAL_RATIO,
            notes=(
                "launch path up to SSH (plan, intent, find, preflight, create, wait), one "
                "Runtime per launch, fresh fake and process each side; median of "
                f"{reps}; API requests: {detail['api_requests_single']} for one, "
                f"{detail['api_requests_fleet']} for {count}"
            ),
            detail=detail,
        ),
    ]


def _operations(result: dict[str, Any]) -> int:
    """How many operations the launch waited on (firewall insert, instance insert)."""
    kinds = result["api"].get("by_kind", {})
    return int(sum(n for kind, n in kinds.items() if kind.startswith("POST") and "token" not in kind
                   and "/wait" not in kind)) or 1  # fmt: skip


if __name__ == "__main__":
    from bench.common import table

    print(table(run(Context(quick="--quick" in sys.argv, results_dir=Path("/tmp")))))
