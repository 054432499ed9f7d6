"""`orchestrate gpus`: the catalog prints for each built-in provider, through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from orchestrate.core.api import gpu_catalog
from orchestrate.core.api.errors import AuthError
from orchestrate.core.api.provider import GpuLocations
from orchestrate.core.app.commands.gpus import catalog_rows, provider_locations
from orchestrate.core.money.pricefile import load_prices
from orchestrate.core.wiring.registry import build_manager, providers

from tests.conftest import CliResult

Cli = Callable[..., CliResult]


def builtin_providers() -> list[str]:
    return sorted(providers(build_manager()))


def test_every_builtin_provider_prints_a_catalog(cli: Cli) -> None:
    names = builtin_providers()
    assert {"gcp", "aws"} <= set(names) | set(load_prices())
    for name in sorted(set(names) | set(load_prices())):
        result = cli("gpus", "--provider", name)
        assert result.code == 0, (name, result.err)
        assert result.out.startswith(f"{name}: "), result.out
        table = load_prices().get(name)
        if table is None:  # a host you bring: the generation/driver table instead
            assert "R470 proprietary" in result.out and "Kepler" in result.out
            continue
        assert table.date in result.out and "approximate" in result.out
        for gpu in table.gpus:
            assert f"\n{gpu} " in result.out, (name, gpu)


def test_gcp_rows_have_generation_driver_memory_price_and_places(cli: Cli) -> None:
    result = cli("gpus", "--provider", "gcp")
    lines = {line.split()[0]: line for line in result.out.splitlines() if line.startswith("nv")}
    t4 = lines["nvidia-tesla-t4"]
    for expected in ("Tesla T4", "Turing", "R580 open", "16 GB", "$0.350", "$0.140", "us-central1"):
        assert expected in t4, (expected, t4)
    k80 = lines["nvidia-tesla-k80"]
    assert "Kepler" in k80 and "R470 proprietary" in k80 and "retired" in k80
    v100 = lines["nvidia-tesla-v100"]
    assert "Volta" in v100 and "R580 proprietary" in v100
    assert "per GPU-hour, on top of the machine type" in result.out
    # oldest generation first
    order = [line.split()[0] for line in result.out.splitlines() if line.startswith("nv")]
    assert order.index("nvidia-tesla-k80") < order.index("nvidia-tesla-t4")
    assert order.index("nvidia-tesla-t4") < order.index("nvidia-h100-80gb")


def test_aws_rows_price_the_cheapest_instance_type_with_the_gpu(cli: Cli) -> None:
    result = cli("gpus", "--provider", "aws")
    t4 = next(line for line in result.out.splitlines() if line.startswith("nvidia-tesla-t4 "))
    assert "$0.526 g4dn.xlarge" in t4 and "Turing" in t4
    assert "whole instance" in result.out


def test_json_has_every_provider_and_all_places(cli: Cli) -> None:
    result = cli("gpus", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert set(load_prices()) <= set(data)
    gcp = {row["gpu"]: row for row in data["gcp"]["rows"]}
    assert gcp["nvidia-l4"]["generation"] == "Ada Lovelace"
    assert gcp["nvidia-l4"]["on_demand_per_hour"] == pytest.approx(0.56)
    assert len(gcp["nvidia-tesla-t4"]["where"]) == len(
        load_prices()["gcp"].gpus["nvidia-tesla-t4"].regions
    )
    assert gcp["nvidia-tesla-t4"]["where_source"].startswith("data file")
    assert data["gcp"]["prices"]["sources"][0].startswith("https://")


def test_unknown_provider_is_a_usage_error(cli: Cli) -> None:
    result = cli("gpus", "--provider", "nocloud")
    assert result.code == 2
    assert "unknown provider 'nocloud'" in result.err


class CloudWithLocations:
    """A provider that can list its GPUs' places itself (the optional GpuLocations method)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def gpu_locations(self, options: Any) -> Mapping[str, Sequence[str]]:
        if self.fail:
            raise AuthError("no credentials file", hint="set credentials in the profile")
        return {"nvidia-tesla-t4": ["us-central1-a", "europe-west4-b"]}


def test_places_come_from_the_provider_when_it_can_list_them() -> None:
    assert isinstance(CloudWithLocations(), GpuLocations)
    table = load_prices()["gcp"]
    locations, why = provider_locations(CloudWithLocations(), options=None)
    assert why is None and locations is not None
    rows = {row["gpu"]: row for row in catalog_rows(table, locations)}
    assert rows["nvidia-tesla-t4"]["where"] == ["us-central1-a", "europe-west4-b"]
    assert rows["nvidia-tesla-t4"]["where_source"] == "provider API"
    assert rows["nvidia-l4"]["where_source"].startswith("data file")


def test_without_credentials_the_data_file_answers_and_says_why() -> None:
    locations, why = provider_locations(CloudWithLocations(fail=True), options=None)
    assert locations is None and why is not None and "no credentials" in why
    assert provider_locations(object(), None) == (None, None)


def test_refresh_asks_the_fake_gce_api_and_caches_the_answer(
    cli: Cli, gce_api: Any, gce_credentials: Any, write_profiles: Callable[[str], Any]
) -> None:
    write_profiles(
        '[profiles.g]\nprovider = "gcp"\n[profiles.g.gcp]\n'
        f'project = "{gce_api.project}"\ncredentials = "{gce_credentials}"\n'
        f'api_endpoint = "{gce_api.endpoint}"\n'
    )
    result = cli("gpus", "--provider", "gcp", "--profile", "g", "--refresh", "--json")
    assert result.code == 0, result.err
    rows = {row["gpu"]: row for row in json.loads(result.out)["gcp"]["rows"]}
    t4 = rows["nvidia-tesla-t4"]
    assert t4["where_source"].startswith("provider API, 20")
    assert t4["where"] == gpu_catalog.gce_offer_zones("nvidia-tesla-t4")
    assert rows["nvidia-tesla-k80"]["where"] == [], "GCE lists no K80 anywhere"
    assert gce_api.calls("GET", "/aggregated/acceleratorTypes")
    # Later runs read the cache: no request, same places, same date.
    gce_api.reset()
    again = cli("gpus", "--provider", "gcp", "--json")
    cached = {row["gpu"]: row for row in json.loads(again.out)["gcp"]["rows"]}
    assert cached["nvidia-tesla-t4"]["where_source"] == t4["where_source"]
    assert gce_api.requests == []


def test_refresh_asks_ec2_instance_type_offerings_on_moto(
    cli: Cli, write_profiles: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.moto_ec2 import start_moto_ec2

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREFRESHTEST00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "refresh-secret")
    moto = start_moto_ec2()
    try:
        write_profiles(
            f'[profiles.a]\nprovider = "aws"\n[profiles.a.aws]\nendpoint = "{moto.endpoint}"\n'
        )
        result = cli("gpus", "--provider", "aws", "--profile", "a", "--refresh")
        assert result.code == 0, result.err
        assert "places: provider API, 20" in result.out
        assert moto.sent("DescribeInstanceTypeOfferings")
        line = next(x for x in result.out.splitlines() if x.startswith("nvidia-tesla-t4"))
        assert "us-east-1a" in line
    finally:
        moto.stop()
