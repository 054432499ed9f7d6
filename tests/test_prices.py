"""Price arithmetic, the confirmation threshold, and the shipped price file's integrity."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from orchestrate.core.api import gpu_catalog
from orchestrate.core.money import billing, prices
from orchestrate.core.money.billing import confirm_needed, cost_so_far, money
from orchestrate.core.money.prices import (
    disk_cost_per_hour,
    hourly,
    load_prices,
    price_line,
    query_from_options,
)


def test_every_provider_section_says_when_and_where_its_numbers_are_from() -> None:
    table = load_prices()
    assert {"gcp", "aws"} <= set(table)
    for provider in table.values():
        assert len(provider.date) == 10 and provider.date[4] == "-", provider.name
        assert provider.sources and all(s.startswith("https://") for s in provider.sources)
        assert "approximate" in provider.basis
        assert provider.machines and provider.gpus and provider.disks
        assert provider.default_disk in provider.disks
        for gpu in provider.gpus.values():
            assert gpu.memory_gb > 0 and gpu.model, gpu.name


def test_shipped_file_says_approximate_list_prices() -> None:
    from importlib import resources

    text = resources.files("orchestrate.core.money").joinpath("data/prices.toml").read_text()
    assert "APPROXIMATE PUBLIC LIST PRICES" in text


def test_gce_gpu_is_added_to_the_machine() -> None:
    est = hourly("gcp", "n1-standard-2", "nvidia-tesla-t4", 1)
    assert est.machine_per_hour == pytest.approx(0.095)
    assert est.gpu_per_hour == pytest.approx(0.35)
    assert est.per_hour == pytest.approx(0.445)
    assert est.known and not est.notes


def test_gce_gpu_count_multiplies() -> None:
    est = hourly("gcp", "n1-standard-8", "nvidia-tesla-v100", 4)
    assert est.per_hour == pytest.approx(0.38 + 4 * 2.48)


def test_gce_spot_uses_spot_prices() -> None:
    est = hourly("gcp", "n1-standard-4", "nvidia-tesla-t4", 2, spot=True)
    # spot list prices of the catalog snapshot in us-central1
    assert est.per_hour == pytest.approx(0.0481 + 2 * 0.14)
    assert "spot" in price_line(est)


def test_gce_bundled_gpu_machine_types_add_their_gpus_even_when_not_asked() -> None:
    # g2-standard-4 totals $0.7068/h on Google's page: machine part + one L4
    est = hourly("gcp", "g2-standard-4")
    assert est.gpu == "nvidia-l4" and est.gpu_count == 1
    assert est.per_hour == pytest.approx(0.7068, abs=0.001)
    # a2-highgpu-1g totals $3.67/h
    assert hourly("gcp", "a2-highgpu-1g").per_hour == pytest.approx(3.673, abs=0.002)
    mismatch = hourly("gcp", "a2-highgpu-2g", "nvidia-tesla-a100", 1)
    assert mismatch.gpu_count == 2
    assert any("comes with 2x nvidia-tesla-a100" in n for n in mismatch.notes)


def test_gce_custom_and_missing_sizes_come_from_family_rates() -> None:
    # the table's n1-standard-2 and the n1 family rates agree
    rates = load_prices()["gcp"].families["n1"]
    assert 2 * rates.vcpu + 7.5 * rates.memory_gb == pytest.approx(0.095, abs=1e-4)
    big = hourly("gcp", "n1-standard-64")
    assert big.per_hour == pytest.approx(64 * 0.031611 + 240 * 0.004237)
    assert any("family rates" in n for n in big.notes)
    custom = hourly("gcp", "n1-custom-4-16384")
    assert custom.per_hour == pytest.approx((4 * 0.031611 + 16 * 0.004237) * 1.05)
    assert hourly("gcp", "custom-4-16384").per_hour == custom.per_hour


def test_ec2_machine_price_includes_its_gpu() -> None:
    est = hourly("aws", "g4dn.xlarge", "nvidia-tesla-t4", 1)
    assert est.per_hour == pytest.approx(0.526)
    assert est.gpu_per_hour == 0.0 and est.gpu == "nvidia-tesla-t4"
    assert hourly("aws", "p3.2xlarge").per_hour == pytest.approx(3.06)
    assert hourly("aws", "p4d.24xlarge", spot=True).per_hour == pytest.approx(5.0933)


def test_disk_is_added_per_hour_from_the_monthly_price() -> None:
    est = hourly("gcp", "n1-standard-2", disk_type="pd-balanced", disk_gb=50)
    assert est.disk_per_hour == pytest.approx(50 * 0.10 / 730)
    assert est.per_hour == pytest.approx(0.095 + 50 * 0.10 / 730)
    assert disk_cost_per_hour("aws", "gp3", 100) == pytest.approx(8.0 / 730)
    assert disk_cost_per_hour("gcp", "no-such-disk", 10) is None


def test_unknown_parts_make_the_price_unknown_never_a_guess() -> None:
    assert hourly("gcp", "z9-imaginary-7").per_hour is None
    assert hourly("gcp", "n1-standard-2", "nvidia-unheard-of", 1).per_hour is None
    assert hourly("nocloud", "x").per_hour is None
    line = price_line(hourly("gcp", "z9-imaginary-7"))
    assert line.startswith("estimated price: unknown") and "z9-imaginary-7" in line


def test_price_line_names_parts_and_basis() -> None:
    line = price_line(hourly("gcp", "n1-standard-2", "nvidia-tesla-k80", 1))
    assert line.startswith("estimated price: $0.545/h on demand")
    assert "n1-standard-2 $0.095" in line and "1x nvidia-tesla-k80 $0.450" in line
    assert "us-central1" in line and "approximate" in line
    assert gpu_catalog.source()["date"] in line, "the date the snapshot was read"


def test_cost_so_far_bills_per_second_with_a_one_minute_minimum() -> None:
    assert cost_so_far(3.6, started_at=1000.0, now=1000.0 + 3600) == pytest.approx(3.6)
    assert cost_so_far(3.6, started_at=1000.0, now=1000.0 + 90) == pytest.approx(0.09)
    assert cost_so_far(3.6, started_at=1000.0, now=1000.0 + 5) == pytest.approx(0.06)
    assert cost_so_far(3.6, started_at=1000.0, now=999.0) == 0.0
    line = billing.uptime_line(0.45, started_at=0.0, now=2 * 3600 + 5 * 60)
    assert line == "up 2h 05m, about $0.938 so far at $0.450/h"


def test_stopped_line_shows_the_disk_cost() -> None:
    line = prices.stopped_line("gcp", "pd-balanced", 50)
    assert line == (
        "stopped: no compute billing; its 50 GB pd-balanced disk costs about "
        "$0.0068/h ($5.00/month)"
    )


@pytest.mark.parametrize(
    ("price", "threshold", "expected"),
    [
        (0.45, 5.0, False),
        (5.0, 5.0, False),  # "above" the threshold: equal does not ask
        (5.01, 5.0, True),
        (32.77, 5.0, True),
        (0.45, 0.0, True),
        (None, 5.0, True),  # unknown price: ask, it may be the expensive one
        (100.0, None, False),  # no threshold: confirmation off
        (None, None, False),
    ],
)
def test_confirm_needed(price: float | None, threshold: float | None, expected: bool) -> None:
    assert confirm_needed(price, threshold) is expected


def test_confirm_threshold_cannot_be_negative() -> None:
    with pytest.raises(ValueError):
        confirm_needed(1.0, -1.0)


def test_confirm_question_names_price_and_threshold() -> None:
    est = hourly("aws", "p4d.24xlarge")
    assert confirm_needed(est.per_hour, prices.DEFAULT_CONFIRM_ABOVE)
    question = prices.confirm_question(est, prices.DEFAULT_CONFIRM_ABOVE)
    assert "$32.77/h" in question and "$5.00/h" in question


def test_money_keeps_small_prices_readable() -> None:
    assert money(32.7726) == "$32.77"
    assert money(0.095) == "$0.095"
    assert money(0.00684) == "$0.0068"
    assert money(None) == "$?"


@dataclass(frozen=True)
class GcpShapedOptions:
    """The attribute names of the GCP provider's options (plugins/providers/gcp/options.py)."""

    machine_type: str = "n1-standard-4"
    accelerator: str = "nvidia-tesla-k80"
    accelerator_count: int = 1
    disk_gb: int = 100
    disk_type: str = "pd-balanced"
    spot: bool = True
    preemptible: bool = False


