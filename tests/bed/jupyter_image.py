"""An offline-built JupyterLab image for the test bed, behaving like Jupyter Docker Stacks.

The product starts Jupyter in a container on the VM; users run the Jupyter Docker Stacks
images (JupyterLab on Jupyter Server).  The test bed has no access to Docker Hub, only to
Debian's package mirror and PyPI, so the image is built from those:

1. ``debootstrap --variant=minbase bookworm ROOTFS MIRROR`` (the mirror apt on
   this machine already uses, read from its sources),
2. ``chroot ROOTFS apt-get install --no-install-recommends`` :data:`PACKAGES`
   (Python, venv, CA certificates for PyPI),
3. ``python3 -m venv /opt/jupyter`` and ``pip install`` :data:`PYPI_PACKAGES` (JupyterLab,
   Jupyter Server and ipykernel, pinned) in the chroot, plus :data:`START_SCRIPT`,
4. apt and pip caches removed, the root filesystem tarred and cached in the
   bed cache, keyed by a hash of the recipe,
5. ``docker import`` with the image config (CMD, ENV, WORKDIR, EXPOSE, LABEL)
   given as ``--change`` lines.

The tag is ``orchestrate-bed/jupyter:<recipe hash>`` (also tagged ``:latest``).
When that tag exists nothing happens; when only the tarball exists it is
imported (seconds); otherwise the whole build runs (a few minutes on two cores,
most of it apt and pip).  Changing the recipe (packages, suite,
:data:`RECIPE_VERSION`, the start script or the image config) changes the hash and rebuilds.

What the start script copies from Docker Stacks' ``start.sh``/``start-notebook.py``, because
the product relies on it:

- ``JUPYTER_TOKEN`` in the environment is the token (Jupyter Server reads it itself);
- started as root with ``NB_UID``/``NB_GID``, it makes a user ``NB_USER`` (default
  ``jovyan``) with those ids and runs Jupyter as that user, so files written to a mounted
  folder belong to the host user with that uid;  as root without them, it runs as uid 1000
  like the stacks' ``jovyan``;  started as another user, it runs as that user;
- ``NOTEBOOK_ARGS`` is split on spaces and appended to ``jupyter lab`` (the product sets
  ``--ServerApp.root_dir`` there, and on a cluster's head ``--ServerApp.ip``/``.port``);
  the listening address 0.0.0.0:8888 comes from :data:`SERVER_CONFIG_PATH`, as in the
  stacks, so those arguments override it;
- arguments given to the start script are appended as well, as the stacks' CMD does.

Facts about Jupyter Server 2 the tests rely on: the token option is
``--IdentityProvider.token``; ``/api/...`` without a valid token answers 403; pages answer
302 to ``/login``; ``/api/status`` with the token answers 200.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.bed.docker_engine import docker
from tests.bed.sshd import free_port

# Bump when the build steps below change in a way the other inputs do not show.
RECIPE_VERSION = 3
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
#: Installed from PyPI into :data:`JUPYTER_VENV`; pinned so a rebuild gets the same server.
PYPI_PACKAGES: tuple[str, ...] = (
    "jupyterlab==4.6.6",
    "jupyter_server==2.21.1",
    "ipykernel==7.4.0",
    # Ray for the cluster tests: its `ray start` runs in containers of this image and a
    # kernel's `ray.init()` joins it.
    "ray[default]==2.60.0",
)
JUPYTER_VENV = "/opt/jupyter"
START_PATH = "/usr/local/bin/start-notebook.sh"
#: Where Docker Stacks keep the server's listening address: in a config file, not on the
#: command line, so ``NOTEBOOK_ARGS`` can override it (a cluster head binds 127.0.0.1).
SERVER_CONFIG_PATH = "/etc/jupyter/jupyter_server_config.py"
SERVER_CONFIG = """c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
"""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
IMAGE_REPOSITORY = "orchestrate-bed/jupyter"
#: A cached tarball of another recipe unused this long is removed by the next build.
STALE_SECONDS = 3 * 24 * 3600
NOTEBOOK_PORT = 8888
NOTEBOOK_DIR = "/notebooks"
_CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IMAGE_PATH = f"{JUPYTER_VENV}/bin:{_CHROOT_PATH}"

#: The image's entry point: Docker Stacks' user switch and ``NOTEBOOK_ARGS``, in POSIX sh.
#: ``setpriv`` (util-linux, in every Debian) drops to the user without a PAM session.
START_SCRIPT = r"""#!/bin/sh
set -eu
NB_USER=${NB_USER:-jovyan}
if [ "$(id -u)" = 0 ]; then
    NB_UID=${NB_UID:-1000}
    NB_GID=${NB_GID:-100}
    getent group "$NB_GID" >/dev/null || groupadd --gid "$NB_GID" "$NB_USER"
    user=$(getent passwd "$NB_UID" | cut -d: -f1 || true)
    if [ -z "$user" ]; then
        # jovyan takes the wanted ids, as in the stacks' start.sh
        if id "$NB_USER" >/dev/null 2>&1; then
            usermod --uid "$NB_UID" --gid "$NB_GID" "$NB_USER"
        else
            useradd --create-home --uid "$NB_UID" --gid "$NB_GID" --shell /bin/sh "$NB_USER"
        fi
        user=$NB_USER
    fi
    home=$(getent passwd "$NB_UID" | cut -d: -f6)
    mkdir -p "$home"
    chown "$NB_UID:$NB_GID" "$home"
    allow_root=""
    if [ "$NB_UID" = 0 ]; then allow_root="--allow-root"; fi
    # NOTEBOOK_ARGS is split on spaces on purpose, as the stacks do.
    # shellcheck disable=SC2086
    exec setpriv --reuid="$NB_UID" --regid="$NB_GID" --init-groups \
        env HOME="$home" USER="$user" jupyter lab --no-browser \
        $allow_root ${NOTEBOOK_ARGS:-} "$@"
