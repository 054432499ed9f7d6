"""The bash every host step script starts with: strict mode and the apt helpers.

A fresh Ubuntu VM runs unattended-upgrades (and cloud-init's own apt) during its first
minutes, holding the dpkg lock; a plain `apt-get install` then fails with "Could not get
lock". Mirrors also hiccup. So every apt call goes through `apt_get`, which waits for the
lock holders to finish and retries transient failures, and `apt_update` runs at most once per
stage. Other plugins (notebook container, autostop agent) build their scripts with
`step_script` too.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

PRELUDE = r"""#!/usr/bin/env bash
# orchestrate host step: idempotent, safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Ubuntu's needrestart would otherwise restart services (sshd among them) mid-setup.
export NEEDRESTART_MODE=l NEEDRESTART_SUSPEND=1
export PATH=${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
warn() { printf '##orchestrate warning %s\n' "$*"; }
has() { command -v "$1" >/dev/null 2>&1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "this step runs as root (the runner uses sudo -n)"; }

# The stage runner exports ORCHESTRATE_REBOOT_FILE; creating it ends the stage with a reboot.
request_reboot() {
    log "reboot required: $*"
    : >"${ORCHESTRATE_REBOOT_FILE:-/run/orchestrate-reboot-required}"
}

apt_busy() {
    if has fuser; then
        fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
            /var/cache/apt/archives/lock >/dev/null 2>&1
    else
        pgrep -x 'apt|apt-get|dpkg|unattended-upgr' >/dev/null 2>&1
    fi
}

# Wait (up to APT_LOCK_WAIT_S, default 20 min) while unattended-upgrades or cloud-init hold
# the apt/dpkg locks, as they do on a VM's first boot.
wait_apt_lock() {
    local waited=0 limit=${APT_LOCK_WAIT_S:-1200}
    while apt_busy; do
        if [ "$waited" -ge "$limit" ]; then
            die "apt is still locked after ${limit} s (unattended-upgrades?)"
        fi
        if [ $((waited % 30)) -eq 0 ]; then
            log "waiting for the apt lock (unattended-upgrades runs on first boot)..."
        fi
        sleep 5
        waited=$((waited + 5))
    done
}

# apt_get ARGS...: apt-get with the lock awaited and transient failures retried (5 tries).
apt_get() {
    local attempt=1 rc=0
    while :; do
        wait_apt_lock
        apt-get -q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" &&
            return 0
        rc=$?
        if [ "$attempt" -ge 5 ]; then
            die "apt-get $* failed $attempt times (last exit status $rc)"
        fi
        log "apt-get $* failed (exit status $rc); retrying in $((attempt * 10)) s"
        sleep $((attempt * 10))
        attempt=$((attempt + 1))
    done
}

# apt_update: once per stage (the stage's work dir remembers), or every time when alone.
apt_update() {
    local mark="${ORCHESTRATE_WORKDIR:-/nonexistent}/apt-updated"
    [ -e "$mark" ] && return 0
    apt_get update
    if [ -d "${ORCHESTRATE_WORKDIR:-/nonexistent}" ]; then : >"$mark"; fi
}

# apt_has PACKAGE: the archive offers PACKAGE (after apt_update).
apt_has() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

# docker_up: the daemon answers.
docker_up() { docker info >/dev/null 2>&1; }

# wait_docker [SECONDS]: until the daemon answers, or fail.
wait_docker() {
    local waited=0 limit=${1:-90}
    until docker_up; do
        [ "$waited" -ge "$limit" ] && die "docker did not answer within ${limit} s"
        sleep 1
        waited=$((waited + 1))
    done
}

# restart_docker: restart the daemon the way this host runs it.
restart_docker() {
    if [ -d /run/systemd/system ]; then
        systemctl restart docker
    else
        service docker restart
    fi
    wait_docker 90
}

# require_apt WHAT: the step installs WHAT from apt; say so clearly on other systems.
require_apt() {
    has apt-get || die "installing $1 needs apt (Ubuntu or Debian); install $1 yourself here"
}
"""


def step_script(body: str, variables: Mapping[str, str | int] | None = None) -> str:
    """A complete step script: the prelude, `variables` as shell-quoted assignments, `body`.

    Values are quoted with `shlex.quote`, so an image name or path can never inject shell.
    """
    assignments = "".join(
        f"{name}={shlex.quote(str(value))}\n" for name, value in (variables or {}).items()
    )
    return f"{PRELUDE}\n{assignments}\n{body.strip()}\n"


def keep_or_replace_container(label: str, what: str) -> str:
    """Bash that keeps container "$name" when its ``label`` equals "$wanted" (started again
    if stopped, and the script ends there), or removes it so the script can make it anew.

    The containers orchestrate runs (the notebook, Ray's) carry a hash of their
    configuration in a label: a relaunch with the same configuration changes nothing.
    """
    return f"""if docker container inspect -- "$name" >/dev/null 2>&1; then
    current=$(docker inspect --format '{{{{index .Config.Labels "{label}"}}}}' -- "$name")
    if [ "$current" = "$wanted" ]; then
        docker start -- "$name" >/dev/null
        echo "{what} container $name started again"
        exit 0
    fi
    echo "{what} container $name has another configuration: replacing it"
    docker rm -f -- "$name" >/dev/null
fi
"""
