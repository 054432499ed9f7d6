"""A Docker engine for the test bed: reuse the one running, or start ``dockerd``.

The product runs the Jupyter container with ``sudo docker run -d -p
127.0.0.1:PORT:8888 ...`` on the VM; on the test bed the "VM" is this machine,
so its Docker engine must be up on the default socket ``/var/run/docker.sock``
(the product's remote commands use the default socket, not a test-only one).

How the engine is started, and why:

- ``--iptables=false --ip6tables=false --ip-forward=false``: the bed must not
  rewrite the machine's firewall or turn on routing.  ``/proc/sys/net/ipv4/
  ip_forward`` is read before and after; if it turned to 1 because of us it is
  set back to 0, and never left on.
- Port publishing still works without iptables: with the default
  ``--userland-proxy=true`` dockerd starts a ``docker-proxy`` process that
  listens on ``127.0.0.1:PORT`` on the host and copies bytes to the container's
  address on the ``docker0`` bridge, which the host reaches directly (no NAT
  and no forwarding involved).  Measured here: ``docker run -p
  127.0.0.1:PORT:8888`` answers on the host's loopback with these flags, so no
  extra option is needed.  Do not pass ``--userland-proxy=false``: without
  iptables nothing would then forward the published port.
- ``--storage-driver overlay2``, falling back to ``vfs`` (slow, copies every
  layer) where the kernel or the backing filesystem refuses overlay.
- ``--exec-opt native.cgroupdriver=cgroupfs``: there is no systemd here, and the
  product sets the same driver on GPU hosts (DESIGN.md section 5).
- ``--data-root CACHE/docker-data`` so images (the offline Jupyter image) survive
  between test sessions; ``--exec-root`` and ``--pidfile`` in a fresh temporary
  folder, so nothing collides with a system dockerd's runtime state.

Sharing between processes: several pytest sessions (different engineers, or
``pytest -n``) may need the engine at the same time.  A lock file serialises the
check-and-start, every user holds a shared lock on a "users" file for as long as
it uses the engine, and a state file in the cache records the dockerd the *bed*
started (PID, exec root, ip_forward before).  On release, only the last user
stops that recorded PID; a dockerd the bed did not start (no state file, e.g. a
system service) is never stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_HOST = f"unix://{DOCKER_SOCKET}"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
STORAGE_DRIVERS = ("overlay2", "vfs")


class DockerEngineError(RuntimeError):
    """The Docker engine could not be found, started or stopped cleanly."""


def docker_binary() -> str:
    """Path of the docker CLI (``/usr/bin/docker`` from docker.io, or another on PATH)."""
    found = shutil.which("docker")
    if found is None:
        raise DockerEngineError("docker CLI not found: install the Debian package docker.io")
    return found


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``docker -H unix:///var/run/docker.sock ARGS`` and capture its output.

    The socket is named explicitly so a ``DOCKER_HOST`` or docker context in the
    caller's environment cannot point the tests at another engine.
    """
    argv = [docker_binary(), "-H", DOCKER_HOST, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise DockerEngineError(
            f"docker {' '.join(args)} failed with exit status {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc


def engine_answers() -> bool:
    """Whether a Docker engine answers on the default socket (``docker info``)."""
    if not Path(DOCKER_SOCKET).exists():
        return False
    try:
        proc = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def read_ip_forward() -> str:
    """Current value of ``net.ipv4.ip_forward`` ("0" or "1")."""
    return IP_FORWARD.read_text().strip()


def _pid_is_dockerd(pid: int) -> bool:
    """Whether ``pid`` is alive and is a dockerd (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and os.path.basename(cmdline[0]) == b"dockerd"


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` no longer exists (or is a zombie); True if it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        # Field 3 is the state; "Z" = exited, waiting for its parent to reap it.
        if status.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


@dataclass
class DockerEngine:
    """A Docker engine on the default socket, as handed out by :func:`ensure_dockerd`.

    ``started_by_us``: this process started the dockerd.  ``managed``: the test
    bed started it (this process or another one still using it); only then may
    :meth:`stop` end it, and only when no other bed user remains.
    ``ip_forward_before``: ``net.ipv4.ip_forward`` before the bed's dockerd
    started (for an engine the bed did not start: when it was found).
    """

    host: str
    version: str
    storage_driver: str
    managed: bool
    started_by_us: bool
    pid: int | None
    cache_dir: Path
    log_path: Path | None
    startup_seconds: float
    ip_forward_before: str
    _users_handle: IO[str] | None = field(default=None, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 30.0) -> bool:
        """Let go of the engine; stop the bed's dockerd if this was its last user.

        Returns True if a dockerd was stopped.  A dockerd the bed did not start
        is left alone.  Afterwards ``ip_forward`` is set back to 0 if it was 0
        before the bed started dockerd.
        """
        users = self._users_handle
        if users is None:
            return False
        self._users_handle = None
        if not self.managed:
            users.close()
            return False
        with _locked(self.cache_dir / "dockerd.lock"):
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                users.close()
                return False  # another bed user still needs the engine
            try:
                return _stop_recorded_dockerd(self.cache_dir, self._process, timeout)
            finally:
                self._process = None
                users.close()

    def detach(self) -> None:
        """Let go of the engine without stopping it, for a command that starts it and
        exits (`python -m tests.bed.parts engine up`): `release_bed_dockerd` stops it later."""
        users, self._users_handle, self._process = self._users_handle, None, None
        if users is not None:
            users.close()

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (serialises start/stop across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_path(cache_dir: Path) -> Path:
    return cache_dir / "dockerd-state.json"


def _read_state(cache_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads(_state_path(cache_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _restore_ip_forward(before: object) -> None:
    """Turn ip_forward back off if it was off before the bed's dockerd ran."""
    if before == "0" and read_ip_forward() != "0":
        IP_FORWARD.write_text("0\n")


def _stop_recorded_dockerd(
    cache_dir: Path, process: subprocess.Popen[bytes] | None, timeout: float
) -> bool:
    """Stop the dockerd recorded in the state file (caller holds the locks)."""
    state = _read_state(cache_dir)
    if state is None:
        return False
    pid = state.get("pid")
    stopped = False
    if isinstance(pid, int) and _pid_is_dockerd(pid):
        os.kill(pid, signal.SIGTERM)
        if process is not None and process.pid == pid:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        else:
            if not _wait_pid_gone(pid, timeout) and _pid_is_dockerd(pid):
                os.kill(pid, signal.SIGKILL)
                _wait_pid_gone(pid, timeout)
            # Reap it if another DockerEngine of this same process started it;
            # ChildProcessError means its parent is another process (or init).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        stopped = True
    elif process is not None and process.poll() is None:
        process.wait(timeout=timeout)
    _restore_ip_forward(state.get("ip_forward_before"))
    exec_root = state.get("exec_root")
    if isinstance(exec_root, str) and exec_root.startswith(tempfile.gettempdir()):
        shutil.rmtree(exec_root, ignore_errors=True)
    _state_path(cache_dir).unlink(missing_ok=True)
    return stopped


def _server_facts() -> tuple[str, str]:
    out = docker("info", "--format", "{{.ServerVersion}} {{.Driver}}", timeout=20).stdout.split()
    return out[0], (out[1] if len(out) > 1 else "")


def _start_dockerd(
    cache_dir: Path, storage_driver: str, ready_timeout: float
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start one dockerd with ``storage_driver``; return it once ``docker info`` answers."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise DockerEngineError("dockerd not found: install the Debian package docker.io")
    data_root = cache_dir / "docker-data"
    data_root.mkdir(parents=True, exist_ok=True)
    exec_root = Path(tempfile.mkdtemp(prefix="orchestrate-bed-dockerd-"))
    log_path = cache_dir / "dockerd.log"
    if log_path.exists() and log_path.stat().st_size > 8 * 1024 * 1024:
        log_path.replace(log_path.with_name("dockerd.log.old"))  # keep the cache bounded
    argv = [
        dockerd,
        "--data-root", str(data_root),
        "--exec-root", str(exec_root),
        "--pidfile", str(exec_root / "dockerd.pid"),
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--storage-driver", storage_driver,
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--host", DOCKER_HOST,
    ]  # fmt: skip
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.ctime()} starting: {' '.join(argv)}\n".encode())
        log.flush()
        # Own session: a Ctrl-C in the terminal of the pytest that started it
        # must not kill an engine other bed users may still be using.
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + ready_timeout
    while not engine_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            shutil.rmtree(exec_root, ignore_errors=True)
            tail = log_path.read_text(errors="replace")[-4000:]
            raise DockerEngineError(
                f"dockerd ({storage_driver}) did not answer within {ready_timeout:.0f} s "
                f"(exit status {process.returncode}); end of {log_path}:\n{tail}"
            )
        time.sleep(0.1)
    return process, exec_root, log_path


def release_bed_dockerd(cache_dir: Path, timeout: float = 30.0) -> dict[str, object]:
    """Stop the dockerd the bed started (recorded in `cache_dir`) when no bed user holds
    it any more; a dockerd the bed did not start, or one in use, is left running."""
    state = _read_state(cache_dir)
    pid = state.get("pid") if state else None
    if not (isinstance(pid, int) and _pid_is_dockerd(pid)):
        return {"stopped": False, "why": "no dockerd started by the bed runs"}
    with _locked(cache_dir / "dockerd.lock"), (cache_dir / "dockerd.users").open("a") as users:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"stopped": False, "why": "another bed user still holds it", "pid": pid}
        return {"stopped": _stop_recorded_dockerd(cache_dir, None, timeout), "pid": pid}


def ensure_dockerd(cache_dir: Path, *, ready_timeout: float = 60.0) -> DockerEngine:
    """Return a Docker engine answering on ``/var/run/docker.sock``, starting one if needed.

    If an engine already answers it is used as is (and not stopped later unless
    the bed itself started it, see the module docstring).  Otherwise dockerd is
    started as root with the flags above, overlay2 first and vfs as fallback.
    Call :meth:`DockerEngine.stop` when done.  Needs root.
    """
    if os.geteuid() != 0:
        raise DockerEngineError("ensure_dockerd needs root to start dockerd")
    cache_dir.mkdir(parents=True, exist_ok=True)
    users = (cache_dir / "dockerd.users").open("a")
    try:
        with _locked(cache_dir / "dockerd.lock"):
            fcntl.flock(users, fcntl.LOCK_SH)
            began = time.monotonic()
            state = _read_state(cache_dir)
            recorded_pid = state.get("pid") if state else None
            if engine_answers():
                managed = isinstance(recorded_pid, int) and _pid_is_dockerd(recorded_pid)
                if not managed:
                    _state_path(cache_dir).unlink(missing_ok=True)
                version, driver = _server_facts()
                return DockerEngine(
                    host=DOCKER_HOST,
                    version=version,
                    storage_driver=driver,
                    managed=managed,
                    started_by_us=False,
                    pid=recorded_pid if managed and isinstance(recorded_pid, int) else None,
                    cache_dir=cache_dir,
                    log_path=cache_dir / "dockerd.log" if managed else None,
                    startup_seconds=0.0,
                    ip_forward_before=str(state.get("ip_forward_before", "0"))
                    if managed and state
                    else read_ip_forward(),
                    _users_handle=users,
                )
            if state is not None:
                # The bed's previous dockerd died without cleaning up after itself.
                _stop_recorded_dockerd(cache_dir, None, timeout=30)
            ip_forward_before = read_ip_forward()
            errors: list[str] = []
            for driver in STORAGE_DRIVERS:
                try:
                    process, exec_root, log_path = _start_dockerd(cache_dir, driver, ready_timeout)
                except DockerEngineError as exc:
                    errors.append(str(exc))
                    continue
                _state_path(cache_dir).write_text(
                    json.dumps(
                        {
                            "pid": process.pid,
                            "exec_root": str(exec_root),
                            "ip_forward_before": ip_forward_before,
                            "storage_driver": driver,
                            "started_by_pid": os.getpid(),
                        }
                    )
                )
                # --ip-forward=false should leave it alone; make sure anyway.
                _restore_ip_forward(ip_forward_before)
                version, actual_driver = _server_facts()
                return DockerEngine(
                    host=DOCKER_HOST,
                    version=version,
                    storage_driver=actual_driver,
                    managed=True,
                    started_by_us=True,
                    pid=process.pid,
                    cache_dir=cache_dir,
                    log_path=log_path,
                    startup_seconds=time.monotonic() - began,
                    ip_forward_before=ip_forward_before,
                    _users_handle=users,
                    _process=process,
                )
            raise DockerEngineError("could not start dockerd:\n" + "\n\n".join(errors))
    except BaseException:
        users.close()
        raise
