"""pytest fixtures for the WAN link of the test bed (loaded via ``pytest_plugins``).

- ``wan_link``: one link per session and delay.  Default 50 ms round trip (the
  benchmark figure in DESIGN.md); another delay through indirect
  parametrization: ``@pytest.mark.parametrize("wan_link", [0, 200], indirect=True)``.
- ``wan_link_factory``: builds links with any delay for one test and closes
  them after it (for tests that need a fresh link or several).
- ``wan_ssh_host``: the "cloud VM" at the far end: a real sshd in the far
  namespace on ``far_addr:22``, with a login user and a client key.  Connect
  with ``wan_ssh_host.connect()`` (a near-side socket with TCP_NODELAY) and hand
  the socket to paramiko as ``sock=``.

Everything skips, with the reason, where the bed cannot exist (not root, no
``ip``/``iptables``, no NetfilterQueue), so the suite stays green elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.bed import wan as wanmod

DEFAULT_DELAY_MS = 50


def _skip_unless_possible(delay_ms: int) -> None:
    """Skip (not fail) where the bed cannot be built, naming what is missing."""
    if os.geteuid() != 0:
        pytest.skip("the WAN link needs root (network namespaces, iptables)")
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            pytest.skip(f"the WAN link needs `{tool}` (Debian: iproute2, iptables)")
    if delay_ms > 0 and importlib.util.find_spec("netfilterqueue") is None:
        pytest.skip("the WAN link's delay needs NetfilterQueue (pip install NetfilterQueue)")


@pytest.fixture(scope="session")
def wan_link(request: pytest.FixtureRequest) -> Iterator[wanmod.WanLink]:
    """A session-wide link; ``request.param`` (indirect) overrides the 50 ms delay."""
    delay_ms = int(getattr(request, "param", DEFAULT_DELAY_MS))
    _skip_unless_possible(delay_ms)
    link = wanmod.wan_link(delay_ms)
    try:
        yield link
        # A reader that died mid-session would have turned the link into a
        # black hole; say so rather than let later failures look like bugs.
        link.check()
    finally:
        link.close()


@pytest.fixture
def wan_link_factory() -> Iterator[Callable[..., wanmod.WanLink]]:
    """``make(delay_ms=50, **kwargs)`` -> a fresh link, closed after the test."""
    made: list[wanmod.WanLink] = []

    def make(delay_ms: int = DEFAULT_DELAY_MS, **kwargs: object) -> wanmod.WanLink:
        _skip_unless_possible(delay_ms)
        link = wanmod.wan_link(delay_ms, **kwargs)  # type: ignore[arg-type]
        made.append(link)
        return link

    yield make
    errors: list[BaseException] = []
    for link in reversed(made):
        try:
            link.close()
        except Exception as exc:  # close every link before reporting
            errors.append(exc)
    if errors:
        raise errors[0]


@dataclass
class WanSshHost:
    """An sshd at the far end of a WAN link, and what a client needs to log in."""

    link: wanmod.WanLink
    sshd: object  # tests.bed.sshd.Sshd; typed loosely so this module loads without it
    address: str
    port: int
    user: str
    key_path: Path
    public_key: str
    host_key_pub: str
    workdir: Path = field(repr=False)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        """A connected near-side socket to the sshd (TCP_NODELAY), for ``paramiko``'s ``sock=``."""
        return self.link.connect_near(self.port, timeout=timeout)


@pytest.fixture(scope="session")
def wan_ssh_host(wan_link: wanmod.WanLink) -> Iterator[WanSshHost]:
    """A real OpenSSH server in the far namespace, listening on ``far_addr:22``."""
    try:
        from tests.bed import sshd as sshdmod
    except ImportError as exc:  # tests/bed/sshd.py is another part of the bed
        pytest.skip(f"tests.bed.sshd unavailable: {exc}")

    if not Path(sshdmod.SSHD).exists():
        pytest.skip(f"{sshdmod.SSHD} missing (Debian: openssh-server)")
    user = sshdmod.ensure_login_user()
    # sshd reads authorized_keys as the login user: the folder must be
    # traversable by it, which pytest's 0700 tmp folders are not.
    workdir = Path(tempfile.mkdtemp(prefix="wan-sshd-"))
    workdir.chmod(0o755)
    try:
        key_path, public_key = sshdmod.generate_client_key(workdir / "client")
        server = sshdmod.start_sshd(
            workdir / "server",
            user=user,
            authorized_key=public_key,
            listen=wan_link.far_addr,
            netns=wan_link.far_ns,
        )
        try:
            yield WanSshHost(
                link=wan_link,
                sshd=server,
                address=server.address,
                port=server.port,
                user=user,
                key_path=key_path,
                public_key=public_key,
                host_key_pub=server.host_key_pub,
                workdir=workdir,
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
