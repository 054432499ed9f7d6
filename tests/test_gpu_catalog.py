"""The GPU catalog snapshot (core/api/data/gpu_catalog.json, made by .ci/catalog.py): what
it says, the rules derived from it, and the note `launch` prints when it is old."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api import gpu_catalog

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT.parent / "shared" / "catalog"


def test_source_names_repository_commits_and_date() -> None:
    source = gpu_catalog.source()
    assert source["repository"].startswith("https://github.com/")
    assert len(source["gcp_commit"]) == 40 and len(source["aws_commit"]) == 40
    assert gpu_catalog.snapshot_date() == date.fromisoformat(source["date"])


def test_no_k80_and_no_retired_ec2_family_is_offered() -> None:
    assert "nvidia-tesla-k80" not in gpu_catalog.gce_accelerators()
    assert gpu_catalog.gce_offer_zones("nvidia-tesla-k80") == []
    assert not any(t.startswith(("p2.", "g3")) for t in gpu_catalog.ec2_instance_types())
    retired = gpu_catalog.GCE_RETIRED["nvidia-tesla-k80"]
    assert retired.since == "2024-05-01"
    assert "nvidia-tesla-t4" in retired.message("gcp")


@pytest.mark.parametrize(
    ("machine", "gpu", "problem"),
    [
        ("n1-standard-2", "nvidia-tesla-t4", None),
        ("n1-highmem-8", "nvidia-tesla-v100", None),
        ("g2-standard-4", "nvidia-l4", None),
        ("g2-standard-4", None, None),
        ("a2-highgpu-1g", "nvidia-tesla-a100", None),
        ("n1-standard-4", "nvidia-l4", "machine types for it: g2-standard-4"),
        ("n1-standard-8", "nvidia-tesla-a100", "a2-highgpu-1g"),
        ("n2-standard-8", "nvidia-tesla-t4", "machine types for it: n1-*"),
        ("g2-standard-4", "nvidia-tesla-t4", "comes with 1 x nvidia-l4"),
        ("a3-highgpu-8g", "nvidia-tesla-a100", "comes with 8 x nvidia-h100-80gb"),
        ("n1-standard-2", "nvidia-unheard-of", None),  # unknown: preflight's zone check says
    ],
)
def test_machine_type_and_gpu_pairs(machine: str, gpu: str | None, problem: str | None) -> None:
    found = gpu_catalog.gce_pair_error(machine, gpu)
    assert (found is None) == (problem is None), found
    if problem is not None:
        assert found is not None and problem in found


def test_zone_price_adds_host_and_gpus() -> None:
    host = gpu_catalog.gce_hosts()["n1-standard-2"]["zones"]["us-east1-c"][0]
    t4 = gpu_catalog.gce_gpu_price("nvidia-tesla-t4", "us-east1-c")
    assert t4 is not None
    price = gpu_catalog.gce_zone_price("n1-standard-2", ("nvidia-tesla-t4", 2), "us-east1-c")
    assert price == pytest.approx(host + 2 * t4)
    assert gpu_catalog.gce_zone_price("n1-standard-2", ("nvidia-tesla-t4", 1), "mars-1-a") is None


def test_stale_note_after_ninety_days() -> None:
    taken = gpu_catalog.snapshot_date()
    assert gpu_catalog.stale_note(taken + timedelta(days=90)) is None
    note = gpu_catalog.stale_note(taken + timedelta(days=91))
    assert note is not None and "91 days old" in note and "gpus --refresh" in note


def test_launch_notes_an_old_catalog(
    cli: Any, gce_api: Any, gce_credentials: Path, write_profiles: Any, monkeypatch: Any
) -> None:
    write_profiles(
        '[profiles.nb]\nprovider = "gcp"\n[profiles.nb.gcp]\n'
        f'project = "{gce_api.project}"\ncredentials = "{gce_credentials}"\n'
        f'api_endpoint = "{gce_api.endpoint}"\n'
    )
    monkeypatch.setattr(gpu_catalog, "snapshot_date", lambda: date.today() - timedelta(days=200))
    result = cli("launch", "nb", "--profile", "nb", "--dry-run")
    assert result.code == 0, result.err
    assert "the GPU catalog is 200 days old" in result.err


@pytest.mark.skipif(not SNAPSHOT.is_dir(), reason="the catalog snapshot is not beside the repo")
def test_generator_reproduces_the_committed_file(tmp_path: Path) -> None:
    """The committed data file is what .ci/catalog.py makes from the snapshot (nothing was
    edited by hand); the script writes into a copy of the tree."""
    copy = tmp_path / "repo"
    (copy / ".ci").mkdir(parents=True)
    (copy / "core" / "api" / "data").mkdir(parents=True)
    (copy / "core" / "money" / "data").mkdir(parents=True)
    (copy / ".ci" / "catalog.py").write_text((ROOT / ".ci" / "catalog.py").read_text())
    prices = "core/money/data/prices.toml"
    (copy / prices).write_text((ROOT / prices).read_text())
    subprocess.run(
        [sys.executable, str(copy / ".ci" / "catalog.py"), str(SNAPSHOT)], check=True, cwd=copy
    )
    data = "core/api/data/gpu_catalog.json"
    assert (copy / data).read_text() == (ROOT / data).read_text()
    assert (copy / prices).read_text() == (ROOT / prices).read_text()
