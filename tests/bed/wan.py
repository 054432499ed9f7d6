"""A real wide-area link between two network namespaces, for benchmarks and tests.

The product tunnels a local port to a cloud VM over SSH; on loopback every round
trip is free, which hides exactly the costs users pay (channel opens, window
sizes, keepalives).  :func:`wan_link` builds two namespaces joined by a veth
pair and adds real latency with the kernel's NFQUEUE and a small delaying reader
(``delayq.py``), because this kernel has no ``tc netem``.

Network rule (DESIGN.md section 7): traffic only goes to loopback or to
namespaces the tests make.  So: both ends live in namespaces made here, their
addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range, never routed),
neither namespace gets a default route, and nothing touches ``ip_forward``.
The veth is created directly inside the namespaces, so it never exists in ours.

Use as a context manager::

    with wan_link(delay_ms=50) as link:
        subprocess.run(link.exec_far(["python3", "server.py", link.far_addr]))
        sock = link.near_socket()           # a socket of *this* process, on the near side
        sock.connect((link.far_addr, port))

:meth:`WanLink.near_socket` is how an in-process client (paramiko, the tunnel)
talks over the link: a socket belongs to the namespace it was created in, so the
calling thread briefly enters the near namespace to create it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

DELAYQ_SCRIPT = Path(__file__).with_name("delayq.py")
# RFC 2544 benchmarking range: addresses that never leave a test network.
BENCH_NET = ipaddress.IPv4Network("198.18.0.0/15")
# The links take their /30s from the lower half; the multi-node bed (tests/bed/nodes.py)
# has the upper half, so a link and a node bed never share a subnet.
WAN_NET = ipaddress.IPv4Network("198.18.0.0/16")
# Inside each namespace the veth end has this name; the namespaces keep them apart.
VETH_NAME = "wan0"
# A 64 KiB MTU means one NFQUEUE round per ~64 KiB instead of per 1.5 KiB:
# without NFQA_CFG_F_GSO (NetfilterQueue cannot set it) the kernel splits GSO
# packets into MTU-sized segments before queueing them.
DEFAULT_MTU = 65535
# Upper bound for TCP socket buffers inside the namespaces (net.ipv4.tcp_rmem /
# tcp_wmem are per namespace).  Debian's 4 MiB wmem default caps a 50 ms path
# near 50 MB/s whatever the tunnel does.
DEFAULT_TCP_MEM_MAX = 64 * 1024 * 1024
# NFQUEUE numbers are per namespace; one is enough.
QUEUE_NUM = 7


class WanLinkError(RuntimeError):
    """The link could not be built, or part of it died."""


def _run(argv: Sequence[str], *, timeout: float = 30) -> str:
    """Run a setup command; raise with its full output on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise WanLinkError(
            f"{' '.join(argv)} failed with exit status {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def _read_ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def netns_exists(name: str) -> bool:
    """Whether ``ip netns`` still knows ``name`` (its bind mount under /run/netns)."""
    return Path("/run/netns", name).exists()


# --- entering a namespace from this process -------------------------------

_CLONE_NEWNET = 0x40000000
_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with *the calling thread* inside network namespace ``name``.

    The network namespace is per thread, so other threads are unaffected, and
    sockets keep the namespace they were created in after we switch back.  Keep
    the body tiny (create sockets, nothing that may start threads).
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target, _CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, _CLONE_NEWNET)
    finally:
        os.close(own)


def socket_in_netns(
    name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
) -> socket.socket:
    """A socket of this process that lives in network namespace ``name``."""
    with in_netns(name):
        return socket.socket(family, type)


# --- the link ---------------------------------------------------------------


