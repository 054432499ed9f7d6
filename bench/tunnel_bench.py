"""Tunnel benchmark: orchestrate's paramiko forwarder against OpenSSH ``ssh -N -L``.

The speed goals are ratios measured in the same run, never absolute times (a test suite
with timing thresholds is a flaky test suite; this is a benchmark):

* loopback: throughput (200 MB down, 200 MB up) and new-connection speed at least 0.8x
  OpenSSH;
* 50 ms round trip (two network namespaces, tests/bed/wan.py): downloads at least 2x
  OpenSSH, new connections within 5 % of OpenSSH.

Every part runs in its own process, like in real use: the bulk server ("Jupyter") next to
sshd on the far side, each tunnel (ours and ``ssh -N -L``) and the measuring client on the
near side. Our tunnel must not share a GIL with the client that measures it, since
``ssh -L`` does not either. Each tunnel gets its start-up done before it is timed (ours:
`Tunnel.warm`; OpenSSH: its port answers). Throughput is the best of the repetitions (a
shared machine only ever slows a run down), latency the median of every connection. The
full run also measures our tunnel "untuned" (paramiko's 2 MiB window and 32 KiB packets,
none of the tunnel's extras), the "before" to the defaults' "after".

    python bench/tunnel_bench.py             # full run, writes bench/results/tunnel.json
    python bench/tunnel_bench.py --quick     # small sizes: a breakage check for CI
    python bench/tunnel_bench.py --sweep     # + window x packet size sweep (our tunnel)
    python bench/tunnel_bench.py --pumps     # + threads vs select pump
    python bench/tunnel_bench.py --no-wan    # loopback only

Needs root (sshd, a login user, network namespaces). Starts and stops only its own
processes, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "tunnel.json"
MB = 1_000_000
MiB = 1024 * 1024
KiB = 1024

# --------------------------------------------------------------------------------------
# Roles run as child processes: "server" (far side), "ours" (our tunnel), "client".
# --------------------------------------------------------------------------------------

_PAYLOAD = os.urandom(MiB)  # incompressible; the same bytes are sent over and over


def _serve_one(conn: socket.socket) -> None:
    """The bulk server's protocol: one command line, then bytes.

    ``GET n`` sends n bytes then closes; ``PUT n`` reads n bytes then answers ``OK``;
    ``PING`` answers ``PONG`` (the new-connection latency probe: a tiny request/answer).
    """
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\n" not in head and len(head) < 100:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        line, _, extra = head.partition(b"\n")
        cmd, _, arg = line.decode().strip().partition(" ")
        if cmd == "PING":
            conn.sendall(b"PONG\n")
            conn.recv(1)  # wait for the client's close
        elif cmd == "GET":
            left = int(arg)
            view = memoryview(_PAYLOAD)
            while left > 0:
                n = min(left, len(view))
                conn.sendall(view[:n])
                left -= n
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
        elif cmd == "PUT":
            left = int(arg) - len(extra)  # payload that came with the command line
            buf = bytearray(4 * MiB)
            while left > 0:
                n = conn.recv_into(buf, min(left, len(buf)))
                if not n:
                    return
                left -= n
            conn.sendall(b"OK\n")
            conn.recv(1)


def role_server(listen: str) -> None:
    """Bulk/latency target server, printing ``ready PORT``; runs until stdin closes."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((listen, 0))
    srv.listen(256)
    print(f"ready {srv.getsockname()[1]}", flush=True)

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()  # the parent closes our stdin to stop us


