"""Price arithmetic, the confirmation threshold, and the shipped price file's integrity."""

from __future__ import annotations

from typing import Any

import pytest
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.money import billing, prices
from orchestrate.core.money.billing import confirm_needed, cost_so_far, money
from orchestrate.core.money.costs import estimate_for, query_for
from orchestrate.core.money.pricefile import ProviderPrices, load_prices, parse_prices
from orchestrate.core.money.prices import disk_cost_per_hour, hourly, price_line


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


#: A price file the tests own, with round numbers: the arithmetic is checked against it, so
#: the shipped file's data (regenerated from the providers' pages) can change freely. "sep"
#: bills GPUs apart from the machine, as GCE does; "inc" includes them, as EC2 does.
TOY_PRICES = """
[sep]
date = "2025-01-02"
source = "https://example.com/sep-prices"
region = "r1"
currency = "USD"
gpu_billing = "separate"
default_disk = "ssd"
hours_per_month = 730
minimum_seconds = 60

[sep.families.n1]
vcpu = 0.04
memory_gb = 0.005
spot_vcpu = 0.01
spot_memory_gb = 0.001
custom_premium = 1.1
shapes = { standard = 4 }

[sep.machines.n1-standard-2]
vcpus = 2
memory_gb = 8
on_demand = 0.1
spot = 0.02

[sep.machines.b-1g]
vcpus = 4
memory_gb = 16
on_demand = 0.2
spot = 0.05
gpus = { gpu-a = 1 }

[sep.machines.b-2g]
vcpus = 8
memory_gb = 32
on_demand = 0.4
gpus = { gpu-a = 2 }

[sep.gpus.gpu-a]
model = "A"
memory_gb = 16
on_demand = 0.5
spot = 0.125
regions = ["r1"]

[sep.disks.ssd]
per_gb_month = 0.073

[inc]
date = "2025-01-02"
source = "https://example.com/inc-prices"
region = "r2"
currency = "USD"
gpu_billing = "included"
default_disk = "vol"
hours_per_month = 730
minimum_seconds = 60

[inc.machines."g.x"]
vcpus = 4
memory_gb = 16
on_demand = 1.25
spot = 0.5
gpus = { gpu-a = 1 }

[inc.gpus.gpu-a]
model = "A"
memory_gb = 16
regions = ["r2"]

[inc.disks.vol]
per_gb_month = 0.146
"""


@pytest.fixture(scope="module")
def toy() -> dict[str, ProviderPrices]:
    return parse_prices(TOY_PRICES)


def test_separately_billed_gpus_are_added_to_the_machine(toy: Any) -> None:
    est = hourly("sep", "n1-standard-2", "gpu-a", 1, prices=toy)
    assert (est.machine_per_hour, est.gpu_per_hour) == (0.1, 0.5)
    assert est.per_hour == pytest.approx(0.6)
    assert est.known and not est.notes
    assert hourly("sep", "n1-standard-2", "gpu-a", 4, prices=toy).per_hour == pytest.approx(2.1)


def test_spot_uses_spot_prices(toy: Any) -> None:
    est = hourly("sep", "n1-standard-2", "gpu-a", 2, spot=True, prices=toy)
    assert est.per_hour == pytest.approx(0.02 + 2 * 0.125)
    assert "spot" in price_line(est)
    assert hourly("sep", "b-2g", spot=True, prices=toy).per_hour is None  # no spot price


def test_bundled_gpu_machine_types_add_their_gpus_even_when_not_asked(toy: Any) -> None:
    est = hourly("sep", "b-1g", prices=toy)
    assert (est.gpu, est.gpu_count) == ("gpu-a", 1)
    assert est.per_hour == pytest.approx(0.2 + 0.5)
    mismatch = hourly("sep", "b-2g", "gpu-a", 1, prices=toy)
    assert mismatch.gpu_count == 2 and mismatch.per_hour == pytest.approx(0.4 + 2 * 0.5)
    assert any("comes with 2x gpu-a" in n for n in mismatch.notes)


