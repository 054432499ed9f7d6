"""B2's baseline: the seed's alias done with OpenSSH, as a person runs it by hand.

The seed (seed/WORKFLOW.md, step 5) keeps "an alias that starts the container remotely and
opens the tunnel in one go": one ``ssh HOST <start script>``, then ``ssh -f -N -L
LOCAL:localhost:REMOTE HOST``, then the browser's first request. Timed here from the first
ssh to Jupyter's answer through the tunnel, in the namespace this runs in (B2 runs it in
the near one). The backgrounded tunnel is a control master, so it is ended through its
control socket afterwards rather than by searching for its PID.

    python -m bench.openssh_alias --json '{"user": ..., "host": ..., ...}'
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="alias-"))
    try:
        return _run(cfg, folder / "ctl")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(cfg: dict[str, Any], control: Path) -> dict[str, Any]:
    target = f"{cfg['user']}@{cfg['host']}"
    opts = [
        "-F", "/dev/null", "-p", str(cfg["port"]), "-i", cfg["key"],
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        "-o", f"UserKnownHostsFile={cfg['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
    ]  # fmt: skip
    wall_start = time.time()
    start = time.perf_counter()
    subprocess.run(
        ["ssh", *opts, target, f"sudo -n docker start {cfg['container']}"],
        check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    started_container = time.perf_counter()
    wall_started_container = time.time()
    subprocess.run(
        ["ssh", *opts, "-f", "-N", "-M", "-S", str(control), "-o", "ExitOnForwardFailure=yes",
         "-L", f"{cfg['local_port']}:localhost:{cfg['remote_port']}", target],
        check=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    tunnel_up = time.perf_counter()
    wall_tunnel_up = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", cfg["local_port"], timeout=30)
    try:
        conn.request("GET", f"/api/status?token={cfg['token']}")
        status = conn.getresponse().status
    finally:
        conn.close()
    done = time.perf_counter()
    wall_done = time.time()
    subprocess.run(
        ["ssh", *opts, "-S", str(control), "-O", "exit", target],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        timeout=30, check=False,
    )  # fmt: skip
    return {
        "seconds": done - start,
        "start_script_s": started_container - start,
        "tunnel_s": tunnel_up - started_container,
        "first_request_s": done - tunnel_up,
        "status": status,
        "wall_start": wall_start,
        "wall_started_container": wall_started_container,
        "wall_tunnel_up": wall_tunnel_up,
        "wall_done": wall_done,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.openssh_alias")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run(json.loads(args.json))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