def role_ours(args: argparse.Namespace) -> None:
    """Our tunnel, alone in its process like ``orchestrate tunnel``: prints ``ready PORT``."""
    import base64

    import paramiko
    from orchestrate.core.ssh.heap import cap_arenas
    from orchestrate.core.ssh.tunnel import TunnelTuning

    from bench.tunnel_variants import BenchTunnel

    cap_arenas()  # as the detached tunnel's process does first (core/flows/background.py)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    addr, port = args.ssh.rsplit(":", 1)
    sock = socket.create_connection((addr, int(port)), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=15)
    kind, blob = args.host_key.split()[:2]
    expected = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    if transport.get_remote_server_key() != expected:
        raise SystemExit("host key mismatch")
    transport.auth_publickey(args.user, paramiko.Ed25519Key.from_private_key_file(args.key))
    t_host, t_port = args.target.rsplit(":", 1)
    tuning = TunnelTuning(
        window_size=args.window,
        max_packet_size=args.packet,
        prewarm=False if args.no_prewarm else None,
        prefer_aead=not args.no_aead,
    )
    tunnel = BenchTunnel(
        transport,
        0,
        t_host,
        int(t_port),
        tuning=tuning,
        pump=args.pump,
        nudge_nodelay=not args.no_nudge,
        read_ahead=not args.no_read_ahead,
    ).start()
    tunnel.warm(30)  # like ssh -N -L, ready once its own set-up is done
    cipher = getattr(transport, "remote_cipher", "?")
    mac = getattr(transport, "remote_mac", "?")
    print(f"ready {tunnel.local_port} {cipher} {mac}", flush=True)
    sys.stdin.read()
    tunnel.close()
    transport.close()


def _recv_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data


#: Where the measuring client connects: the local tunnel port, or (raw TCP) the far server.
_CLIENT_HOST = ["127.0.0.1"]


def _client_connect(port: int) -> socket.socket:
    sock = socket.create_connection((_CLIENT_HOST[0], port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client_download(port: int, nbytes: int) -> float:
    """Seconds from connect to the last of ``nbytes`` received through the tunnel."""
    buf = bytearray(4 * MiB)
    t0 = time.perf_counter()
    with _client_connect(port) as sock:
        sock.sendall(f"GET {nbytes}\n".encode())
        got = 0
        while got < nbytes:
            n = sock.recv_into(buf)
            if not n:
                raise RuntimeError(f"download ended early at {got} of {nbytes} bytes")
            got += n
        dt = time.perf_counter() - t0
    return dt


def client_upload(port: int, nbytes: int) -> float:
    """Seconds from connect until the far server confirmed all ``nbytes`` arrived."""
    view = memoryview(_PAYLOAD)
    t0 = time.perf_counter()
    with _client_connect(port) as sock:
        sock.sendall(f"PUT {nbytes}\n".encode())
        left = nbytes
        while left > 0:
            n = min(left, len(view))
            sock.sendall(view[:n])
            left -= n
        if _recv_line(sock) != b"OK\n":
            raise RuntimeError("upload not confirmed")
        dt = time.perf_counter() - t0
    return dt


def client_latency(port: int, count: int) -> list[float]:
    """Seconds for each of ``count`` fresh connections: connect, PING, PONG, close."""
    out: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        with _client_connect(port) as sock:
            sock.sendall(b"PING\n")
            if _recv_line(sock) != b"PONG\n":
                raise RuntimeError("no PONG through the tunnel")
            out.append(time.perf_counter() - t0)
    return out


def role_client(args: argparse.Namespace) -> None:
    """Run one measurement against a local tunnel port and print it as JSON."""
    result: dict[str, Any] = {}
    _CLIENT_HOST[0] = args.host
    if args.down:
        result["down_s"] = client_download(args.port, args.down)
    if args.up:
        result["up_s"] = client_upload(args.port, args.up)
    if args.lat:
        client_latency(args.port, 2)  # warm-up: first connections pay one-off costs
        result["lat_s"] = client_latency(args.port, args.lat)
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------
# The orchestrating side.
# --------------------------------------------------------------------------------------


@dataclass
class Bed:
    """Where things run: prefixes for the near and far side, and the far sshd/server."""

    name: str
    near: Callable[[Sequence[str]], list[str]]
    far: Callable[[Sequence[str]], list[str]]
    ssh_addr: str
    ssh_port: int
    user: str
    key: Path
    host_key: str
    known_hosts: Path
    target: str  # far server address:port as sshd sees it
    raw: tuple[str, int] | None = None  # the far server on the link's address: raw TCP
    procs: list[subprocess.Popen[str]] = field(default_factory=list)


def _start_ready(argv: list[str], *, timeout: float = 30) -> tuple[subprocess.Popen[str], str]:
    """Start a child that prints ``ready ...`` on stdout; return it and that line."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        _stop(proc)
        raise RuntimeError(f"{argv!r} did not become ready: {line!r}")
    return proc, line.strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop a child we started: close its stdin, then SIGTERM/SIGKILL by PID."""
    with contextlib.suppress(Exception):
        if proc.stdin is not None:
            proc.stdin.close()
    from orchestrate.core.flows.processes import end_child

    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)  # closing its stdin is the polite way to end a role
    end_child(proc, grace_s=5)


def _wait_port(bed: Bed, port: int, timeout: float = 20) -> None:
    """Wait until something accepts on the near side's 127.0.0.1:port."""
    probe = (
        "import socket,sys,time\n"
        "d=time.monotonic()+float(sys.argv[2])\n"
        "while True:\n"
        "  try: socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=1).close(); break\n"
        "  except OSError:\n"
        "    if time.monotonic()>d: sys.exit(1)\n"
        "    time.sleep(0.05)\n"
    )
    rc = subprocess.run(
        bed.near([sys.executable, "-c", probe, str(port), str(timeout)]), check=False
    ).returncode
    if rc != 0:
        raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def tunnel_ours(
    bed: Bed,
    *,
    window: int | None,
    packet: int,
    pump: str = "threads",
    prewarm: bool = True,
    nudge: bool = True,
    read_ahead: bool = True,
    aead: bool = True,
    pids: list[int] | None = None,
) -> Iterator[tuple[int, str]]:
    """Our tunnel in a near-side child process; yields (local port, cipher/mac). Its pid
    goes into ``pids`` when given (``ip netns exec`` execs, so it is the tunnel's own)."""
    argv = bed.near(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "ours",
            "--ssh",
            f"{bed.ssh_addr}:{bed.ssh_port}",
            "--user",
            bed.user,
            "--key",
            str(bed.key),
            "--host-key",
            bed.host_key,
            "--target",
            bed.target,
            *([] if window is None else ["--window", str(window)]),
            "--packet",
            str(packet),
            "--pump",
            pump,
            *([] if prewarm else ["--no-prewarm"]),
            *([] if nudge else ["--no-nudge"]),
            *([] if read_ahead else ["--no-read-ahead"]),
            *([] if aead else ["--no-aead"]),
        ]
    )
    proc, line = _start_ready(argv)
    if pids is not None:
        pids.append(proc.pid)
    try:
        _, port, cipher, mac = line.split()
        yield int(port), f"{cipher} {mac}"
    finally:
        _stop(proc)


