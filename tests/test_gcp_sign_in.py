"""One sign-in per process: GCP drivers share a signed-in credential, each with its own
HTTP connection (libcloud's connections are not thread-safe).

Against the fake on loopback with libcloud's real driver: the fake's request log counts the
token exchanges, so a driver that signed in again, or one that lost its token, shows.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrate.plugins.providers.gcp import GcpProvider
from orchestrate.plugins.providers.gcp.firewall import managed_instances

from tests.bed.fixtures_gce import generate_rsa_key, write_service_account_file
from tests.bed.gce_fake import GceFake

WHERE = "orchestrate.toml:7: [profiles.t.gcp]"


def token_requests(fake: GceFake) -> int:
    return len(fake.calls("POST", "/token"))


def options_for(fake: GceFake, credentials: Path) -> Any:
    table = {
        "project": fake.project,
        "credentials": str(credentials),
        "api_endpoint": fake.endpoint,
    }
    return GcpProvider(retry_deadline_s=5.0).validate_options(table, WHERE)


def listed(provider: GcpProvider, options: Any) -> list[Any]:
    """orchestrate's instances in the project: one signed-in API call through `provider`."""
    _, api = provider.connect(options)
    return managed_instances(api)


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads started together; re-raise the first failure."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_eight_providers_in_threads_sign_in_once_and_each_call_on_its_own_connection(
    gce_api: GceFake, gce_credentials: Path
) -> None:
    options = options_for(gce_api, gce_credentials)

    def list_in_a_fresh_provider(i: int) -> tuple[Any, int]:
        provider = GcpProvider(retry_deadline_s=5.0)
        assert listed(provider, options) == []
        _, api = provider.connect(options)
        return api.driver, len(gce_api.calls("GET", "/instances"))

    results = in_threads(8, list_in_a_fresh_provider)
    drivers = [driver for driver, _ in results]
    assert token_requests(gce_api) == 1
    assert len(gce_api.calls("GET")) >= 8, "every provider made its own API call"
    assert len({id(d.connection) for d in drivers}) == 8
    assert len({id(d.connection.connection) for d in drivers}) == 8, "one HTTP connection each"
    credentials = {id(d.connection.oauth2_credential) for d in drivers}
    assert len(credentials) == 1, "the token is shared, not fetched per driver"


def test_another_key_signs_in_again(
    gce_api: GceFake, gce_credentials: Path, tmp_path: Path
) -> None:
    listed(GcpProvider(retry_deadline_s=5.0), options_for(gce_api, gce_credentials))
    other = write_service_account_file(tmp_path / "other.json", gce_api, generate_rsa_key())
    listed(GcpProvider(retry_deadline_s=5.0), options_for(gce_api, other))
    assert token_requests(gce_api) == 2


def test_a_refused_sign_in_keeps_nothing(gce_api: GceFake, gce_credentials: Path) -> None:
    from orchestrate.core.api.errors import AuthError

    options = options_for(gce_api, gce_credentials)
    gce_api.faults.auth_failure = True
    try:
        listed(GcpProvider(retry_deadline_s=5.0), options)
    except AuthError:
        pass
    else:
        raise AssertionError("a refused grant must be an AuthError")
    gce_api.faults.auth_failure = False
    assert listed(GcpProvider(retry_deadline_s=5.0), options) == []
    assert token_requests(gce_api) == 2, "the second provider signed in again"


def test_an_expired_shared_token_is_renewed_once_for_all_threads(
    gce_api: GceFake, gce_credentials: Path
) -> None:
    options = options_for(gce_api, gce_credentials)
    providers = [GcpProvider(retry_deadline_s=5.0) for _ in range(4)]
    drivers = [p.connect(options)[1].driver for p in providers]
    assert token_requests(gce_api) == 1
    credential = drivers[0].connection.oauth2_credential
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    credential.token["expire_time"] = past.strftime("%Y-%m-%dT%H:%M:%SZ")

    in_threads(4, lambda i: listed(providers[i], options))

    assert token_requests(gce_api) == 2, "one renewal, seen by every driver"
