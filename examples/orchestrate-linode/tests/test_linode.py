"""orchestrate-linode against orchestrate's public API: options, plan, prices, registration,
and the life cycle over real HTTP against a fake Linode API on loopback."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_linode import FakeLinode
from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import AuthError, NotFound, ProfileError
from orchestrate.core.api.provider import GpuRequest, LaunchSpec, OwnPrices, PriceQuery, Provider
from orchestrate.core.api.retry import Retry
from orchestrate.core.cloud.failover import create_with_failover

import orchestrate_linode
from orchestrate_linode import LinodeOptions, LinodeProvider

WHERE = "orchestrate.toml:9: [profiles.gpu.linode]"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBdLwkMVsD9m3Yy2pC6bJ5yN0o0gE5i3J0k0aLq7cQxP me"


def quick() -> LinodeProvider:
    """The provider with a retry policy that does not sleep, as every wait costs nothing here."""
    provider = LinodeProvider()
    provider.retry = Retry(deadline_s=60.0, first_s=0.25, max_s=8.0, sleep=lambda s: None)
    return provider


def spec_for(options: LinodeOptions, script: str | None = None) -> LaunchSpec:
    labels = {"orchestrate-name": "nb"}
    return LaunchSpec(
        "nb", "linode", options, options.ssh_user, PUBLIC_KEY, labels=labels, startup_script=script
    )


def test_defaults_are_the_smallest_gpu_plan() -> None:
    options = LinodeProvider().validate_options({}, WHERE)
    assert options.plan == "g1-gpu-rtx6000-1" and options.image == "linode/ubuntu22.04"
    assert LinodeProvider().gpu_request(options) == GpuRequest("nvidia-quadro-rtx-6000", 1)
    assert options.ssh_user == "root"


def test_it_prices_its_own_plans() -> None:
    """Orchestrate's price file has no Linode section: the plugin supplies prices and offers."""
    provider = LinodeProvider()
    assert isinstance(provider, OwnPrices)
    options = provider.validate_options({"plan": "g1-gpu-rtx6000-2"}, WHERE)
    query = provider.price_query(options)
    assert query == PriceQuery("g1-gpu-rtx6000-2", GpuRequest("nvidia-quadro-rtx-6000", 2))
    assert provider.price(query) == 3.0 and provider.price(PriceQuery("g9-none")) is None
    offers = {o.machine_type: o for o in provider.gpu_offers()}
    assert offers["g2-gpu-rtx4000a4-s"].count == 4 and offers["g2-gpu-rtx4000a4-s"].memory_gb == 80


@pytest.mark.parametrize(
    ("plan", "gpu"),
    [
        ("g1-gpu-rtx6000-2", ("nvidia-quadro-rtx-6000", 2)),
        ("g2-gpu-rtx4000a4-s", ("nvidia-rtx-4000-ada", 4)),
        ("g6-standard-2", None),
    ],
)
def test_gpu_comes_from_the_plan(plan: str, gpu: Any) -> None:
    options = LinodeProvider().validate_options({"plan": plan}, WHERE)
    assert LinodeProvider().gpu_request(options) == (GpuRequest(*gpu) if gpu else None)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"plan": "p2.xlarge"}, "'p2.xlarge' is not one of g6-standard-2, g1-gpu-rtx6000-1"),
        ({"region": "us_east"}, "not a Linode region"),
        ({"regions": ["us-east", "us_west"]}, "regions[1]: 'us_west' is not a Linode region"),
        ({"ssh_port": 0}, "between 1 and 65535"),
        ({"api_endpoint": "ftp://x"}, "scheme://host"),
        ({"token": "secret"}, "unknown key 'token'"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ProfileError) as caught:
        LinodeProvider().validate_options(table, WHERE)
    assert WHERE in caught.value.message and fragment in caught.value.line()


def test_flags() -> None:
    provider = LinodeProvider()
    options = provider.validate_options({}, WHERE)
    assert provider.apply_overrides(options, {"gpu": "rtx6000:2"}).plan == "g1-gpu-rtx6000-2"
    assert provider.apply_overrides(options, {"gpu": "none"}).plan == "g6-standard-2"
    assert provider.apply_overrides(options, {"zone": "eu-central"}).regions == ("eu-central",)
    with pytest.raises(ProfileError, match=r"no plan with 'rtx4000-ada:3'"):
        provider.apply_overrides(options, {"gpu": "rtx4000-ada:3"})
    with pytest.raises(ProfileError, match="does not take --host"):
        provider.apply_overrides(options, {"host": "me@box"})


