"""The example third-party provider (examples/orchestrate-linode) as a user gets it.

A fresh virtualenv gets orchestrate and the example by ``pip install``, offline: the venv sees
this interpreter's site-packages (a ``.pth`` file) for the dependencies, and both
distributions are built from their folders without build isolation or an index. Then the
venv's own ``orchestrate`` script must list the provider, report the plugin's distribution,
and print its plan for ``launch --dry-run``; and the example's own tests must pass against
the installed copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "orchestrate-linode"


#: What building orchestrate needs; copied so the build never touches the shared tree.
SOURCES = ("pyproject.toml", "README.md", "core", "plugins")
JUNK = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*_cache")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Built from copies: pip builds in the source folder, and a stale ``build/`` left there
    (or another test building at the same time) must not leak into what is installed."""
    base = tmp_path_factory.mktemp("example-venv")
    root, example = base / "orchestrate", base / "orchestrate-linode"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=JUNK)
        else:
            root.mkdir(exist_ok=True)
            shutil.copy2(source, root / name)
    shutil.copytree(EXAMPLE, example, ignore=JUNK)
    path = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    # The dependencies (and pip) are the ones this interpreter has: the tests may run in a
    # virtual environment, whose packages `--system-site-packages` would not show.
    (site_dir,) = (path / "lib").glob("python3*/site-packages")
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (site_dir / "test-dependencies.pth").write_text("\n".join(ours) + "\n")
    python = str(path / "bin" / "python")
    for source in (root, example):
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--no-index",
                "--no-build-isolation",
                "-q",
                "--disable-pip-version-check",
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    yield path


def run(venv: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ORCHESTRATE_HOME": str(tmp_path / "home"),
        "LINODE_TOKEN": "token-that-must-not-be-printed",
    }
    env.pop("ORCHESTRATE_DISABLE_PLUGINS", None)
    return subprocess.run(
        [str(venv / "bin" / "orchestrate"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_example_is_listed_and_plans_a_launch(venv: Path, tmp_path: Path) -> None:
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import orchestrate.core, orchestrate_linode; print(orchestrate.core.__file__); "
            "print(orchestrate_linode.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert all(path.startswith(str(venv)) for path in site), site

    providers = run(venv, tmp_path, "providers")
    assert providers.returncode == 0, providers.stderr
    assert any(line.startswith("linode ") for line in providers.stdout.splitlines())

    plugins = run(venv, tmp_path, "plugins")
    assert "linode  orchestrate-linode 0.1.0" in plugins.stdout

    dry = run(
        venv, tmp_path, "launch", "nb", "--provider", "linode", "--gpu", "rtx6000:2", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    assert "# launch nb on linode (dry run: nothing is sent)" in out
    assert "GET /v4/regions" in out and "POST /v4/linode/instances" in out
    assert '"type": "g1-gpu-rtx6000-2"' in out and '"label": "orchestrate-nb"' in out
    assert "token-that-must-not-be-printed" not in out + dry.stderr


def test_the_example_passes_its_own_tests_installed(venv: Path) -> None:
    """``-P``: the example's folder is not put on sys.path, so the installed copy is tested."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