@dataclass(frozen=True)
class Ec2ShapedOptions:
    """The attribute names of the AWS provider's options: no disk type (EBS gp3)."""

    instance_type: str = "g5.xlarge"
    disk_gb: int = 80
    spot: bool = False


def test_query_from_gcp_shaped_options() -> None:
    query = query_from_options("gcp", GcpShapedOptions(), ("nvidia-tesla-k80", 1))
    assert query is not None
    assert (query.machine_type, query.gpu, query.gpu_count, query.spot) == (
        "n1-standard-4", "nvidia-tesla-k80", 1, True,
    )  # fmt: skip
    assert (query.disk_type, query.disk_gb) == ("pd-balanced", 100)
    est = query.estimate()
    assert est.per_hour == pytest.approx(0.0481 + 0.135 + 100 * 0.10 / 730)


def test_query_from_ec2_shaped_options() -> None:
    query = query_from_options("aws", Ec2ShapedOptions(), ("nvidia-a10g", 1))
    assert query is not None and not query.spot and query.disk_type == "gp3"
    assert query.estimate().per_hour == pytest.approx(1.006 + 80 * 0.08 / 730)


def test_aws_gpu_names_match_the_aws_provider() -> None:
    """The AWS provider names GPUs like GCE does (plugins/providers/aws/instance_types.py);
    every GPU an EC2 type in the price list carries uses those names."""
    from orchestrate.plugins.providers.aws.instance_types import GPU_NAMES, GPU_TYPES

    table = load_prices()["aws"]
    assert set(table.gpus) <= set(GPU_NAMES)
    carried = {t.name: (t.gpu, t.gpus) for t in GPU_TYPES}
    for machine in table.machines.values():
        for gpu, count in machine.gpus.items():
            if machine.name in carried:
                assert carried[machine.name] == (gpu, count), machine.name


def test_query_needs_a_machine_type() -> None:
    @dataclass
    class Opaque:
        region: str = "r1"

    assert query_from_options("toy", Opaque()) is None