def test_plan_shows_the_requests_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINODE_TOKEN", "never-printed-token")
    provider = LinodeProvider()
    options = provider.validate_options({"regions": ["eu-central", "us-east"]}, WHERE)
    plan = provider.plan(spec_for(options, script="#!/bin/sh\necho hi\n"))
    assert [(r.method, r.path) for r in plan] == [
        ("GET", "/v4/regions"),
        ("POST", "/v4/linode/instances"),
    ]
    body = plan[1].body
    assert body is not None
    assert (body["region"], body["type"], body["label"]) == (
        "eu-central",
        "g1-gpu-rtx6000-1",
        "orchestrate-nb",
    )
    text = json.dumps([r.body for r in plan])
    assert "never-printed-token" not in text and PUBLIC_KEY.split()[1] not in text
    assert "ssh-ed25519 public key" in text and "<random, never stored>" in text


def test_options_and_plan_load_no_http_client() -> None:
    probe = (
        "import sys\n"
        "from orchestrate.core.api.provider import LaunchSpec\n"
        "from orchestrate_linode import LinodeProvider\n"
        "p = LinodeProvider(); o = p.validate_options({}, 'x')\n"
        f"p.plan(LaunchSpec('nb', 'linode', o, 'root', {PUBLIC_KEY!r}))\n"
        "print('urllib.request' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_the_hook_registers_the_provider() -> None:
    found: list[Provider] = []
    orchestrate_linode.orchestrate_register_providers(register=found.append)
    assert [provider.name for provider in found] == ["linode"]


def test_gpu_regions_first_the_preferred_one(fake: FakeLinode) -> None:
    provider = quick()
    options = provider.validate_options(
        {"api_endpoint": fake.endpoint, "region": "eu-central"}, WHERE
    )
    assert list(provider.candidate_zones(spec_for(options))) == [
        "eu-central",
        "ap-south",
        "us-east",
    ]
    cpu = provider.apply_overrides(options, {"gpu": "none"})
    assert "us-west" in provider.candidate_zones(spec_for(cpu))


def test_life_cycle_with_failover(fake: FakeLinode, tmp_path: Path) -> None:
    provider = quick()
    options = provider.validate_options(
        {"api_endpoint": fake.endpoint, "regions": ["us-east", "eu-central"]}, WHERE
    )
    fake.refuse["us-east"] = ("No GPU capacity in this region", "region")
    spec = spec_for(options, script="#!/bin/sh\necho boot\n")
    events: list[str] = []
    record = create_with_failover(provider, spec, lambda kind, msg, data: events.append(kind))
    assert events == ["try", "stockout", "try", "created"]
    # Contract v2: create returns the Linode while it provisions; core polls `get`, as here.
    assert record.status == p.PENDING and record.cloud_id
    record = dataclasses.replace(record, options=options)  # what core hands lifecycle calls
    record, running = Retry(attempts=5, sleep=lambda s: None).poll(
        lambda: dataclasses.replace(provider.get(record), options=options),
        lambda r: r.status == p.RUNNING,
    )
    assert running and record.zone == "eu-central"
    assert record.address and record.address.startswith("203.0.113.")
    assert (record.ssh_user, record.ssh_port) == ("root", 22)
    (created,) = fake.instances.values()
    assert created["label"] == "orchestrate-nb" and created["type"] == "g1-gpu-rtx6000-1"
    assert created["_authorized_keys"] == [PUBLIC_KEY]
    assert created["tags"] == ["orchestrate", "orchestrate-name=nb"]
    assert base64.b64decode(created["_user_data"]).decode() == "#!/bin/sh\necho boot\n"
    posted = fake.calls("POST", "/v4/linode/instances")[-1]
    assert len(posted["root_pass"]) >= 32 and posted["root_pass"] not in json.dumps(record.extra)

    found = provider.find(spec)
    assert found is not None and found.cloud_id == record.cloud_id
    provider.stop(record)
    assert provider.get(record).status == p.STOPPED
    assert provider.start(record).status == p.PENDING
    assert provider.get(record).status == p.RUNNING
    provider.destroy(record)
    with pytest.raises(NotFound):
        provider.get(record)
    with pytest.raises(NotFound):  # gone already: core's `down` says so and forgets the row
        provider.destroy(record)
    assert provider.find(spec) is None


def test_a_wrong_token_is_an_auth_error(fake: FakeLinode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINODE_TOKEN", "wrong")
    provider = quick()
    options = provider.validate_options({"api_endpoint": fake.endpoint}, WHERE)
    with pytest.raises(AuthError) as caught:
        provider.candidate_zones(spec_for(options))
    assert "wrong" not in caught.value.line() and "LINODE_TOKEN" in caught.value.line()


def test_no_token_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LINODE_TOKEN", raising=False)
    provider = LinodeProvider()
    with pytest.raises(AuthError, match="no API token"):
        provider.candidate_zones(spec_for(provider.validate_options({}, WHERE)))
    token_file = tmp_path / "token"
    token_file.write_text("", encoding="utf-8")
    options = provider.validate_options({"token_file": str(token_file)}, WHERE)
    with pytest.raises(AuthError, match="is empty"):
        provider.candidate_zones(spec_for(options))
