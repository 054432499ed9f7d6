"""Building libcloud's ``EC2NodeDriver``, imported only here and only when a call is made.

- ``signature_version="4"``: libcloud still defaults some regions to Signature V2, which EC2
  refuses in every region opened since 2014; V4 works everywhere.
- ``endpoint`` (moto_server, an EC2-compatible cloud, a VPC endpoint): libcloud takes it as
  ``host``/``port``/``secure``; the region still decides the signing scope.
- Timeouts are explicit so a dead endpoint fails a command instead of hanging it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from orchestrate.plugins.providers.aws.credentials import AwsCredentials

HTTP_TIMEOUT_S = 60


def endpoint_kwargs(endpoint: str | None) -> dict[str, Any]:
    """``http://127.0.0.1:5000`` -> host/port/secure keywords for the driver."""
    if not endpoint:
        return {}
    parts = urlsplit(endpoint)
    secure = parts.scheme == "https"
    return {"host": parts.hostname, "port": parts.port or (443 if secure else 80), "secure": secure}


def build_driver(credentials: AwsCredentials, region: str, endpoint: str | None) -> Any:
    """A driver for `region` (raises `ValueError` for a region libcloud does not know)."""
    from libcloud.compute.drivers.ec2 import EC2NodeDriver

    cls: Any = EC2NodeDriver  # libcloud is untyped
    return cls(
        credentials.access_key_id,
        credentials.secret_access_key,
        region=region,
        token=credentials.session_token,
        signature_version="4",
        timeout=HTTP_TIMEOUT_S,
        **endpoint_kwargs(endpoint),
    )


def known_regions() -> list[str]:
    from libcloud.compute.drivers.ec2 import EC2NodeDriver

    cls: Any = EC2NodeDriver
    return sorted(cls.list_regions())
