"""The main job on the local test bed: `orchestrate launch --provider gcp` end to end.

Starts the bed (fake GCE API on loopback, a real sshd standing in for the VM, the Docker
engine, the offline Jupyter image), writes a profile for it in a private ORCHESTRATE_HOME,
runs the real CLI, checks Jupyter through the tunnel, and cleans everything up. With
`--keep`, it leaves the notebook up until Enter or Ctrl-C so a person can open the URL.

    python -m tests.bed.demo [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bed.docker_engine import docker, ensure_dockerd
from tests.bed.fixtures_gce import generate_rsa_key, write_service_account_file
from tests.bed.gce_fake import GceFake
from tests.bed.jupyter_image import ensure_jupyter_image
from tests.bed.sshd import ensure_login_user, generate_client_key, start_sshd
from tests.support.e2e import adopt_bed_key, make_bed, write_profile


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def _run(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    _say("$ orchestrate " + " ".join(args))
    result = subprocess.run(
        [sys.executable, "-m", "orchestrate.core.app.cli", *args],
        cwd=work,
        env=os.environ.copy(),
        text=True,
        stdout=subprocess.PIPE,
    )
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"demo: orchestrate {args[0]} failed with exit {result.returncode}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the notebook up until Enter")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit(
            "demo: run as root (it starts sshd and dockerd), e.g. `sudo bash .ci/demo`"
        )
    cache = Path(os.environ.get("ORCHESTRATE_BED_CACHE", "/var/cache/orchestrate-bed"))
    cache.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="orchestrate-demo-"))
    root.chmod(0o755)  # sshd reads the authorized key file as the login user
    home, work = root / "home", root / "work"
    work.mkdir()
    os.environ["ORCHESTRATE_HOME"] = str(home)
    engine = ensure_dockerd(cache)
    bed = None
    try:
        _say("Jupyter image (built offline once, then cached)")
        image = ensure_jupyter_image(cache).tag
        user = ensure_login_user()
        key_path, public_key = generate_client_key(root / "client")
        with (
            GceFake() as gce,
            start_sshd(root / "sshd", user=user, authorized_key=public_key) as sshd,
        ):
            credentials = write_service_account_file(root / "sa.json", gce, generate_rsa_key())
            adopt_bed_key(home, key_path)
            bed = make_bed(home, work, gce, sshd, image)
            profile = write_profile(bed, credentials, name="demo")
            _say(f"fake GCE API at {gce.endpoint}; the VM is sshd at 127.0.0.1:{sshd.port}")
            _say(f"profile written to {profile}")
            launched = _run(work, "launch", "demo", "--profile", "demo", "--detach", "--no-browser")
            url = launched.stdout.strip().splitlines()[-1]
            port = int(url.split(":")[2].split("/")[0])
            token = url.split("token=")[1]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/api/status?token={token}")
            status = conn.getresponse().status
            conn.close()
            _say(f"GET /api/status through the tunnel: HTTP {status}")
            if status != 200:
                raise SystemExit("demo: Jupyter did not answer through the tunnel")
            _run(work, "status")
            if args.keep:
                _say(f"open {url} ; press Enter to tear everything down")
                with contextlib.suppress(EOFError, KeyboardInterrupt):
                    input()
            _run(work, "down", "demo", "--yes")
        _say("done: instance deleted on the fake API, tunnel closed, state empty")
        return 0
    finally:
        if bed is not None:
            docker("rm", "-f", bed.container, check=False)
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
