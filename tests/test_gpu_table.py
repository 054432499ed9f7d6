"""The driver decision for real cloud GPUs, from recorded `lspci -nn` and `nvidia-smi` output.

A wrong branch is the seed workflow's costliest mistake (a K80 with a driver that dropped
Kepler boots to a GPU nobody can use), so every GPU a cloud rents out is pinned here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrate.core.api import gpu_table

FIXTURES = Path(__file__).parent / "fixtures" / "gpus"

# name: (device id, generation, count, branch, modules, nvidia-smi driver, CUDA it reports)
EXPECTED = {
    "k80": ("102d", "kepler", 1, 470, "proprietary", "470.223.02", "11.4"),
    "p100": ("15f8", "pascal", 1, 580, "proprietary", "535.129.03", "12.2"),
    "v100": ("1db1", "volta", 1, 580, "proprietary", "550.127.08", "12.4"),
    "t4": ("1eb8", "turing", 1, 580, "open", "535.129.03", "12.2"),
    "a100": ("20b0", "ampere", 1, 580, "open", "550.90.07", "12.4"),
    "l4": ("27b8", "ada", 1, 580, "open", "570.172.08", "12.8"),
    "h100": ("2330", "hopper", 2, 580, "open", "580.65.06", "13.0"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decision_from_recorded_lspci(name: str) -> None:
    device, gen, count, branch, modules, _, _ = EXPECTED[name]
    gpus = gpu_table.parse_lspci((FIXTURES / f"{name}.lspci").read_text())
    assert len(gpus) == count, "only NVIDIA display/3D functions count (no NVSwitch, no audio)"
    assert {g.device_id for g in gpus} == {device}
    assert {g.generation for g in gpus} == {gen}
    decision = gpu_table.decide(gpus)
    assert decision is not None
    assert (decision.row.branch, decision.row.modules) == (branch, modules)
    assert f"R{branch}" in decision.explain()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decision_from_device_id_alone(name: str) -> None:
    """A minimal image without pciutils still decides: the probe reads ids from sysfs."""
    device, gen, *_ = EXPECTED[name]
    assert gpu_table.generation_of(device) == gen


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nvidia_smi_parsed(name: str) -> None:
    _, gen, count, _, _, driver, cuda = EXPECTED[name]
    report = gpu_table.parse_nvidia_smi((FIXTURES / f"{name}.nvidia-smi").read_text())
    assert report.driver_version == driver
    assert report.cuda_version == cuda
    assert len(report.gpus) == count
    # the marketing name alone also gives the generation
    assert {gpu_table.generation_of("", n) for n in report.gpus} == {gen}
    # the table agrees with what the driver itself reports
    assert gpu_table.max_cuda_for_driver(driver) == cuda
    assert report.summary().startswith(f"{count}x ")


def test_kepler_tops_out_at_cuda_11_4() -> None:
    row = gpu_table.driver_row("kepler")
    assert (row.branch, row.max_cuda) == (470, "11.4")
    assert gpu_table.cuda_newer("12.1", row.max_cuda)
    assert not gpu_table.cuda_newer("11.4", row.max_cuda)
    assert gpu_table.max_cuda_for_driver("470.256.02") == "11.4"


@pytest.mark.parametrize(
    ("branch", "cuda"),
    [(470, "11.4"), (535, "12.2"), (550, "12.4"), (570, "12.8"), (580, "13.0"), (440, None)],
)
def test_max_cuda_per_branch(branch: int, cuda: str | None) -> None:
    assert gpu_table.max_cuda_for_branch(branch) == cuda


def test_other_cloud_gpus_and_unknown_ids() -> None:
    assert gpu_table.generation_of("1bb3") == "pascal"  # P4
    assert gpu_table.generation_of("2237") == "ampere"  # A10G (AWS g5)
    assert gpu_table.generation_of("26b9") == "ada"  # L40S
    assert gpu_table.generation_of("2335") == "hopper"  # H200
    assert gpu_table.generation_of("2901") == "blackwell"  # B200
    # a card newer than the table still gets the open modules, not an error
    assert gpu_table.generation_of("2f00") == "turing"
    assert gpu_table.driver_row(gpu_table.generation_of("2f00")).modules == "open"
    # an unknown old card gets the proprietary modules (open ones need Turing+)
    assert gpu_table.choose_driver(["unknown"]).modules == "proprietary"
    # mixed generations: the older card's constraint wins
    assert gpu_table.choose_driver(["turing", "kepler"]).branch == 470


def test_image_cuda_from_tag() -> None:
    assert gpu_table.image_cuda_from_tag("nvidia/cuda:12.4.1-base-ubuntu22.04") == "12.4"
    assert gpu_table.image_cuda_from_tag("pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime") == "12.1"
    assert gpu_table.image_cuda_from_tag("jupyter/base-notebook:latest") is None
    assert gpu_table.image_cuda_from_tag("quay.io/jupyter/pytorch-notebook:cuda12-latest") is None


def test_table_rows_have_sources() -> None:
    rows = gpu_table.table_rows()
    assert [r["generation"] for r in rows][:3] == ["Kepler", "Maxwell", "Pascal"]
    for row in rows:
        assert row["sources"].startswith("https://")
        assert row["driver"].startswith("R")
    kepler = rows[0]
    assert kepler["driver"] == "R470" and "K80" in kepler["examples"]
