"""A node's holder: the process whose mount and UTS namespaces are the node's.

See ``tests/bed/nodes.py`` ("Mounts", "Power") for what it mounts and why.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrate.core.flows.processes import end_child

from tests.bed.node_procs import NodeBedError

if TYPE_CHECKING:
    from tests.bed.nodes import BedNode

#: Where the product writes on a host: private per node (see the module docstring).
PRIVATE_DIRS = (
    "/etc/orchestrate",
    "/var/lib/orchestrate",
    "/usr/local/lib/orchestrate",
    "/var/log",
)


# The holder: builds the node's mounts, says "ready", then waits to be ended.  Arguments:
# $1 the node's workdir (tmp), $2 the node's private folders' root, $3 its host name; the
# rest are the folders to make private.  `exec sleep` keeps the holder's PID the one we started.
_HOLDER = r"""
set -eu
work=$1; private=$2; name=$3; shift 3
hostname "$name"
mount --bind "$work/hosts" /etc/hosts
mkdir -p "$work/cgroup"
mount --rbind /sys/fs/cgroup "$work/cgroup"
mount -t sysfs sysfs /sys
mount --rbind "$work/cgroup" /sys/fs/cgroup
umount -l "$work/cgroup"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd /run/lock
for dir in "$@"; do
    mkdir -p "$dir" "$private$dir"
    mount --bind "$private$dir" "$dir"
done
done=""
for cmd in /usr/bin/systemctl /usr/sbin/poweroff /usr/sbin/shutdown /usr/sbin/halt \
        /usr/sbin/reboot; do
    target=$(readlink -f "$cmd" || true)
    if [ -n "$target" ] && [ -e "$target" ]; then
        case " $done " in
            *" $target "*) ;;
            *) mount --bind "$work/power" "$target"; done="$done $target" ;;
        esac
    fi
done
echo ready
exec sleep infinity
"""


# Stands in for systemctl/poweroff/shutdown/halt/reboot inside a node ($1: where to note the
# request).  A node shares the machine's PID 1, so the real commands would power off the
# machine; this one notes "poweroff" or "reboot" for the fake GCE, which then stops the
# instance as GCE does when its guest powers off.  Any other systemctl call fails as it does
# on a host without systemd.
_POWER = r"""#!/bin/sh
note=%(note)s
name=$(basename "$0")
case "$name" in
    poweroff|halt|shutdown) action=poweroff ;;
    reboot) action=reboot ;;
    *)
        case "$*" in
            *poweroff*|*halt*) action=poweroff ;;
            *reboot*) action=reboot ;;
            *) echo "System has not been booted with systemd as init system (PID 1)." \
                   "Can't operate." >&2; exit 1 ;;
        esac ;;
esac
for arg in "$@"; do [ "$arg" = "-r" ] && action=reboot; done
echo "$action" > "$note"
"""


def start_holder(node: BedNode) -> None:
    private = node.workdir / "private"
    private.mkdir(parents=True, exist_ok=True)
    power = node.workdir / "power"
    power.write_text(_POWER % {"note": shlex.quote(str(node.power_note))})
    power.chmod(0o755)
    # Its own host name, resolvable like a VM's (sudo warns on every call otherwise).
    hosts = Path("/etc/hosts").read_text()
    (node.workdir / "hosts").write_text(f"{hosts.rstrip()}\n127.0.1.1\t{node.netns}\n")
    argv = [
        *(node.cpu.enter_argv() if node.cpu is not None else ()),
        "nsenter", f"--net=/run/netns/{node.netns}", "--",
        "unshare", "--mount", "--uts", "--propagation", "private", "--",
        "sh", "-c", _HOLDER, "holder", str(node.workdir), str(private), node.netns,
        *PRIVATE_DIRS,
    ]  # fmt: skip
    log = (node.workdir / "holder.log").open("ab")
    holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    log.close()
    node._holder = holder
    assert holder.stdout is not None
    line = holder.stdout.readline()  # "ready", or EOF when the script failed
    holder.stdout.close()
    if line.strip() != b"ready":
        end_child(holder, grace_s=2)
        raise NodeBedError(
            f"{node.name}: its mount namespace could not be set up:\n"
            + (node.workdir / "holder.log").read_text(errors="replace")
        )
