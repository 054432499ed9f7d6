"""What every benchmark shares: the result row, the table, the CLI command, a private home.

Every figure is compared with a baseline measured in the same run on the same machine, so a
busy or slow machine moves both. Goals are stated as the issue states them; `met` is None
where a figure has no goal (it is there to explain another one).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass
class Row:
    """One line of the table: a figure, its baseline from the same run, and the goal.

    ``ratio`` is value / baseline_value unless ``ratio_stated`` says otherwise. ``met`` is
    None when the figure has no goal of its own, or could not be measured (then ``error``
    says why).
    """

    bench: str
    figure: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    goal: str = "-"
    met: bool | None = None
    notes: str = ""
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    #: set where the goal is stated on another ratio (B3: "higher is better for us").
    ratio_stated: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ratio_stated is not None:
            return self.ratio_stated
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def skipped(bench: str, figure: str, why: str) -> Row:
    """A row for a benchmark that could not run here, saying why (never a silent gap)."""
    return Row(bench, figure, None, "", notes=f"skipped: {why}", error="skipped")


def failed(bench: str, figure: str, exc: BaseException) -> Row:
    return Row(bench, figure, None, "", error=f"{type(exc).__name__}: {exc}")


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "RT", "x") or abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    """The plain-text table the runner prints: figure, baseline, ratio, goal, met."""
    head = ("bench", "figure", "value", "baseline", "ratio", "goal", "met")
    lines = []
    for r in rows:
        value = f"{_num(r.value, r.unit)} {r.unit}".strip() if r.value is not None else "-"
        base = f"{r.baseline} = {_num(r.baseline_value, r.unit)}" if r.baseline else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        if r.error:
            met = "skip" if r.error == "skipped" else "ERROR"
        lines.append((r.bench, r.figure, value, base, ratio, r.goal, met))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r.error and r.error != "skipped":
            out.append(f"{r.bench} {r.figure}: {r.error}")
        elif r.notes:
            out.append(f"{r.bench} {r.figure}: {r.notes}")
    return "\n".join(out)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def orchestrate_argv() -> tuple[list[str], str]:
    """The command a user types, and how it was found.

    The console script next to this interpreter (not a pyenv shim, which adds its own
    bash start-up); `python -m orchestrate.core.app.cli` where there is none.
    """
    script = Path(sys.executable).parent / "orchestrate"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], f"console script {script}"
    return [sys.executable, "-m", "orchestrate.core.app.cli"], "python -m orchestrate.core.app.cli"


def private_home(prefix: str) -> Path:
    """A fresh ORCHESTRATE_HOME: state, config and SSH key of the benchmark alone."""
    home = Path(tempfile.mkdtemp(prefix=f"orch-bench-{prefix}-"))
    home.chmod(0o755)
    return home


def env_with(home: Path, **more: str) -> dict[str, str]:
    env = os.environ.copy()
    env["ORCHESTRATE_HOME"] = str(home)
    env.pop("ORCHESTRATE_DISABLE_PLUGINS", None)
    env.update(more)
    return env


def time_run(argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float = 120) -> float:
    """Seconds from spawn to exit of one fresh process; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, timeout=timeout, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return elapsed


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


@dataclass
class Context:
    """What the runner hands each benchmark."""

    quick: bool
    results_dir: Path
    log: Any = print