def test_custom_and_missing_sizes_come_from_family_rates(toy: Any) -> None:
    big = hourly("sep", "n1-standard-8", prices=toy)
    assert big.per_hour == pytest.approx(8 * 0.04 + 32 * 0.005)
    assert any("family rates" in n for n in big.notes)
    custom = hourly("sep", "n1-custom-4-8192", prices=toy)
    assert custom.per_hour == pytest.approx((4 * 0.04 + 8 * 0.005) * 1.1)
    assert any("custom shape" in n for n in custom.notes)
    assert hourly("sep", "custom-4-8192", prices=toy).per_hour == custom.per_hour
    assert hourly("sep", "n1-highmem-8", prices=toy).per_hour is None  # no such shape ratio


def test_included_gpus_are_in_the_machine_price(toy: Any) -> None:
    est = hourly("inc", "g.x", "gpu-a", 1, prices=toy)
    assert est.per_hour == 1.25 and est.gpu_per_hour == 0.0 and est.gpu == "gpu-a"
    assert hourly("inc", "g.x", spot=True, prices=toy).per_hour == 0.5


def test_disk_is_added_per_hour_from_the_monthly_price(toy: Any) -> None:
    est = hourly("sep", "n1-standard-2", disk_type="ssd", disk_gb=100, prices=toy)
    assert est.disk_per_hour == pytest.approx(0.01)
    assert est.per_hour == pytest.approx(0.11)
    assert disk_cost_per_hour("inc", "vol", 50, prices=toy) == pytest.approx(0.01)
    assert disk_cost_per_hour("sep", "no-such-disk", 10, prices=toy) is None


def test_unknown_parts_make_the_price_unknown_never_a_guess(toy: Any) -> None:
    assert hourly("sep", "z9-imaginary-7", prices=toy).per_hour is None
    assert hourly("sep", "n1-standard-2", "gpu-unheard-of", 1, prices=toy).per_hour is None
    assert hourly("nocloud", "x", prices=toy).per_hour is None
    line = price_line(hourly("sep", "z9-imaginary-7", prices=toy))
    assert line.startswith("estimated price: unknown") and "z9-imaginary-7" in line


def test_price_line_names_parts_and_basis(toy: Any) -> None:
    line = price_line(hourly("sep", "n1-standard-2", "gpu-a", 1, prices=toy))
    assert line == (
        "estimated price: $0.600/h on demand (n1-standard-2 $0.100 + 1x gpu-a $0.500; "
        "sep list prices for r1 of 2025-01-02, approximate)"
    )


def test_price_line_says_when_the_instance_runs_outside_the_reference_region(toy: Any) -> None:
    def basis(regions: list[str]) -> str:
        return hourly("sep", "n1-standard-2", regions=regions, prices=toy).basis

    assert basis(["r1"]) == "sep list prices for r1 of 2025-01-02, approximate"
    assert basis(["r2", "r1", "r2"]) == (
        "sep list prices for r1 (the price file's reference; r2 may differ) of 2025-01-02, "
        "approximate"
    )
    assert basis([]) == (
        "sep list prices for r1 (the price file's reference region; others may differ) of "
        "2025-01-02, approximate"
    )


def test_shipped_family_rates_agree_with_the_shipped_table() -> None:
    """Sizes the table leaves out are priced from family rates: those must give the table's
    own price for a size it has, or the two kinds of estimate would disagree."""
    table = load_prices()["gcp"]
    listed = table.machines["n1-standard-2"]
    rates = table.families["n1"]
    derived = listed.vcpus * rates.vcpu + listed.memory_gb * rates.memory_gb
    assert derived == pytest.approx(listed.on_demand, rel=1e-3)


def test_cost_so_far_bills_per_second_with_a_one_minute_minimum() -> None:
    assert cost_so_far(3.6, started_at=1000.0, now=1000.0 + 3600) == pytest.approx(3.6)
    assert cost_so_far(3.6, started_at=1000.0, now=1000.0 + 90) == pytest.approx(0.09)
    assert cost_so_far(3.6, started_at=1000.0, now=1000.0 + 5) == pytest.approx(0.06)
    assert cost_so_far(3.6, started_at=1000.0, now=999.0) == 0.0
    line = billing.spent_line(0.45, started_at=0.0, now=2 * 3600 + 5 * 60)
    assert line == "about $0.938 so far at $0.450/h"  # the uptime is on the row itself


