"""Grammars for the values that end up in a shell, a `docker run`, a systemd unit or an
ssh_config: an image reference, a container name, a container path, a host folder, an
address from a cloud.

Quoting is the second line of defence; these checks are the first. A value that passes
them carries no control character, no option-looking leading dash and none of docker's or
ssh_config's separators in the wrong place, so even a script that forgot to quote it could
not be turned against the host. Each checker returns the value or raises `ProfileError`
with `where` and a fix, so a profile's author sees the file, the line and the rule.

In the public API because providers validate their own keys with the same rules.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from typing import Any

from orchestrate.core.api.errors import ProfileError, ProviderError

#: C0 controls (newline, tab, escape...), DEL and the C1 range: never part of a setting.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Docker's reference grammar (distribution/reference, regexp.go), written out.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
IMAGE_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?$")
#: Docker refuses repository names longer than this.
IMAGE_NAME_MAX = 255

#: Docker's own rule for container names (daemon/names), with a length cap.
CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
#: Paths inside the container: absolute, in characters no shell or `-v` treats specially.
CONTAINER_PATH = re.compile(r"^/[A-Za-z0-9._+/-]*$")
#: A DNS name (RFC 1123 labels), as a cloud may give instead of an address.
HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)

#: Folders a notebooks folder must never be: the host step creates and bind-mounts it into a
#: container that runs as root, so these would hand the notebook the whole system.
SYSTEM_FOLDERS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/snap",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/lib",
        "/var/log",
        "/var/lib/docker",
    ]
)
#: ... nor anything inside these.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/run", "/sbin", "/sys", "/usr")


def shown(value: str) -> str:
    """A value for a one-line error: repr() escapes newlines and other controls."""
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")


def no_control(value: str, where: str) -> str:
    if _CONTROL.search(value):
        raise ProfileError(
            f"{where}: {shown(value)} contains a control character",
            hint="remove newlines, tabs and other control characters from the value",
        )
    return value


def no_control_anywhere(value: Any, where: str) -> None:
    """Every string in a TOML value (keys, array items, nested tables) is free of controls."""
    if isinstance(value, str):
        no_control(value, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            no_control_anywhere(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            no_control(str(key), f"{where}: key")
            no_control_anywhere(item, f"{where}.{key}")


def image_reference(value: str, where: str) -> str:
    """A docker image reference such as ``quay.io/jupyter/base-notebook:2024-01-01``."""
    no_control(value, where)
    match = IMAGE_REFERENCE.match(value)
    first = match.group("name").split("/")[0] if match and "/" in match.group("name") else ""
    # Docker reads the first component as a registry only with a '.' or ':' or as
    # localhost; otherwise it is a repository component, which must be lowercase.
    registry = "." in first or ":" in first or first == "localhost"
    if (
        match is None
        or len(match.group("name")) > IMAGE_NAME_MAX
        or (not registry and first != first.lower())
    ):
        raise ProfileError(
            f"{where}: {shown(value)} is not a docker image reference",
            hint="write [registry/]repository[:tag][@digest], e.g. jupyter/base-notebook:latest",
        )
    return value


def container_name(value: str, where: str) -> str:
    no_control(value, where)
    if not CONTAINER_NAME.match(value):
        raise ProfileError(
            f"{where}: {shown(value)} is not a container name",
            hint="use letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return value


def container_path(value: str, where: str) -> str:
    no_control(value, where)
    if not CONTAINER_PATH.match(value) or ".." in value.split("/"):
        raise ProfileError(
            f"{where}: {shown(value)} is not an absolute path in the container",
            hint="write e.g. /notebooks (letters, digits and . _ + - / only, no '..')",
        )
    return value


def host_folder(value: str, where: str) -> str:
    """The notebooks folder on the host: ``~``, ``~/...`` or absolute; any printable name
    (spaces too: scripts quote it) except ':' (docker's -v separator) and '..'."""
    no_control(value, where)
    if not (value == "~" or value.startswith(("~/", "/"))):
        raise ProfileError(
            f"{where}: {shown(value)} must be ~, ~/FOLDER or an absolute path",
            hint="e.g. ~/notebooks",
        )
    if ":" in value or ".." in value.split("/"):
        raise ProfileError(
            f"{where}: {shown(value)} may not contain ':' or '..'", hint="e.g. ~/notebooks"
        )
    normal = posixpath.normpath(value) if value.startswith("/") else ""
    if normal in SYSTEM_FOLDERS or any(normal.startswith(t + "/") for t in SYSTEM_TREES):
        raise ProfileError(
            f"{where}: {shown(value)} is a system folder",
            hint="use a folder of its own, e.g. ~/notebooks or /data/notebooks",
        )
    return value


def finite(value: float, where: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ProfileError(f"{where} must be a finite number >= 0, not {value!r}")
    return value


class AddressError(ProviderError):
    """A cloud answered with something that is not an address: never used."""


def address(value: str, where: str = "the cloud's answer") -> str:
    """An IP address or DNS name from a cloud's answer, before anything uses it (an
    ssh_config line, a socket, a command line)."""
    text = str(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if HOSTNAME.match(text) and not text.startswith("-"):
        return text
    raise AddressError(
        f"{where}: {shown(text)} is not an IP address or host name",
        hint="the provider returned a bad address; run `orchestrate status` again",
    )
