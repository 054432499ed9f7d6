"""The test bed's parts one at a time, for a plugin author who wants a real launch on this
machine without `.ci/demo` (which runs the whole GCP job):

    python -m tests.bed.parts engine up      # the Docker engine (reused if one answers)
    python -m tests.bed.parts image          # the offline Jupyter image: prints its tag
    python -m tests.bed.parts vm up          # an sshd standing in for the VM
    python -m tests.bed.parts vm down DIR    # stops that sshd by its PID, removes DIR
    python -m tests.bed.parts engine down    # stops the bed's dockerd if nobody uses it

Each ``up`` prints what it started as one JSON object (``--json``) or as ``key: value``
lines: for the VM its address, port, login user, the client key to log in with (give it to
orchestrate as ``ORCHESTRATE_HOME/config/id_ed25519``, as the end-to-end tests do), the host
key line to pin, the sshd PID and its folder. The VM is this machine: a provider plugin's
fake API hands out ``address:port`` as the instance's, and the real host steps, Docker and
Jupyter run here. Everything needs root, as the bed does.

``engine down`` never stops a dockerd the bed did not start, nor one another bed user (a
test session) still holds: the engine is shared by everyone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.bed.docker_engine import ensure_dockerd, release_bed_dockerd
from tests.bed.jupyter_image import ensure_jupyter_image
from tests.bed.sshd import SSHD, ensure_login_user, generate_client_key, start_sshd

STATE = "bed-vm.json"


def _cache() -> Path:
    return Path(os.environ.get("ORCHESTRATE_BED_CACHE", "/var/cache/orchestrate-bed"))


def _say(facts: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(facts, sort_keys=True))
    else:
        for key, value in facts.items():
            print(f"{key}: {value}")


def engine_up() -> dict[str, Any]:
    """The engine answering on the default socket; it keeps running after this exits."""
    engine = ensure_dockerd(_cache())
    facts = {
        "socket": engine.host, "version": engine.version, "storage_driver": engine.storage_driver,
        "pid": engine.pid, "started_now": engine.started_by_us, "bed_started": engine.managed,
    }  # fmt: skip
    engine.detach()
    return facts


def vm_up() -> dict[str, Any]:
    """An sshd on a free loopback port for the cloud-style login user, with a fresh key."""
    user = ensure_login_user()
    workdir = Path(tempfile.mkdtemp(prefix="orchestrate-bed-vm-"))
    workdir.chmod(0o755)  # sshd reads the authorized keys as the login user
    client = workdir / "client"
    client.mkdir(mode=0o700)
    key_path, public_key = generate_client_key(client)
    sshd = start_sshd(workdir, user=user, authorized_key=public_key)
    facts = {
        "address": sshd.address, "port": sshd.port, "user": sshd.user,
        "key": str(key_path), "host_key": sshd.host_key_pub, "pid": sshd.pid,
        "dir": str(workdir),
    }  # fmt: skip
    (workdir / STATE).write_text(json.dumps(facts), encoding="utf-8")
    sshd._process = None  # it outlives this command; `vm down` ends it by its PID
    return facts


def _is_that_sshd(pid: int, workdir: Path) -> bool:
    """The PID still runs sshd with this folder's config (a reused PID is left alone).

    sshd rewrites its title ("sshd: /usr/sbin/sshd -D -e -f DIR/sshd_config [listener]"),
    so the command line is matched as text."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    return SSHD in title and f"{workdir}/sshd_config" in title


def vm_down(workdir: Path) -> dict[str, Any]:
    """SIGTERM the sshd `vm up` started in `workdir` (SIGKILL after 10 s), remove the folder."""
    facts = json.loads((workdir / STATE).read_text(encoding="utf-8"))
    pid = int(facts["pid"])
    stopped = _is_that_sshd(pid, workdir)
    if stopped:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _is_that_sshd(pid, workdir) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_that_sshd(pid, workdir):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"pid": pid, "stopped": stopped, "removed": str(workdir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="one JSON object per command")
    parts = parser.add_subparsers(dest="part", required=True)
    for name in ("engine", "vm"):
        part = parts.add_parser(name)
        part.add_argument("action", choices=("up", "down"))
        if name == "vm":
            part.add_argument("dir", nargs="?", type=Path, help="the folder `vm up` printed")
    image = parts.add_parser("image")
    image.add_argument("--rebuild", action="store_true", help="debootstrap again")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bed: run as root (the bed starts sshd and dockerd)")
    if args.part == "image":
        engine = ensure_dockerd(_cache())
        built = ensure_jupyter_image(_cache(), rebuild=args.rebuild)
        engine.detach()
        facts: dict[str, Any] = {"tag": built.tag, "action": built.action}
    elif args.part == "engine":
        facts = engine_up() if args.action == "up" else release_bed_dockerd(_cache())
    elif args.action == "up":
        facts = vm_up()
    elif args.dir is None:
        raise SystemExit("bed: vm down needs the folder `vm up` printed (its `dir`)")
    else:
        facts = vm_down(args.dir)
    _say(facts, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