def test_stopped_line_shows_the_disk_cost() -> None:
    per_hour = disk_cost_per_hour("gcp", "pd-balanced", 50)
    assert per_hour is not None
    per_month = per_hour * load_prices()["gcp"].hours_per_month
    assert prices.stopped_line("gcp", "pd-balanced", 50) == (
        "stopped: no compute billing; its 50 GB pd-balanced disk costs about "
        f"{money(per_hour)}/h ({money(per_month)}/month)"
    )
    assert prices.stopped_line("gcp", "no-such-disk", 50) == (
        "stopped: no compute billing; its 50 GB no-such-disk disk still bills"
    )


@pytest.mark.parametrize(
    ("price", "threshold", "expected"),
    [
        (0.45, 5.0, False),
        (5.0, 5.0, False),  # "above" the threshold: equal does not ask
        (5.01, 5.0, True),
        (32.77, 5.0, True),
        (0.45, 0.0, True),
        (None, 5.0, False),  # unknown price: cannot be compared, so it is said, not asked
        (None, 0.0, True),  # ... unless every launch is to be confirmed
        (100.0, None, False),  # no threshold: confirmation off
        (None, None, False),
    ],
)
def test_confirm_needed(price: float | None, threshold: float | None, expected: bool) -> None:
    assert confirm_needed(price, threshold) is expected


def test_confirm_threshold_cannot_be_negative() -> None:
    with pytest.raises(ValueError):
        confirm_needed(1.0, -1.0)


def test_confirm_question_names_price_and_threshold(toy: Any) -> None:
    est = hourly("sep", "b-2g", "gpu-a", 2, prices=toy)
    assert confirm_needed(est.per_hour, 1.0)
    question = prices.confirm_question(est, 1.0)
    assert "b-2g costs about $1.40/h" in question and "confirm_above of $1.00/h" in question
    unknown = prices.confirm_question(hourly("sep", "z9", prices=toy), 0.0)
    assert "unknown" in unknown and "confirm_above is $0" in unknown


def test_money_keeps_small_prices_readable() -> None:
    assert money(32.7726) == "$32.77"
    assert money(0.095) == "$0.095"
    assert money(0.00684) == "$0.0068"
    assert money(None) == "$?"


def test_gcp_states_its_priced_shape() -> None:
    """The provider names the parts of its options that bill; core prices exactly those."""
    from orchestrate.plugins.providers.gcp import GcpProvider

    provider = GcpProvider()
    options = provider.validate_options(
        {"machine_type": "n1-standard-4", "accelerator": "nvidia-tesla-k80", "disk_gb": 100,
         "disk_type": "pd-balanced", "preemptible": True},
        "test",
    )  # fmt: skip
    query = query_for(provider, options)
    assert query is not None
    assert (query.machine_type, query.gpu, query.spot) == (
        "n1-standard-4", GpuRequest("nvidia-tesla-k80", 1), True,
    )  # fmt: skip
    assert (query.disk_type, query.disk_gb) == ("pd-balanced", 100)
    est = estimate_for(provider, options)
    assert est is not None
    assert est.per_hour == hourly(
        "gcp", "n1-standard-4", "nvidia-tesla-k80", 1, spot=True,
        disk_type="pd-balanced", disk_gb=100,
    ).per_hour  # fmt: skip


def test_aws_disk_type_comes_from_its_price_list() -> None:
    from orchestrate.plugins.providers.aws import AwsProvider

    provider = AwsProvider()
    options = provider.validate_options({"instance_type": "g5.xlarge", "disk_gb": 80}, "test")
    query = query_for(provider, options)
    assert query is not None and not query.spot
    assert query.disk_type == load_prices()["aws"].default_disk
    assert query.gpu is not None and query.gpu.name == "nvidia-a10g"
    est = estimate_for(provider, options)
    assert est is not None and est.per_hour == hourly(
        "aws", "g5.xlarge", disk_type=query.disk_type, disk_gb=80
    ).per_hour  # fmt: skip


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


def test_a_provider_without_price_query_is_unpriced() -> None:
    from orchestrate.plugins.providers.ssh import SshProvider

    provider = SshProvider()
    options = provider.validate_options({"host": "me@gpu-box"}, "test")
    assert query_for(provider, options) is None and estimate_for(provider, options) is None
