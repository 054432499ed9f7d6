"""The ``[profiles.NAME.ssh]`` table and ``--host``: which existing machine to use.

``host`` is written as on an ssh command line, ``[user@]address[:port]``, with an IPv6
address in brackets (``user@[2001:db8::5]:2222``). Without a user the local login name is
used, as OpenSSH does. ``gpu`` says whether the host has an NVIDIA GPU the notebook should
get (``none`` by default: a CPU notebook host); the GPU steps run only when it is set.
"""

from __future__ import annotations

import getpass
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.api.typedoptions import checked, options_from

NO_GPU = "none"
HOST_HINT = "write it as user@address[:port], e.g. ubuntu@192.0.2.10 or me@box.lan:2222"

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_GPU_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class SshOptions:
    """The host to use; `address` is None until a profile or ``--host`` names one."""

    user: str | None = None
    address: str | None = None
    port: int = 22
    gpu_name: str | None = None
    gpu_count: int = 0
    #: a cluster's machines, node 0 (the head) first: (user, address, port) each
    hosts: tuple[tuple[str, str, int], ...] = ()
    #: the address each of `hosts` is reached on by the others (None: its `address`)
    internal_addresses: tuple[str | None, ...] = ()

    @property
    def gpu(self) -> GpuRequest | None:
        if self.gpu_name is None or self.gpu_count == 0:
            return None
        return GpuRequest(self.gpu_name, self.gpu_count)

    @property
    def ssh_user(self) -> str | None:
        """The login user, under the name core reads from every provider's options."""
        return self.user

    @property
    def target(self) -> str:
        """``user@address:port`` (IPv6 in brackets), as messages and the record show it."""
        address = self.address or "?"
        if ":" in address:
            address = f"[{address}]"
        return f"{self.user}@{address}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        gpu = self.gpu
        data: dict[str, Any] = {
            "host": self.target if self.address else None,
            "gpu": f"{gpu.name}:{gpu.count}" if gpu else NO_GPU,
        }
        if self.hosts:
            data["hosts"] = [target_of(*host) for host in self.hosts]
        if any(self.internal_addresses):
            data["internal_addresses"] = [a or "" for a in self.internal_addresses]
        return data


def target_of(user: str, address: str, port: int) -> str:
    """``user@address:port``, IPv6 in brackets."""
    shown = f"[{address}]" if ":" in address else address
    return f"{user}@{shown}:{port}"


def _address(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _HOSTNAME.match(text) and not text.replace(".", "").isdigit():
        return text.rstrip(".")
    raise ProfileError(f"{where}: {text!r} is not a host name or IP address", hint=HOST_HINT)


def parse_host(value: Any, where: str) -> tuple[str, str, int]:
    """``[user@]address[:port]`` -> (user, address, port); every error names `where`."""
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{where} must be a non-empty string", hint=HOST_HINT)
    text = value.strip()
    user, at, rest = text.rpartition("@")
    if not at:
        user, rest = getpass.getuser(), text
    elif not _USER.match(user):
        raise ProfileError(f"{where}: {user!r} is not a login name", hint=HOST_HINT)
    port_text = ""
    if rest.startswith("["):
        address_text, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ProfileError(
                f"{where}: {text!r}: unclosed '[' around an IPv6 address", hint=HOST_HINT
            )
        port_text = after[1:]
        if ":" not in address_text:
            raise ProfileError(f"{where}: brackets are only for IPv6 addresses", hint=HOST_HINT)
    elif rest.count(":") > 1:
        address_text = rest  # a bare IPv6 address: no port can follow it unbracketed
    else:
        address_text, _, port_text = rest.partition(":")
    address = _address(address_text, where)
    port = 22
    if port_text or text.endswith(":"):
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ProfileError(f"{where}: port {port_text!r} must be 1-65535", hint=HOST_HINT)
        port = int(port_text)
    return user, address, port


def parse_gpu(value: Any, where: str) -> tuple[str | None, int]:
    """``none`` or ``NAME[:COUNT]`` (any NVIDIA card name, e.g. ``rtx-4090:2``)."""
    if not isinstance(value, str):
        raise ProfileError(f"{where} must be a string like nvidia-rtx-4090:1 or none")
    text = value.strip().lower()
    if text in (NO_GPU, "", "0"):
        return None, 0
    name, _, count_text = text.partition(":")
    if not _GPU_NAME.match(name):
        raise ProfileError(f"{where}: {value!r} is not a GPU name like nvidia-rtx-4090")
    if count_text and (not count_text.isdigit() or not 0 <= int(count_text) <= 16):
        raise ProfileError(f"{where}: the count after ':' must be a number 0-16")
    count = int(count_text) if count_text else 1
    return (name, count) if count else (None, 0)


def parse_hosts(value: Any, where: str) -> tuple[tuple[str, str, int], ...]:
    """``hosts = ["user@address[:port]", ...]``: one machine per cluster node, head first."""
    if not isinstance(value, list) or not value:
        raise ProfileError(f"{where} must be a list of user@address[:port]", hint=HOST_HINT)
    found = tuple(parse_host(item, f"{where}[{index}]") for index, item in enumerate(value))
    if len(set(found)) != len(found):
        raise ProfileError(f"{where} names a host twice", hint="one machine per node")
    return found


def parse_internal(value: Any, where: str) -> tuple[str | None, ...]:
    """``internal_addresses = ["10.0.0.5", ...]``: where the nodes reach each other, in the
    order of ``hosts``; "" keeps a host's own address."""
    if not isinstance(value, list):
        raise ProfileError(f"{where} must be a list of addresses, in the order of hosts")
    return tuple(
        _address(item, f"{where}[{index}]") if item else None for index, item in enumerate(value)
    )


@dataclass(frozen=True)
class SshTable:
    """The table as written: each key parsed by its check into the parts `SshOptions` keeps."""

    host: tuple[str, str, int] | None = checked(None, parse_host)
    gpu: tuple[str | None, int] = checked((None, 0), parse_gpu)
    hosts: tuple[tuple[str, str, int], ...] = checked((), parse_hosts)
    internal_addresses: tuple[str | None, ...] = checked((), parse_internal)


def parse_options(table: Mapping[str, Any], where: str) -> SshOptions:
    """Validate ``[profiles.NAME.ssh]``; ``host`` may still come from ``--host``."""
    written = options_from(SshTable, table, where)
    if len(written.internal_addresses) > len(written.hosts):
        raise ProfileError(
            f"{where}: internal_addresses has more entries than hosts",
            hint="one internal address per host, in the same order",
        )
    user, address, port = written.host or (None, None, 22)
    return SshOptions(
        user,
        address,
        port,
        *written.gpu,
        hosts=written.hosts,
        internal_addresses=written.internal_addresses,
    )


def with_overrides(options: SshOptions, overrides: Mapping[str, Any]) -> SshOptions:
    """Apply ``--host`` and ``--gpu``; any other flag given is an error for this provider."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {"host", "gpu"})
    if unknown:
        flag = unknown[0].replace("_", "-")
        raise ProfileError(
            f"provider ssh does not take --{flag}",
            hint="an existing host has no zones; drop the flag",
        )
    if "host" in given:
        user, address, port = parse_host(given["host"], "--host")
        options = replace(options, user=user, address=address, port=port)
    if "gpu" in given:
        name, count = parse_gpu(given["gpu"], "--gpu")
        options = replace(options, gpu_name=name, gpu_count=count)
    return options
