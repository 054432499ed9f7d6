"""Finding the AWS access key a launch signs with, without ever echoing the secret.

The ``credentials`` key of ``[profiles.NAME.aws]`` is either

- a path (it contains ``/`` or starts with ``~`` or ``.``) to a file in the AWS shared
  credentials format (``[default]`` with ``aws_access_key_id`` / ``aws_secret_access_key``
  and optionally ``aws_session_token``), or
- a profile name in the shared credentials file (``$AWS_SHARED_CREDENTIALS_FILE``, else
  ``~/.aws/credentials``), as ``aws --profile NAME`` would use.

Without the key, the AWS CLI's own order applies in its simple form: the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), then
``$AWS_PROFILE`` or ``default`` in the shared file. SSO and assume-role profiles hold no static
key; the error says how to export one. Every failure is one line naming the file or profile.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrate.core.api.errors import AuthError
from orchestrate.core.api.files import read_regular_text, reason

#: An INI file of keys is a few hundred bytes; anything far larger is not one.
CREDENTIALS_CAP = 256 << 10
LOGIN_HINT = (
    "run `aws configure` (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or point the "
    "profile's aws `credentials` key at a profile name or a credentials file"
)


@dataclass(frozen=True)
class AwsCredentials:
    """An access key pair; the secret and the session token are kept out of repr()."""

    access_key_id: str
    source: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def shared_credentials_file() -> Path:
    explicit = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    return Path(explicit).expanduser() if explicit else Path.home() / ".aws" / "credentials"


def is_path(option: str) -> bool:
    return "/" in option or option.startswith(("~", "."))


def describe_credentials(option: str | None) -> str:
    """What ``--dry-run`` and ``profiles --show`` print: where the key comes from, not the key."""
    if option:
        return f"file {option}" if is_path(option) else f"profile {option} in the shared file"
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return "environment (AWS_ACCESS_KEY_ID)"
    return f"profile {os.environ.get('AWS_PROFILE') or 'default'} in {shared_credentials_file()}"


def _from_file(path: Path, section: str, label: str) -> AwsCredentials:
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(read_regular_text(path, cap=CREDENTIALS_CAP), source=str(path))
    except FileNotFoundError:
        raise AuthError(f"aws credentials file {path} does not exist", hint=LOGIN_HINT) from None
    except OSError as exc:
        raise AuthError(
            f"aws credentials file {path} cannot be read ({reason(exc)})",
            hint="name the credentials file itself (a regular file, owner-only: mode 0600)",
        ) from None
    except configparser.Error:
        raise AuthError(
            f"aws credentials file {path} is not in the INI format of ~/.aws/credentials",
            hint=LOGIN_HINT,
        ) from None
    if not parser.has_section(section):
        known = ", ".join(parser.sections()) or "none"
        raise AuthError(
            f"aws credentials file {path} has no [{section}] profile (has: {known})",
            hint=LOGIN_HINT,
        )
    key_id = parser.get(section, "aws_access_key_id", fallback="").strip()
    secret = parser.get(section, "aws_secret_access_key", fallback="").strip()
    if not key_id or not secret:
        raise AuthError(
            f"aws {label} holds no static access key",
            hint="SSO and assume-role profiles are not read directly: run "
            f'`eval "$(aws configure export-credentials --profile {section} --format env)"` '
            "and launch again, or use a profile with aws_access_key_id",
        )
    token = parser.get(section, "aws_session_token", fallback="").strip() or None
    return AwsCredentials(key_id, label, secret, token)


def load_credentials(option: str | None) -> AwsCredentials:
    """The access key for `option` (see the module docstring); `AuthError` when there is none."""
    if option and is_path(option):
        path = Path(option).expanduser()
        return _from_file(path, "default", f"credentials file {path}")
    if option:
        path = shared_credentials_file()
        return _from_file(path, option, f"profile {option} in {path}")
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "").strip()
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
    if key_id or secret:
        if not key_id or not secret:
            raise AuthError(
                "aws: only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set",
                hint="set both, or neither to use ~/.aws/credentials",
            )
        token = os.environ.get("AWS_SESSION_TOKEN", "").strip() or None
        return AwsCredentials(key_id, "environment", secret, token)
    section = os.environ.get("AWS_PROFILE") or "default"
    path = shared_credentials_file()
    if not path.exists():
        raise AuthError(f"aws: no credentials in the environment and no {path}", hint=LOGIN_HINT)
    return _from_file(path, section, f"profile {section} in {path}")
