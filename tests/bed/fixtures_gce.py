"""pytest fixtures for the fake GCE Compute API (`tests/bed/gce_fake.py`).

- ``gce_api``: the running fake, reset before each test (one server per session: starting
  is cheap, but a fresh state per test keeps tests independent).
- ``gce_credentials``: a service-account JSON key file (a real RSA key, so libcloud signs a
  real JWT that the fake verifies), mode 0600, ``token_uri`` pointing at the fake.
- ``gce_adc_credentials``: an application-default credentials file (``authorized_user``)
  whose refresh token the fake accepts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bed.gce_fake import GceFake

SERVICE_ACCOUNT_EMAIL = "orchestrate-test@orchestrate-test.iam.gserviceaccount.com"
ADC_CLIENT_ID = "764086051850-fake.apps.googleusercontent.com"


def generate_rsa_key() -> Any:
    """A fresh 2048-bit RSA private key (what Google issues for service accounts)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


def write_private_file(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON readable by the owner only, as credential files must be."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.chmod(path, 0o600)
    return path


def write_service_account_file(
    path: Path,
    fake: GceFake,
    key: Any,
    *,
    email: str = SERVICE_ACCOUNT_EMAIL,
    register: bool = True,
) -> Path:
    """A service-account key file shaped like the one the Cloud console downloads.

    With ``register`` the fake accepts JWTs signed by ``key`` for ``email``; without it the
    file is well-formed but refused, like a deleted key.
    """
    if register:
        fake.register_service_account(email, key.public_key())
    return write_private_file(
        path,
        {
            "type": "service_account",
            "project_id": fake.project,
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": private_key_pem(key),
            "client_email": email,
            "client_id": "112233445566778899000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": fake.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        },
    )


@pytest.fixture(scope="session")
def gce_api_server() -> Iterator[GceFake]:
    """The fake's HTTP server, started once per test session on 127.0.0.1:0."""
    with GceFake() as fake:
        yield fake


@pytest.fixture
def gce_api(gce_api_server: GceFake) -> Iterator[GceFake]:
    """The running fake with no resources, no requests logged and every fault off.

    The reset also forgets the tokens the fake issued, so this process's signed-in drivers
    (one sign-in per process, `driver.forget_sign_ins`) are dropped with it: each test signs
    in afresh, as a new orchestrate process would.
    """
    from orchestrate.plugins.providers.gcp.driver import forget_sign_ins

    forget_sign_ins()
    gce_api_server.reset()
    yield gce_api_server
    gce_api_server.reset()
    forget_sign_ins()


@pytest.fixture(scope="session")
def gce_service_account_key() -> Any:
    """One RSA key per session: generating one costs tens of milliseconds."""
    return generate_rsa_key()


@pytest.fixture
def gce_credentials(gce_api: GceFake, gce_service_account_key: Any, tmp_path: Path) -> Path:
    """Path of a service-account key file the fake accepts (mode 0600)."""
    return write_service_account_file(
        tmp_path / "service-account.json", gce_api, gce_service_account_key
    )


@pytest.fixture
def gcp_table(gce_api: GceFake, gce_credentials: Path) -> dict[str, Any]:
    """A profile's ``[profiles.X.gcp]`` table aimed at the fake, with a key it accepts."""
    return {
        "project": gce_api.project,
        "credentials": str(gce_credentials),
        "api_endpoint": gce_api.endpoint,
    }


@pytest.fixture
def gce_adc_credentials(gce_api: GceFake, tmp_path: Path) -> Path:
    """Path of an application-default credentials file (``gcloud auth application-default
    login`` writes this shape) whose refresh token the fake accepts."""
    secret = "fake-client-secret-d2VsbCBkb25l"
    refresh = "1//fake-refresh-token-b3JjaGVzdHJhdGU"
    gce_api.register_refresh_token(ADC_CLIENT_ID, secret, refresh)
    return write_private_file(
        tmp_path / "application_default_credentials.json",
        {
            "type": "authorized_user",
            "client_id": ADC_CLIENT_ID,
            "client_secret": secret,
            "refresh_token": refresh,
            "quota_project_id": gce_api.project,
        },
    )