fi
export HOME="${HOME:-/tmp}"
[ -w "$HOME" ] || export HOME=/tmp
# shellcheck disable=SC2086
exec jupyter lab --no-browser ${NOTEBOOK_ARGS:-} "$@"
"""


class ImageBuildError(RuntimeError):
    """The offline Jupyter image could not be built or imported."""


def notebook_command(token: str, notebook_dir: str = NOTEBOOK_DIR) -> list[str]:
    """A command that starts JupyterLab in the container with an explicit token.

    ``docker run -d --name N -p 127.0.0.1:PORT:8888 -v HOSTDIR:/notebooks IMAGE``
    followed by this list.  The start script listens on 0.0.0.0 because the published
    port reaches the container through its bridge address, not its loopback; the host
    side is what is bound to 127.0.0.1.  Note the token is then visible in
    ``docker inspect`` and ``ps`` on the host; ``-e JUPYTER_TOKEN`` with the
    image's default CMD, as the product does, is the alternative.  The start script
    appends these arguments, so Jupyter still runs as ``NB_UID`` (default 1000).
    """
    if not token:
        raise ValueError("an empty token would switch Jupyter's authentication off")
    return [
        START_PATH,
        f"--ServerApp.root_dir={notebook_dir}",
        f"--IdentityProvider.token={token}",
    ]


def image_changes() -> list[str]:
    """The image config applied by ``docker import --change`` (part of the recipe hash).

    The default CMD has no token option, so Jupyter Server takes ``JUPYTER_TOKEN``
    from the environment (or generates and logs a random one).
    """
    return [
        f"CMD {json.dumps([START_PATH])}",
        f"ENV PATH={_IMAGE_PATH}",
        "ENV LANG=C.UTF-8",
        f"WORKDIR {NOTEBOOK_DIR}",
        f"EXPOSE {NOTEBOOK_PORT}",
        f"LABEL org.orchestrate.bed.rootfs={rootfs_hash()}",
    ]


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_hash() -> str:
    """Hash of what goes into the root filesystem tarball (the slow part)."""
    return _digest(
        {
            "version": RECIPE_VERSION,
            "suite": SUITE,
            "variant": VARIANT,
            "packages": PACKAGES,
            "pypi": PYPI_PACKAGES,
            "start": START_SCRIPT,
            "server_config": SERVER_CONFIG,
        }
    )


def recipe_hash() -> str:
    """Hash of the whole recipe: the root filesystem and the image config."""
    return _digest({"rootfs": rootfs_hash(), "changes": image_changes()})


def image_tag() -> str:
    """``orchestrate-bed/jupyter:<recipe hash>``."""
    return f"{IMAGE_REPOSITORY}:{recipe_hash()}"


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if fields:
            yield fields


def debian_mirror(suite: str = SUITE) -> str:
    """The Debian mirror this machine's apt uses for ``suite`` (deb822 or one-line sources).

    The build must use a mirror the machine is allowed to reach; whatever apt
    already uses is that mirror.  Falls back to deb.debian.org.
    """
    apt = Path("/etc/apt")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(path.read_text()):
            if stanza.get("enabled", "yes").lower() == "no":
                continue
            if (
                "deb" in stanza.get("types", "").split()
                and suite in stanza.get("suites", "").split()
            ):
                uris = stanza.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1].rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class JupyterImage:
    """Result of :func:`ensure_jupyter_image`.

    ``action`` is ``"present"`` (tag existed, nothing done), ``"imported"``
    (cached tarball imported) or ``"built"`` (full build); ``seconds`` is how
    long this call took.
    """

    tag: str
    latest_tag: str
    recipe_hash: str
    tarball: Path
    action: str
    seconds: float


def image_exists(tag: str) -> bool:
    """Whether the engine has an image with this tag."""
    return docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode == 0


@contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """One build at a time across processes (two pytest sessions would race otherwise)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "build.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _logged(argv: list[str], log: Path, *, env: dict[str, str] | None = None) -> None:
    """Run a build step, appending its output to ``log``; raise with the log's tail."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise ImageBuildError(f"{argv[0]} failed with exit status {proc.returncode}:\n{tail}")


def _chroot(rootfs: Path, log: Path, *args: str) -> None:
    """Run a command in the build root with a clean, non-interactive environment."""
    env = {
        "PATH": _CHROOT_PATH,
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
        "HOME": "/root",
    }
    _logged(["chroot", str(rootfs), *args], log, env=env)


def build_rootfs_tarball(tarball: Path, *, mirror: str | None = None) -> None:
    """Debootstrap, install :data:`PACKAGES`, clean up and tar the root filesystem.

    Neither /proc nor /dev are mounted into the chroot: debootstrap creates the
    few device nodes apt needs and nothing in the install reads /proc, so there
    is no mount to leak if the build is interrupted.  The tarball appears under
    its final name only once complete.
    """
    for tool in ("debootstrap", "chroot", "tar"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} not found (Debian package: debootstrap/coreutils/tar)")
    mirror = mirror or debian_mirror()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=tarball.parent))
    log = tarball.parent / "build.log"
    log.write_text(f"build of {tarball.name} started {time.ctime()}, mirror {mirror}\n")
    try:
        rootfs = work / "rootfs"
        _logged(["debootstrap", f"--variant={VARIANT}", SUITE, str(rootfs), mirror], log)
        resolv = rootfs / "etc" / "resolv.conf"
        resolv.unlink(missing_ok=True)  # never write through a symlink out of the chroot
        shutil.copyfile("/etc/resolv.conf", resolv)
        policy = rootfs / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\n# no services start during the image build\nexit 101\n")
        policy.chmod(0o755)
        # Mirrors served from a snapshot carry expired Valid-Until dates.
        apt_opts = ["-o", "Acquire::Check-Valid-Until=false", "-o", "Acquire::Retries=3"]
        _chroot(rootfs, log, "apt-get", *apt_opts, "update")
        _chroot(
            rootfs, log, "apt-get", *apt_opts, "install", "-y", "--no-install-recommends",
            *PACKAGES,
        )  # fmt: skip
        _chroot(rootfs, log, "apt-get", "clean")
        _chroot(rootfs, log, "python3", "-m", "venv", JUPYTER_VENV)
        # pip in the chroot trusts what this machine trusts (a proxy may re-sign PyPI's
        # certificate); the bundle is build input only and leaves before the tarball.
        bundle = rootfs / "tmp" / "build-ca.crt"
        shutil.copyfile(HOST_CA_BUNDLE, bundle)
        _chroot(
            rootfs, log, f"{JUPYTER_VENV}/bin/pip", "install", "--no-cache-dir",
            "--disable-pip-version-check", "--index-url", "https://pypi.org/simple",
            "--cert", "/tmp/build-ca.crt", *PYPI_PACKAGES,
        )  # fmt: skip
        bundle.unlink()
        # The stacks' user, made at build time: `docker exec -u jovyan` finds its home.
        _chroot(
            rootfs, log, "useradd", "--create-home", "--uid", "1000", "--gid", "100",
            "--shell", "/bin/sh", "jovyan",
        )  # fmt: skip
        server_config = rootfs / SERVER_CONFIG_PATH.lstrip("/")
        server_config.parent.mkdir(parents=True, exist_ok=True)
        server_config.write_text(SERVER_CONFIG)
        start = rootfs / START_PATH.lstrip("/")
        start.write_text(START_SCRIPT)
        start.chmod(0o755)
        policy.unlink()
        resolv.write_text("")  # docker bind-mounts its own at run time
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            path = rootfs / leftover
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir()
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        (rootfs / NOTEBOOK_DIR.lstrip("/")).mkdir(exist_ok=True)
        partial = work / "rootfs.tar"
        _logged(
            [
                "tar", "--numeric-owner", "-C", str(rootfs),
                "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
                "-cf", str(partial), ".",
            ],
            log,
        )  # fmt: skip
        partial.replace(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_jupyter_image(cache_dir: Path, *, rebuild: bool = False) -> JupyterImage:
    """Make sure ``orchestrate-bed/jupyter:<recipe hash>`` exists in the engine.

    Needs root and a running engine (:func:`tests.bed.docker_engine.ensure_dockerd`).
    ``rebuild`` forces a fresh debootstrap even if the tarball is cached.
    """
    began = time.monotonic()
    tag = image_tag()
    latest = f"{IMAGE_REPOSITORY}:latest"
    folder = cache_dir / "jupyter-image"
    tarball = folder / f"rootfs-{rootfs_hash()}.tar"
    with _build_lock(folder):
        if not rebuild and image_exists(tag):
            action = "present"
        else:
            action = "imported"
            if rebuild or not tarball.exists():
                if os.geteuid() != 0:
                    raise ImageBuildError("building the rootfs needs root (debootstrap, chroot)")
                build_rootfs_tarball(tarball)
                # Branches with other recipes share this cache: a tarball is removed only
                # when nobody has built or imported it for a while.
                for stale in folder.glob("rootfs-*.tar"):
                    if stale != tarball and time.time() - stale.stat().st_mtime > STALE_SECONDS:
                        stale.unlink(missing_ok=True)
                action = "built"
            argv = ["import"]
            for change in image_changes():
                argv += ["--change", change]
            docker(*argv, str(tarball), tag, timeout=900)
            os.utime(tarball)  # used now: kept while other recipes' builds come and go
        docker("tag", tag, latest)
    return JupyterImage(
        tag=tag,
        latest_tag=latest,
        recipe_hash=recipe_hash(),
        tarball=tarball,
        action=action,
        seconds=time.monotonic() - began,
    )


@dataclass
class NotebookContainer:
    """A Jupyter container started by :func:`run_notebook`; ``remove()`` removes exactly it."""

    container_id: str
    name: str
    port: int
    token: str
    host_dir: Path

    def url(self, path: str, *, with_token: bool = True) -> str:
        """``http://127.0.0.1:PORT/PATH``, with ``?token=`` unless told otherwise."""
        url = f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"
        if with_token:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"token": self.token})
        return url

    def get(self, path: str, *, with_token: bool = True, timeout: float = 10) -> tuple[int, bytes]:
        """GET a path on the published port; returns ``(status, body)`` without raising on 4xx.

        Redirects are not followed, so a page that wants a login shows as 302.
        """
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(self.url(path, with_token=with_token), timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def logs(self) -> str:
        """The container's output (Notebook logs to stderr)."""
        proc = docker("logs", self.container_id, check=False)
        return proc.stdout + proc.stderr

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll ``/api/status`` with the token until it answers 200; return seconds waited.

        Connection errors are expected while Notebook starts (docker-proxy
        accepts and then closes the connection until the server listens).
        """
        began = time.monotonic()
        last = ""
        while time.monotonic() - began < timeout:
            try:
                status, body = self.get("api/status", timeout=5)
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return time.monotonic() - began
                last = f"HTTP {status}: {body[:200]!r}"
            state = docker("inspect", "--format", "{{.State.Status}}", self.container_id)
            if state.stdout.strip() not in ("created", "running"):
                break
            time.sleep(0.2)
        raise ImageBuildError(
            f"Jupyter in {self.name} did not answer 200 on /api/status within {timeout:.0f} s "
            f"(last: {last}); its logs:\n{self.logs()[-4000:]}"
        )

    def remove(self) -> None:
        """``docker rm -f`` this container (by the ID ``docker run`` returned, nothing else)."""
        docker("rm", "-f", self.container_id, check=False)

    def __enter__(self) -> NotebookContainer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects as they are instead of following them."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


def run_notebook(
    image: str,
    *,
    token: str,
    host_dir: Path,
    port: int | None = None,
    name: str | None = None,
    token_via_env: bool = False,
    env: dict[str, str] | None = None,
) -> NotebookContainer:
    """Start Jupyter the way the product does: published on 127.0.0.1 only, with a token.

    ``docker run -d --name N -p 127.0.0.1:PORT:8888 -v HOSTDIR:/notebooks IMAGE
    <notebook_command(token)>``; with ``token_via_env`` the token goes in as
    ``-e JUPYTER_TOKEN`` and the image's default CMD runs instead.  ``env`` adds
    ``-e`` variables (``JUPYTER_TOKEN``, ``NB_UID``, ``NOTEBOOK_ARGS``) and runs the default
    CMD as root, as the product's notebook step does.  ``port`` defaults to a free
    loopback port.  Does not wait: call ``wait_ready()``.
    """
    port = port if port is not None else free_port("127.0.0.1")
    name = name or f"orchestrate-bed-jupyter-{secrets.token_hex(4)}"
    argv = ["run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{NOTEBOOK_PORT}"]
    argv += ["-v", f"{host_dir.resolve()}:{NOTEBOOK_DIR}"]
    if env:
        argv += ["--user", "root"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
    if token_via_env:
        argv += ["-e", f"JUPYTER_TOKEN={token}"]
    argv.append(image)
    if not token_via_env and env is None:
        argv += notebook_command(token)
    container_id = docker(*argv).stdout.strip()
    return NotebookContainer(
        container_id=container_id, name=name, port=port, token=token, host_dir=host_dir
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.bed.jupyter_image``: build or refresh the image ahead of the tests.

    Starts (and then stops) a dockerd if none runs, like the test fixtures do.
    """
    from tests.bed.docker_engine import ensure_dockerd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("ORCHESTRATE_BED_CACHE", "/var/cache/orchestrate-bed")),
    )
    parser.add_argument("--rebuild", action="store_true", help="debootstrap again")
    args = parser.parse_args(argv)
    with ensure_dockerd(args.cache):
        image = ensure_jupyter_image(args.cache, rebuild=args.rebuild)
    print(f"{image.tag} ({image.action} in {image.seconds:.1f} s)", file=sys.stderr)
    print(image.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


@contextmanager
def rootfs_for_import(cache_dir: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """The current recipe's (tag, rootfs tarball, ``--change`` lines), held for importing.

    For the multi-node bed, whose node engines import the image from the tarball.  The build
    lock is held while the caller imports, because a build of another recipe (another
    branch's session sharing the cache) deletes tarballs it considers stale.  When the tarball
    is gone but this machine's engine still has the image, the tarball is made again from it
    with ``docker export`` (seconds) instead of a rebuild (minutes); with neither, the image is
    built.  Needs the machine's engine (:func:`tests.bed.docker_engine.ensure_dockerd`).
    """
    ensure_jupyter_image(cache_dir)  # built or imported here first: the tarball exists now
    folder = cache_dir / "jupyter-image"
    tarball = folder / f"rootfs-{rootfs_hash()}.tar"
    tag = image_tag()
    with _build_lock(folder):
        if not tarball.exists():
            partial = folder / f".{tarball.name}.{os.getpid()}.partial"
            container = docker("create", tag, "true").stdout.strip()
            try:
                docker("export", "--output", str(partial), container, timeout=900)
            finally:
                docker("rm", "-f", container, check=False)
            partial.replace(tarball)
        yield tag, tarball, image_changes()
