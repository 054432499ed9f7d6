"""The example third-party provider (examples/orchestrate-linode) as a user gets it.

A fresh virtualenv gets orchestrate and the example by ``pip install`` (not editable),
offline: the venv sees this interpreter's site-packages (a ``.pth`` file) for the
dependencies, and both distributions are built from copies of their folders without build
isolation or an index. The venv is made once per test session (building both wheels is most
of this file's time). Then the venv's own ``orchestrate`` script must list the provider and
its profile, refuse a bad key with one line naming the key's line, print the plan for
``launch --dry-run``, and launch, stop, start and take down a notebook on the test bed: the
example's fake Linode API on loopback hands out the bed's sshd as the Linode, and the bed's
Docker engine and Jupyter image do the rest. The example's own tests must pass against the
installed copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bed.docker_engine import docker
from tests.support.e2e import Bed, adopt_bed_key, bed_profile, make_bed, trust_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "orchestrate-linode"


#: What building orchestrate needs; copied so the build never touches the shared tree.
SOURCES = ("pyproject.toml", "README.md", "core", "plugins")
JUNK = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*_cache")


@pytest.fixture(scope="session")
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
    # One command, as a user installs both: `pip install <orchestrate> <example>`.
    subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "-q",
         "--disable-pip-version-check", str(root), str(example)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
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
    assert "estimated price: $3.00/h on demand" in dry.stderr
    assert "linode's own price list" in dry.stderr
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


def fake_linode() -> Any:
    """The example's fake Linode API module, loaded from its file (it is not installed)."""
    spec = importlib.util.spec_from_file_location(
        "fake_linode", EXAMPLE / "tests" / "fake_linode.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def linode_profile(bed: Bed, endpoint: str) -> str:
    """A CPU plan (no GPU here) on the bed's sshd, which stands in for the Linode."""
    return (
        bed_profile(bed, "box", "linode")
        + f"""
[profiles.box.linode]
api_endpoint = "{endpoint}"
plan = "g6-standard-2"
regions = ["us-east"]
ssh_user = "{bed.ssh.user}"
ssh_port = {bed.ssh.port}
"""
    )


@pytest.fixture
def linode_bed(
    orch_home: Path, ssh_host, docker_engine, jupyter_image
) -> Iterator[tuple[Bed, Any, str]]:  # type: ignore[no-untyped-def]
    """The bed, the example's fake Linode API handing out the bed's sshd, and its token."""
    module = fake_linode()
    fake = module.start_fake_linode(address=ssh_host.address)
    adopt_bed_key(orch_home, ssh_host.key_path)
    bed = make_bed(orch_home, Path.cwd(), None, ssh_host, jupyter_image)
    path = bed.work / "orchestrate.toml"
    path.write_text(linode_profile(bed, fake.endpoint), encoding="utf-8")
    trust_for(orch_home, path)  # it names an API endpoint: the user's `orchestrate trust`
    try:
        yield bed, fake, module.TOKEN
    finally:
        fake.stop()
        docker("rm", "-f", bed.container, check=False)


def cli(venv: Path, bed: Bed, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATE_HOME": str(bed.home), "LINODE_TOKEN": token}
    return subprocess.run(
        [str(venv / "bin" / "orchestrate"), *args], cwd=bed.work, env=env, capture_output=True,
        text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def container_state(name: str) -> str | None:
    found = docker("inspect", "-f", "{{.State.Status}}", name, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.mark.bed
def test_installed_example_launches_stops_starts_and_goes_down_on_the_bed(
    venv: Path, linode_bed: tuple[Bed, Any, str]
) -> None:
    bed, fake, token = linode_bed

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = cli(venv, bed, token, *args)
        assert result.returncode == code, f"{args}: {result.stdout}\n{result.stderr}"
        assert token not in result.stdout + result.stderr
        return result

    assert any(line.startswith("linode ") for line in run("providers").stdout.splitlines())
    listed = run("profiles").stdout
    assert "box" in listed and "linode" in listed
    shown = run("profiles", "box").stdout
    assert f"linode.api_endpoint = '{fake.endpoint}'" in shown

    good = (bed.work / "orchestrate.toml").read_text(encoding="utf-8")
    bad = good.replace('plan = "g6-standard-2"', 'plan = "g6-standard-2"\nplans = "x"')
    (bed.work / "orchestrate.toml").write_text(bad, encoding="utf-8")
    trust_for(bed.home, bed.work / "orchestrate.toml")
    refused = run("launch", "nb", "--profile", "box", "--dry-run", code=2)
    line = next(n for n, text in enumerate(bad.splitlines(), 1) if text.startswith("plans"))
    (message,) = refused.stderr.strip().splitlines()
    assert f"orchestrate.toml:{line}: [profiles.box.linode]: unknown key 'plans'" in message
    assert "did you mean 'plan'?" in message
    (bed.work / "orchestrate.toml").write_text(good, encoding="utf-8")
    trust_for(bed.home, bed.work / "orchestrate.toml")

    dry = run("launch", "nb", "--profile", "box", "--dry-run")
    assert '"type": "g6-standard-2"' in dry.stdout and "estimated price: $0.036/h" in dry.stderr
    assert fake.instances == {}, "a dry run sends nothing"

    launched = run("launch", "nb", "--profile", "box", "--detach", "--no-browser")
    found = re.search(r"http://localhost:(\d+)/\?token=\S+", launched.stdout)
    assert found and int(found.group(1)) == bed.local_port, launched.stdout + launched.stderr
    (linode,) = fake.instances.values()
    assert linode["status"] == "running" and "orchestrate-name=nb" in linode["tags"]
    assert container_state(bed.container) == "running"
    info = json.loads(run("status", "nb", "--json").stdout)[0]
    assert (info["status"], info["provider"]) == ("running", "linode")
    assert "so far at $0.036/h" in run("status", "nb").stdout  # the plugin's own price
    gpus = run("gpus", "--provider", "linode").stdout
    assert "nvidia-quadro-rtx-6000" in gpus and "$3.00 g1-gpu-rtx6000-2" in gpus

    run("stop", "nb")
    assert linode["status"] == "offline"
    assert json.loads(run("status", "nb", "--json").stdout)[0]["status"] == "stopped"

    run("start", "nb", "--detach", "--no-browser")
    assert linode["status"] == "running"
    assert container_state(bed.container) == "running"

    run("down", "nb", "--yes")
    assert fake.instances == {}
    assert fake.calls("DELETE", f"/v4/linode/instances/{linode['id']}")
    assert json.loads(run("status", "--offline", "--json").stdout) == []