@contextlib.contextmanager
def tunnel_openssh(bed: Bed, pids: list[int] | None = None) -> Iterator[tuple[int, str]]:
    """``ssh -N -L`` with default ciphers, in a near-side child; yields (port, "default")."""
    port = _free_near_port(bed)
    argv = bed.near(
        [
            "ssh",
            "-N",
            "-F",
            "/dev/null",
            "-L",
            f"127.0.0.1:{port}:{bed.target}",
            "-i",
            str(bed.key),
            "-p",
            str(bed.ssh_port),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={bed.known_hosts}",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "IdentitiesOnly=yes",
            f"{bed.user}@{bed.ssh_addr}",
        ]
    )
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if pids is not None:
        pids.append(proc.pid)
    try:
        _wait_port(bed, port)
        yield port, "openssh-default"
    finally:
        from orchestrate.core.flows.processes import end_child

        end_child(proc, grace_s=5)


def _free_near_port(bed: Bed) -> int:
    code = "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"
    out = subprocess.run(
        bed.near([sys.executable, "-c", code]), capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def run_client(
    bed: Bed, port: int, *, down: int = 0, up: int = 0, lat: int = 0, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """One measuring client process on the near side; returns its JSON."""
    argv = bed.near(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "client",
            "--port",
            str(port),
            "--down",
            str(down),
            "--up",
            str(up),
            "--lat",
            str(lat),
            "--host",
            host,
        ]
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass
class Figures:
    """The three figures for one tunnel kind: MB/s down, MB/s up, median ms per connection."""

    down_mbs: list[float] = field(default_factory=list)
    up_mbs: list[float] = field(default_factory=list)
    lat_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        # Best of the repetitions for throughput (noise on a shared machine only ever slows a
        # run down); median of all connections for latency.
        return {
            "down_MBps": max(self.down_mbs) if self.down_mbs else 0.0,
            "up_MBps": max(self.up_mbs) if self.up_mbs else 0.0,
            "new_conn_ms": statistics.median(self.lat_ms) if self.lat_ms else 0.0,
        }


#: paramiko's own defaults and none of the tunnel's extras: the "before tuning" figures.
UNTUNED = {
    "window": 2 * MiB,
    "packet": 32 * KiB,
    "prewarm": False,
    "nudge": False,
    "read_ahead": False,
    "aead": False,
}


def measure_pair(
    bed: Bed,
    *,
    size: int,
    lat_count: int,
    reps: int,
    window: int | None,
    packet: int,
    untuned: bool = False,
) -> dict[str, Any]:
    """ours vs OpenSSH (and, with ``untuned``, ours before tuning), rotating the order each
    repetition so drift on a shared machine hits every kind alike."""
    kinds = ["ours", "openssh"] + (["untuned"] if untuned else [])
    figs = {kind: Figures() for kind in kinds}
    info: dict[str, str] = {}
    for rep in range(reps):
        order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
        for kind in order:
            if kind == "openssh":
                ctx = tunnel_openssh(bed)
            elif kind == "untuned":
                ctx = tunnel_ours(bed, **UNTUNED)  # type: ignore[arg-type]
            else:
                ctx = tunnel_ours(bed, window=window, packet=packet)
            with ctx as (port, crypto):
                info[kind] = crypto
                time.sleep(0.3)  # let a tunnel finish its start-up work before timing it
                r = run_client(bed, port, down=size)
                figs[kind].down_mbs.append(size / r["down_s"] / MB)
                r = run_client(bed, port, up=size)
                figs[kind].up_mbs.append(size / r["up_s"] / MB)
                r = run_client(bed, port, lat=lat_count)
                figs[kind].lat_ms.extend(x * 1000 for x in r["lat_s"])
            print(f"  [{bed.name}] rep {rep + 1}/{reps} {kind}: {figs[kind].summary()}", flush=True)
    return {
        **{kind: fig.summary() for kind, fig in figs.items()},
        "raw": {k: vars(v) for k, v in figs.items()},
        "crypto": info,
        "size_bytes": size,
        "window": window,
        "packet": packet,
    }


def sweep(
    bed: Bed, *, size: int, windows: Sequence[int], packets: Sequence[int], reps: int
) -> list[dict[str, Any]]:
    """Download MB/s for each window x max-packet pair (our tunnel only)."""
    rows: list[dict[str, Any]] = []
    for window in windows:
        for packet in packets:
            best = 0.0
            for _ in range(reps):
                with tunnel_ours(bed, window=window, packet=packet) as (port, _):
                    r = run_client(bed, port, down=size)
                best = max(best, size / r["down_s"] / MB)
            rows.append({"window": window, "packet": packet, "down_MBps": round(best, 1)})
            print(
                f"  [{bed.name}] window {window // MiB} MiB packet {packet // KiB} KiB: "
                f"{best:.1f} MB/s down",
                flush=True,
            )
    return rows


def pumps(
    bed: Bed, *, size: int, window: int | None, packet: int, reps: int
) -> list[dict[str, Any]]:
    """threads vs select pump, same window and packet: both directions and latency."""
    rows: list[dict[str, Any]] = []
    for pump in ("threads", "select"):
        fig = Figures()
        for _ in range(reps):
            with tunnel_ours(bed, window=window, packet=packet, pump=pump) as (port, _):
                fig.down_mbs.append(size / run_client(bed, port, down=size)["down_s"] / MB)
                fig.up_mbs.append(size / run_client(bed, port, up=size)["up_s"] / MB)
                fig.lat_ms.extend(x * 1000 for x in run_client(bed, port, lat=30)["lat_s"])
        rows.append({"pump": pump, **{k: round(v, 2) for k, v in fig.summary().items()}})
        print(f"  [{bed.name}] pump {pump}: {rows[-1]}", flush=True)
    return rows


def raw_tcp(bed: Bed, *, size: int, reps: int) -> dict[str, float]:
    """Plain TCP across the same link, same client and server: best MB/s each way."""
    assert bed.raw is not None
    host, port = bed.raw
    downs = [run_client(bed, port, down=size, host=host)["down_s"] for _ in range(reps)]
    ups = [run_client(bed, port, up=size, host=host)["up_s"] for _ in range(reps)]
    down, up = size / min(downs) / MB, size / min(ups) / MB
    print(f"  [{bed.name}] raw TCP: {down:.1f} MB/s down, {up:.1f} MB/s up", flush=True)
    return {"down_MBps": down, "up_MBps": up}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def footprint(
    bed: Bed, *, size: int, conns: int, window: int | None, packet: int
) -> dict[str, Any]:
    """Our tunnel process's CPU seconds per GB downloaded and its memory: at rest, then
    after ``size`` bytes through it and ``conns`` short connections (leaks show as growth).
    OpenSSH's ``ssh -N -L`` moves the same bytes as the baseline."""
    out: dict[str, Any] = {}
    chunk = min(size, 500 * MB)
    for kind in ("ours", "openssh"):
        pids: list[int] = []
        if kind == "ours":
            ctx = tunnel_ours(bed, window=window, packet=packet, pids=pids)
        else:
            ctx = tunnel_openssh(bed, pids=pids)
        with ctx as (port, _):
            time.sleep(0.5)
            pid = pids[0]
            rest = _rss_mb(pid)
            cpu0, moved = _cpu_s(pid), 0
            while moved < size:
                run_client(bed, port, down=chunk)
                moved += chunk
            cpu = _cpu_s(pid) - cpu0
            run_client(bed, port, lat=conns)
            time.sleep(1.0)  # quiet: our tunnel gives free heap back within a second of it
            after = _rss_mb(pid)
        out[kind] = {
            "rss_rest_MB": rest,
            "rss_after_MB": after,
            "growth_MB": after - rest,
            "cpu_s_per_GB": cpu / (moved / 1e9),
            "bytes": moved,
            "connections": conns,
        }
        print(f"  [{bed.name}] footprint {kind}: {out[kind]}", flush=True)
    return out


# -- beds --------------------------------------------------------------------------------


@contextlib.contextmanager
def make_bed(name: str, delay_ms: int | None) -> Iterator[Bed]:
    """sshd + bulk server; on loopback (delay_ms None) or across a wan_link."""
    from tests.bed.sshd import ensure_login_user, generate_client_key, start_sshd

    user = ensure_login_user()
    work = Path(tempfile.mkdtemp(prefix="tunnel-bench-"))
    work.chmod(0o755)  # sshd reads authorized_keys as the login user
    stack = contextlib.ExitStack()
    try:
        key, pub = generate_client_key(work)
        near: Callable[[Sequence[str]], list[str]]
        far: Callable[[Sequence[str]], list[str]]
        if delay_ms is None:
            near = far = list
            listen = "127.0.0.1"
            netns = None
        else:
            from tests.bed.wan import wan_link

            link = stack.enter_context(wan_link(delay_ms=delay_ms, name_prefix="tb"))
            near, far = link.exec_near, link.exec_far
            listen = link.far_addr
            netns = link.far_ns
        sshd = stack.enter_context(
            start_sshd(work / "sshd", user=user, authorized_key=pub, listen=listen, netns=netns)
        )
        known = work / "known_hosts"
        host = listen if sshd.port == 22 else f"[{listen}]:{sshd.port}"
        known.write_text(f"{host} {sshd.host_key_pub}\n")
        server, line = _start_ready(
            far(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--role",
                    "server",
                    "--listen",
                    "127.0.0.1",
                ]
            )
        )
        stack.callback(_stop, server)
        raw = None
        if delay_ms is not None:
            # The same server on the far end's link address: the near client then reads it
            # over plain TCP across the same link, the ceiling a tunnel is measured against.
            script = [sys.executable, str(Path(__file__).resolve()), "--role", "server"]
            raw_server, raw_line = _start_ready(far([*script, "--listen", listen]))
            stack.callback(_stop, raw_server)
            raw = (listen, int(raw_line.split()[1]))
        bed = Bed(
            name=name,
            near=near,
            far=far,
            ssh_addr=listen,
            ssh_port=sshd.port,
            user=user,
            key=key,
            host_key=sshd.host_key_pub,
            known_hosts=known,
            target=f"127.0.0.1:{line.split()[1]}",
            raw=raw,
        )
        yield bed
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


# -- report ------------------------------------------------------------------------------


def _rows(name: str, pair: dict[str, Any], wan: bool) -> list[dict[str, Any]]:
    """Table rows: figure, ours, OpenSSH, ratio (higher is better for us), goal, met, and
    ours before tuning when it was measured."""
    ours, base, untuned = pair["ours"], pair["openssh"], pair.get("untuned")
    rows = []
    for key, label, higher_better in (
        ("down_MBps", "download MB/s", True),
        ("up_MBps", "upload MB/s", True),
        ("new_conn_ms", "new connection ms", False),
    ):
        o, b = ours[key], base[key]
        ratio = (o / b if higher_better else b / o) if o and b else 0.0
        if not wan:
            goal, met = ">= 0.80x", ratio >= 0.8
        elif key == "down_MBps":
            goal, met = ">= 2.00x", ratio >= 2.0
        elif key == "new_conn_ms":
            goal, met = "within 5%", o <= b * 1.05
        else:
            goal, met = "(none)", None
        rows.append(
            {
                "link": name,
                "figure": label,
                "ours": round(o, 2),
                "openssh": round(b, 2),
                "ratio": round(ratio, 3),
                "goal": goal,
                "met": met,
                "untuned": round(untuned[key], 2) if untuned else None,
            }
        )
    return rows


def _raw_row(name: str, ours: dict[str, float], raw: dict[str, float]) -> dict[str, Any]:
    """The tunnel's download against plain TCP over the same link, measured in the same run."""
    ratio = ours["down_MBps"] / raw["down_MBps"] if raw["down_MBps"] else 0.0
    return {
        "link": name,
        "figure": "download vs raw TCP MB/s",
        "ours": round(ours["down_MBps"], 2),
        "openssh": round(raw["down_MBps"], 2),
        "baseline": "raw TCP",
        "ratio": round(ratio, 3),
        "goal": ">= 0.50x",
        "met": ratio >= 0.5,
        "untuned": None,
    }


def _footprint_rows(name: str, fp: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Memory at rest, its growth after the bulk and the short connections, CPU per GB."""
    ours, ssh = fp["ours"], fp["openssh"]
    moved = f"after {ours['bytes'] // MB} MB + {ours['connections']} conns"
    rows = []
    for key, label, goal, limit in (
        ("rss_rest_MB", "RSS at rest MB", "<= 50 MB", 50.0),
        ("growth_MB", "RSS growth MB", f"<= 5 MB {moved}", 5.0),
        ("cpu_s_per_GB", "CPU s/GB", "(none)", None),
    ):
        o, b = ours[key], ssh[key]
        rows.append(
            {
                "link": name,
                "figure": label,
                "ours": round(o, 2),
                "openssh": round(b, 2),
                "ratio": round(b / o, 3) if o > 0 and b > 0 else 0.0,
                "goal": goal,
                "met": None if limit is None or quick else o <= limit,
                "untuned": None,
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'link':<10} {'figure':<20} {'ours':>10} {'openssh':>10} {'ratio':>7}  {'goal':<10} "
        f"{'met':<4} {'untuned':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        untuned = "" if r["untuned"] is None else f"{r['untuned']:.2f}"
        print(
            f"{r['link']:<10} {r['figure']:<20} {r['ours']:>10.2f} {r['openssh']:>10.2f} "
            f"{r['ratio']:>6.2f}x  {r['goal']:<10} {met:<4} {untuned:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: breakage check")
    parser.add_argument("--no-wan", action="store_true", help="loopback only")
    parser.add_argument("--no-loopback", action="store_true", help="50 ms link only")
    parser.add_argument("--sweep", action="store_true", help="window x packet size sweep")
    parser.add_argument("--pumps", action="store_true", help="threads vs select pump")
    parser.add_argument("--delay-ms", type=int, default=50, help="round trip of the WAN link")
    parser.add_argument("--size-mb", type=int, default=None, help="bytes each way, in MB")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument(
        "--window", type=int, default=None, help="our channel window, bytes (default: by link)"
    )
    parser.add_argument("--packet", type=int, default=None, help="our max packet, bytes")
    parser.add_argument("--json", type=Path, default=RESULTS)
    # internal: child-process roles
    parser.add_argument("--role", choices=("server", "ours", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--listen", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--ssh", help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--host-key", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--pump", default="threads", help=argparse.SUPPRESS)
    parser.add_argument("--switch-interval", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--no-prewarm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-nudge", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-read-ahead", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-aead", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--down", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--up", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lat", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from orchestrate.core.ssh.tunnel import DEFAULT_MAX_PACKET_SIZE

    if args.packet is None:
        args.packet = DEFAULT_MAX_PACKET_SIZE
    if args.role == "server":
        role_server(args.listen)
        return 0
    if args.role == "ours":
        role_ours(args)
        return 0
    if args.role == "client":
        role_client(args)
        return 0

    if os.geteuid() != 0:
        print("tunnel_bench needs root (sshd, login user, network namespaces)", file=sys.stderr)
        return 2
    size = (args.size_mb or (5 if args.quick else 200)) * MB
    reps = args.reps or (1 if args.quick else 3)
    lat_count = 10 if args.quick else 40
    links: list[tuple[str, int | None]] = []
    if not args.no_loopback:
        links.append(("loopback", None))
    if not args.no_wan:
        links.append((f"{args.delay_ms}ms", args.delay_ms))

    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "size_bytes": size,
        "reps": reps,
        "cpus": os.cpu_count(),
        "window": args.window,
        "packet": args.packet,
        "links": {},
    }
    rows: list[dict[str, Any]] = []
    for name, delay in links:
        print(f"== {name}", flush=True)
        with make_bed(name, delay) as bed:
            entry: dict[str, Any] = {}
            if args.sweep:
                sweep_size = min(size, (20 if args.quick else 100) * MB)
                windows = [2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB, 64 * MiB]
                packets = [32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB - 1024]
                if delay is not None:
                    windows = [2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB]
                    packets = [32 * KiB, 256 * KiB - 1024]
                entry["sweep"] = sweep(
                    bed,
                    size=sweep_size,
                    windows=windows,
                    packets=packets,
                    reps=1 if args.quick else 2,
                )
            if args.pumps:
                entry["pumps"] = pumps(
                    bed,
                    size=min(size, 100 * MB),
                    window=args.window,
                    packet=args.packet,
                    reps=1 if args.quick else 2,
                )
            pair = measure_pair(
                bed,
                size=size,
                lat_count=lat_count,
                reps=reps,
                window=args.window,
                packet=args.packet,
                untuned=not args.quick,
            )
            entry["pair"] = pair
            entry["rows"] = _rows(name, pair, wan=delay is not None)
            if delay is not None:
                entry["raw_tcp"] = raw_tcp(bed, size=size, reps=reps)
                entry["rows"].append(_raw_row(name, pair["ours"], entry["raw_tcp"]))
            else:
                entry["footprint"] = footprint(
                    bed,
                    size=(50 if args.quick else 2000) * MB,
                    conns=50 if args.quick else 1000,
                    window=args.window,
                    packet=args.packet,
                )
                entry["rows"].extend(_footprint_rows(name, entry["footprint"], args.quick))
            rows.extend(entry["rows"])
            report["links"][name] = entry
    print()
    _print_table(rows)
    if args.quick:
        print("\n--quick: sizes far too small for the goals; this run only proves it all works")
    report["table"] = rows
    report["all_met"] = all(r["met"] is not False for r in rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
