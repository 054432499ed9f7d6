"""Packaging: the explicit package list matches the folders, and the wheel's top level is
`orchestrate/` alone (nothing named core, plugins, tests or examples in site-packages)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"core": "orchestrate.core", "plugins": "orchestrate.plugins"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_package_list_matches_folders() -> None:
    on_disk = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([package, *relative.parts]))
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert listed == on_disk, (
        f"missing from pyproject: {sorted(on_disk - listed)}; stale: {sorted(listed - on_disk)}"
    )


def test_package_dir_maps_only_namespaced_names() -> None:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {"orchestrate.core": "core", "orchestrate.plugins": "plugins"}
    assert not (ROOT / "orchestrate" / "__init__.py").exists(), "orchestrate is a namespace"


def test_wheel_holds_only_the_orchestrate_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("orchestrate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"orchestrate"}
    assert "orchestrate/core/py.typed" in names
    assert "orchestrate/core/app/cli.py" in names
    assert not any(name.startswith("orchestrate/__init__") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "orchestrate = orchestrate.core.app.cli:main" in text
