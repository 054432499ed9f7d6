"""The benchmark runner still runs: `python -m bench --quick --only B1` (a breakage check).

Benchmarks, not timed tests: this asserts that the rows exist and carry a value,
a baseline and a goal, never what the times are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def quick(only: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`python -m bench --quick --only ONLY`: the process (it must succeed) and its JSON."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", only, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_quick_b1_writes_its_rows(tmp_path: Path) -> None:
    proc, data = quick("B1", tmp_path)
    assert data["quick"] is True
    rows = data["rows"]
    figures = [row["figure"] for row in rows]
    assert any("--help" in f for f in figures), figures
    assert any("status --offline" in f for f in figures), figures
    assert any("refreshed" in f for f in figures), figures
    for row in rows:
        assert row["bench"] == "B1"
        assert row["error"] == "", row
        assert row["value"] is not None and row["value"] > 0
        assert row["baseline"] == "python -c pass" and row["baseline_value"] > 0
        assert row["ratio"] is not None
    goals = [row for row in rows if row["goal"] != "-"]
    assert goals and all(isinstance(row["met"], bool) for row in goals)
    # The table is printed too, with its header.
    assert "figure" in proc.stdout and "baseline" in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="B5 starts an sshd and runs steps through sudo")
def test_quick_b5_prints_the_model_and_converges(tmp_path: Path) -> None:
    proc, data = quick("B5", tmp_path)
    rows = {row["figure"]: row for row in data["rows"]}
    graph = rows["cold host setup, steps as a graph"]
    assert graph["error"] == "" and graph["value"] > 0
    assert graph["baseline"] == "critical path (model)" and graph["baseline_value"] > 0
    assert isinstance(graph["met"], bool) and graph["goal"] == "<= 1.1x"
    assert rows["cold host setup, one step at a time"]["value"] > 0
    # the converge property, a fact rather than a time: a second run applies nothing
    assert rows["second run: steps applied"]["value"] == 0
    assert "model (s, run at 1/" in proc.stdout and "critical path" in proc.stdout
