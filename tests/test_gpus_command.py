"""`orchestrate gpus`: the catalog prints for each built-in provider, through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from orchestrate.core.api.errors import AuthError
from orchestrate.core.app.commands.gpus import GpuLocations, catalog_rows, provider_locations
from orchestrate.core.money.prices import load_prices
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