@dataclass
class WanLink:
    """Two namespaces and a veth between them, with ``delay_ms`` of round trip.

    ``close()`` stops only the reader processes this object started and deletes
    only the namespaces it created (the veth goes with them).  It is idempotent
    and safe on a half-built link.
    """

    near_ns: str
    far_ns: str
    near_addr: str
    far_addr: str
    delay_ms: int
    mtu: int = DEFAULT_MTU
    prefixlen: int = 30
    workdir: Path | None = None
    _namespaces: list[str] = field(default_factory=list, repr=False)
    _readers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _logs: dict[str, str] = field(default_factory=dict, repr=False)
    _closed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- helpers for callers ---------------------------------------------
    def exec_near(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed to run in the near namespace (for subprocess)."""
        return ["ip", "netns", "exec", self.near_ns, *cmd]

    def exec_far(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed to run in the far namespace (for subprocess)."""
        return ["ip", "netns", "exec", self.far_ns, *cmd]

    def near_socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket of this process on the near side; connect it to ``far_addr``."""
        return socket_in_netns(self.near_ns, family, type)

    def far_socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket of this process on the far side (e.g. a listener for a test server)."""
        return socket_in_netns(self.far_ns, family, type)

    def connect_near(self, port: int, *, timeout: float = 10.0) -> socket.socket:
        """Connect from the near side to ``far_addr:port`` with TCP_NODELAY set.

        TCP_NODELAY because paramiko does not set it and Nagle costs a round trip
        per small write; on this link that is ``delay_ms`` each time.
        """
        sock = self.near_socket()
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect((self.far_addr, port))
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def reader_pids(self) -> dict[str, int]:
        """PID of each namespace's delaying reader (empty at ``delay_ms=0``)."""
        return {ns: proc.pid for ns, proc in self._readers.items()}

    def reader_cpu_seconds(self) -> dict[str, float]:
        """User+system CPU seconds each reader has used so far (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for ns, proc in self._readers.items():
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            out[ns] = (int(fields[11]) + int(fields[12])) / tick
        return out

    def check(self) -> None:
        """Raise if a reader died: the link would then silently drop everything."""
        for ns, proc in self._readers.items():
            if proc.poll() is not None:
                raise WanLinkError(
                    f"delay reader in {ns} exited with status {proc.returncode}:\n"
                    f"{self.reader_log(ns)}"
                )

    def reader_log(self, ns: str) -> str:
        """The reader's stderr so far (its counters land there when it stops)."""
        if ns in self._logs:
            return self._logs[ns]
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / f"delayq-{ns}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- teardown ----------------------------------------------------------
    def close(self) -> None:
        """Stop our readers, then delete our namespaces; report what failed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        errors: list[str] = []
        for ns, proc in list(self._readers.items()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        errors.append(f"delay reader {proc.pid} in {ns} did not die")
            if proc.stdout is not None:
                proc.stdout.close()
        for ns in reversed(self._namespaces):
            if not netns_exists(ns):
                continue
            proc2 = subprocess.run(
                ["ip", "netns", "delete", ns],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc2.returncode != 0 or netns_exists(ns):
                errors.append(f"ip netns delete {ns}: {proc2.stderr.strip()}")
        # Keep the readers' logs (counters, errors) readable after close, and
        # leave nothing behind in /tmp.
        for ns in self._readers:
            self._logs[ns] = self.reader_log(ns)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise WanLinkError("WAN link teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> WanLink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _start_reader(link: WanLink, ns: str, one_way_ms: float, timeout: float) -> None:
    """Start delayq.py inside ``ns`` and wait for its ``ready`` line."""
    assert link.workdir is not None
    log = (link.workdir / f"delayq-{ns}.log").open("wb")
    try:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                str(DELAYQ_SCRIPT),
                "--queue",
                str(QUEUE_NUM),
                "--delay-ms",
                str(one_way_ms),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    finally:
        log.close()
    # Registered before waiting, so close() stops it whatever happens next.
    link._readers[ns] = proc
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise WanLinkError(
                f"delay reader in {ns} not ready in {timeout} s:\n{link.reader_log(ns)}"
            )
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 64)
            if not chunk:
                proc.wait(timeout=5)
                raise WanLinkError(
                    f"delay reader in {ns} exited with status {proc.returncode}:\n"
                    f"{link.reader_log(ns)}"
                )
            line += chunk
    if line.strip() != b"ready":
        raise WanLinkError(f"delay reader in {ns} said {line!r}, not 'ready'")


def wan_link(
    delay_ms: int = 50,
    name_prefix: str = "orch",
    *,
    mtu: int = DEFAULT_MTU,
    tcp_mem_max: int = DEFAULT_TCP_MEM_MAX,
    ready_timeout: float = 15.0,
) -> WanLink:
    """Build a link with ``delay_ms`` of round trip (half each way) and return it.

    ``delay_ms=0`` builds the same link without queue rules or readers: the
    baseline for benchmarks.  On any failure, whatever was built is torn down
    before the error propagates.  Needs root.
    """
    if delay_ms < 0:
        raise ValueError("delay_ms must be >= 0")
    if os.geteuid() != 0:
        raise WanLinkError("wan_link needs root (ip netns, iptables, NFQUEUE)")
    forward_before = _read_ip_forward()
    tag = secrets.token_hex(3)
    # /30 blocks of 198.18.0.0/16, picked by the random tag: concurrent links
    # never share namespaces anyway, distinct addresses just keep logs readable.
    block = int(tag, 16) % (WAN_NET.num_addresses // 4)
    base = WAN_NET.network_address + block * 4
    link = WanLink(
        near_ns=f"{name_prefix}-near-{tag}",
        far_ns=f"{name_prefix}-far-{tag}",
        near_addr=str(base + 1),
        far_addr=str(base + 2),
        delay_ms=delay_ms,
        mtu=mtu,
        workdir=Path(tempfile.mkdtemp(prefix=f"wan-{tag}-")),
    )
    try:
        for ns in (link.near_ns, link.far_ns):
            _run(["ip", "netns", "add", ns])
            link._namespaces.append(ns)
        # Created inside near with its peer moved straight to far: no moment
        # in which a veth (or its name) exists in our own namespace.
        _run(
            [
                "ip",
                "-n",
                link.near_ns,
                "link",
                "add",
                VETH_NAME,
                "mtu",
                str(mtu),
                "type",
                "veth",
                "peer",
                "name",
                VETH_NAME,
                "mtu",
                str(mtu),
                "netns",
                link.far_ns,
            ]
        )
        tcp_max = str(tcp_mem_max)
        for ns, addr in ((link.near_ns, link.near_addr), (link.far_ns, link.far_addr)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/{link.prefixlen}", "dev", VETH_NAME])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", VETH_NAME, "up"])
            # Per-namespace sysctls only.  IPv6 off keeps the wire quiet
            # (no router solicitations, no DAD) so counters mean our traffic.
            _run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-q",
                    "-w",
                    f"net.ipv4.tcp_rmem=4096 131072 {tcp_max}",
                    f"net.ipv4.tcp_wmem=4096 16384 {tcp_max}",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]
            )
        if delay_ms > 0:
            one_way = delay_ms / 2
            pairs = ((link.near_ns, link.far_addr), (link.far_ns, link.near_addr))
            # Readers first: the rule has no --queue-bypass, so a packet queued
            # with nobody bound would be dropped.
            for ns, _peer in pairs:
                _start_reader(link, ns, one_way, ready_timeout)
            for ns, peer in pairs:
                _run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "iptables",
                        "-w",
                        "-A",
                        "INPUT",
                        "-i",
                        VETH_NAME,
                        "-s",
                        peer,
                        "-j",
                        "NFQUEUE",
                        "--queue-num",
                        str(QUEUE_NUM),
                    ]
                )
        if _read_ip_forward() != forward_before:
            raise WanLinkError("ip_forward changed while building the link")
    except BaseException:
        with contextlib.suppress(Exception):
            link.close()
        raise
    return link


# --- probes: measurements over the link, used by the proof tests ------------

_PROBE = r"""
import json, socket, sys, time
role, addr, mode, arg = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
port = int(sys.argv[5]) if len(sys.argv) > 5 else 0
deadline = time.monotonic() + 120
if role == "server":
    srv = socket.socket()
    srv.bind((addr, 0)); srv.listen(1); srv.settimeout(30)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept(); conn.settimeout(60)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "pingpong":
        while time.monotonic() < deadline:
            b = conn.recv(1)
            if not b:
                break
            conn.sendall(b)
    else:
        chunk = memoryview(bytes(1 << 20)); left = arg
        while left > 0 and time.monotonic() < deadline:
            n = conn.send(chunk[: min(left, len(chunk))]); left -= n
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    conn.close()
else:
    s = socket.socket(); s.settimeout(60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic(); s.connect((addr, port)); t1 = time.monotonic()
    out = {"connect_s": t1 - t0}
    if mode == "pingpong":
        rtts = []
        for _ in range(arg):
            a = time.monotonic(); s.sendall(b"x")
            if s.recv(1) != b"x":
                raise SystemExit("short read")
            rtts.append(time.monotonic() - a)
        out["rtts_s"] = rtts
    else:
        buf = bytearray(1 << 20); got = 0
        while time.monotonic() < deadline:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        t2 = time.monotonic()
        out.update(bytes=got, seconds=t2 - t1)
    s.close()
    print(json.dumps(out), flush=True)
"""


def _probe(link: WanLink, mode: str, arg: int, timeout: float) -> dict[str, object]:
    """Run a tiny TCP server in far and a client in near; return the client's JSON."""
    server = subprocess.Popen(
        link.exec_far([sys.executable, "-c", _PROBE, "server", link.far_addr, mode, str(arg)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 15)
        port_line = server.stdout.readline() if ready else ""
        if not port_line.strip().isdigit():
            server.kill()
            raise WanLinkError(
                f"probe server did not start: {port_line!r} {server.communicate(timeout=5)[1]}"
            )
        client = subprocess.run(
            link.exec_near(
                [
                    sys.executable,
                    "-c",
                    _PROBE,
                    "client",
                    link.far_addr,
                    mode,
                    str(arg),
                    port_line.strip(),
                ]
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if client.returncode != 0:
            raise WanLinkError(f"probe client failed: {client.stderr}")
        result: dict[str, object] = json.loads(client.stdout)
        server.wait(timeout=15)
        return result
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def measure_round_trip(link: WanLink, rounds: int = 20, timeout: float = 60) -> dict[str, object]:
    """TCP connect time and ``rounds`` one-byte ping-pongs, near -> far -> near."""
    return _probe(link, "pingpong", rounds, timeout)


def measure_bulk(link: WanLink, nbytes: int, timeout: float = 120) -> dict[str, object]:
    """Send ``nbytes`` far -> near over one TCP connection; bytes and seconds received."""
    return _probe(link, "bulk", nbytes, timeout)
