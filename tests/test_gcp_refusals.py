"""What real GCE refuses, refused here first: each one a single line before anything exists.

Runs `orchestrate launch` in-process against the fake GCE API (libcloud's real driver over
real HTTP). The fake takes its offers from the catalog snapshot, validates request bodies
against Google's Compute v1 discovery document, refuses GPU/machine-type pairs GCE refuses,
honours OS Login and can withhold ``iam.serviceAccountUser`` (tests/bed/gce_fake.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api import gpu_catalog
from orchestrate.core.api.errors import CreateRefused, HostError
from orchestrate.core.api.provider import LaunchSpec
from orchestrate.core.ssh.session import Session
from orchestrate.plugins.providers.gcp import resources
from orchestrate.plugins.providers.gcp.provider import GcpProvider

from tests.bed import discovery
from tests.bed.gce_fake import GceFake

PROFILE = """
[profiles.nb]
provider = "gcp"
autostop = "off"
confirm_above = 1000

[profiles.nb.gcp]
project = "{project}"
credentials = "{credentials}"
api_endpoint = "{endpoint}"
{extra}
"""


@pytest.fixture
def launch(
    gce_api: GceFake, gce_credentials: Path, write_profiles: Callable[[str], Path], cli: Any
) -> Callable[..., Any]:
    """Write the profile with `extra` lines, run `launch nb`, return the CLI result."""

    def run(extra: str = "", *flags: str) -> Any:
        write_profiles(
            PROFILE.format(
                project=gce_api.project,
                credentials=gce_credentials,
                endpoint=gce_api.endpoint,
                extra=extra,
            )
        )
        return cli("launch", "nb", "--profile", "nb", "--no-browser", "--yes", *flags)

    return run


@pytest.fixture
def provider_spec(
    gcp_table: dict[str, Any], ssh_public_key: str
) -> Callable[..., tuple[GcpProvider, LaunchSpec]]:
    """A provider and the spec `launch` would build for a gcp table with `keys`."""

    def make(**keys: Any) -> tuple[GcpProvider, LaunchSpec]:
        provider = GcpProvider(retry_deadline_s=5.0)
        table = {**gcp_table, **keys}
        options = provider.validate_options(table, "orchestrate.toml [profiles.nb.gcp]")
        spec = LaunchSpec(
            name="nb",
            provider="gcp",
            options=options,
            ssh_user="orchestrate",
            ssh_public_key=ssh_public_key,
            gpu=provider.gpu_request(options),
        )
        return provider, spec

    return make


@pytest.fixture
def ssh_public_key() -> str:
    return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGXnvsony9ekZd79r8CzWqgrjSYPPrMt/6tPgbbwjm71 t@x"


def one_line_refusal(result: Any, cli: Any, gce_api: GceFake) -> str:
    """The error, after checking it is one line, non-zero, and that nothing was created."""
    assert result.code != 0
    lines = [line for line in result.err.strip().splitlines() if line.startswith("orchestrate:")]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert gce_api.instances == {}, "no instance on the fake"
    rows = cli("status", "--offline", "--json")
    assert json.loads(rows.out or "[]") == [], "no row in the state file"
    return lines[0]


def test_defaults_validate_and_plan_against_the_fake(launch: Any, gce_api: GceFake) -> None:
    """An empty gcp table is n1-standard-2 + one T4; the dry run's insert body passes the
    discovery document and the fake's pairing rule, in a zone that offers a T4."""
    result = launch("", "--dry-run")
    assert result.code == 0, result.err
    insert = next(
        json.loads(block)
        for block in _json_blocks(result.out)
        if isinstance(json.loads(block), dict) and "machineType" in json.loads(block)
    )
    discovery.validate("compute.instances.insert", insert)
    assert insert["guestAccelerators"][0]["acceleratorType"].endswith("/nvidia-tesla-t4")
    assert insert["machineType"].endswith("/n1-standard-2")


def _json_blocks(text: str) -> list[str]:
    """The JSON bodies a dry run prints (each starts on a line of its own with '{')."""
    blocks, depth, current = [], 0, []
    for line in text.splitlines():
        if depth == 0 and line.strip() != "{":
            continue
        current.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_default_launch_creates_a_t4_in_the_cheapest_nearest_zone(
    provider_spec: Callable[..., tuple[GcpProvider, LaunchSpec]], gce_api: GceFake
) -> None:
    provider, spec = provider_spec()
    zone = provider.candidate_zones(spec)[0]
    provider.preflight(spec)
    record = provider.create(spec, zone)
    assert record.zone == "us-east1-c"
    (instance,) = gce_api.instances.values()
    assert instance["guestAccelerators"][0]["acceleratorType"].endswith("/nvidia-tesla-t4")


def test_retired_k80_fails_in_preflight_before_any_request(
    launch: Any, cli: Any, gce_api: GceFake
) -> None:
    line = one_line_refusal(launch("", "--gpu", "nvidia-tesla-k80"), cli, gce_api)
    assert "nvidia-tesla-k80 was retired on 2024-05-01" in line
    assert "nvidia-tesla-t4" in line
    checks = [r.path for r in gce_api.requests if r.method != "POST"]
    assert not any(
        path.endswith(("/orchestrate-test", "/regions", "/zones", "/acceleratorTypes"))
        for path in checks
    ), f"no quota or zone check for a GPU that cannot be had: {checks}"


def test_mismatched_pair_fails_at_profile_load(launch: Any, cli: Any, gce_api: GceFake) -> None:
    extra = 'machine_type = "n1-standard-4"\naccelerator = "nvidia-l4"'
    line = one_line_refusal(launch(extra), cli, gce_api)
    assert "nvidia-l4 does not run on n1-standard-4" in line
    assert "g2-standard-4" in line and "machineType" not in line
    assert gce_api.requests == []


def test_fake_refuses_a_pair_with_googles_words(
    provider_spec: Callable[..., tuple[GcpProvider, LaunchSpec]],
    gce_api: GceFake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A g2 type carries its L4: an insert that also sends guestAccelerators is refused."""
    provider, spec = provider_spec(machine_type="g2-standard-4", zones=["us-east1-c"])
    real = resources.instance_body

    def with_accelerators(*args: Any) -> dict[str, Any]:
        body = real(*args)
        body["guestAccelerators"] = [
            {
                "acceleratorType": "zones/us-east1-c/acceleratorTypes/nvidia-l4",
                "acceleratorCount": 1,
            }
        ]
        return body

    monkeypatch.setattr(resources, "instance_body", with_accelerators)
    with pytest.raises(Exception, match=r"\[g2-standard-4, nvidia-l4\] features are not compat"):
        provider.create(spec, "us-east1-c")
    assert gce_api.instances == {}


def test_g2_sends_no_guest_accelerators(
    provider_spec: Callable[..., tuple[GcpProvider, LaunchSpec]], gce_api: GceFake
) -> None:
    provider, spec = provider_spec(machine_type="g2-standard-24", zones=["us-east1-c"])
    assert provider.gpu_request(spec.options) is not None
    assert (spec.options.gpu.name, spec.options.gpu.count) == ("nvidia-l4", 2)
    provider.create(spec, "us-east1-c")
    (insert,) = [r for r in gce_api.calls("POST", "/instances")]
    assert "guestAccelerators" not in insert.body
    (instance,) = gce_api.instances.values()
    assert instance["guestAccelerators"][0]["acceleratorCount"] == 2


def test_unknown_field_is_a_400_in_googles_shape(
    launch: Any, cli: Any, gce_api: GceFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for a provider bug (a misspelt field): the fake answers as Google does."""
    real = resources.instance_body

    def misspelt(*args: Any) -> dict[str, Any]:
        body = real(*args)
        body["scheduling"]["onHostMaintainance"] = "TERMINATE"
        return body

    monkeypatch.setattr(resources, "instance_body", misspelt)
    line = one_line_refusal(launch('zones = ["us-east1-c"]'), cli, gce_api)
    assert "Unknown name \"onHostMaintainance\" at 'resource.scheduling'" in line
    (refused,) = [r for r in gce_api.calls("POST") if r.path.endswith("/instances")]
    assert refused.body["name"] == "nb", "the insert reached the fake and was refused there"


def test_missing_service_account_user_is_explained(launch: Any, cli: Any, gce_api: GceFake) -> None:
    gce_api.faults.missing_service_account_user = True
    line = one_line_refusal(launch('zones = ["us-east1-c"]'), cli, gce_api)
    assert "may not attach the instance's service account" in line
    assert "roles/iam.serviceAccountUser" in line and "scopes = []" in line


def test_os_login_project_ignores_ssh_keys_unless_the_instance_turns_it_off(
    provider_spec: Callable[..., tuple[GcpProvider, LaunchSpec]], gce_api: GceFake
) -> None:
    gce_api.set_project_metadata("enable-oslogin", "TRUE")
    provider, spec = provider_spec(zones=["us-east1-c"])
    provider.create(spec, "us-east1-c")
    (instance,) = gce_api.instances.values()
    assert gce_api.accepted_keys(instance) == [spec.ssh_public_key.strip()]
    instance["metadata"]["items"] = [
        i for i in instance["metadata"]["items"] if i["key"] != "enable-oslogin"
    ]
    assert gce_api.accepted_keys(instance) == [], "OS Login ignores ssh-keys"


@pytest.mark.bed
def test_os_login_key_refused_by_the_real_sshd_names_both_fixes(
    provider_spec: Callable[..., tuple[GcpProvider, LaunchSpec]],
    gce_api: GceFake,
    ssh_host: Any,
) -> None:
    """With ``os_login = true`` the instance sends no ssh-keys; the fake publishes what the
    guest would accept (nothing) to the bed's sshd, which then refuses orchestrate's key."""
    keys = ssh_host.sshd.workdir / "authorized_keys"
    saved = keys.read_text()
    gce_api.set_project_metadata("enable-oslogin", "TRUE")
    gce_api.authorized_keys_file = keys
    try:
        provider, spec = provider_spec(zones=["us-east1-c"], os_login=True)
        record = provider.create(spec, "us-east1-c")
        assert keys.read_text() == ""
        with pytest.raises(HostError) as caught:
            Session.connect(
                ssh_host.address,
                ssh_host.port,
                ssh_host.user,
                ssh_host.key_path,
                pinned_host_key=None,
                deadline_s=1.0,
            )
        line = caught.value.line()
        assert "refused the SSH key" in line and record.zone == "us-east1-c"
        assert "enable-oslogin=FALSE" in line and "os_login = true" in line
    finally:
        keys.write_text(saved)


def test_report_discovery_revision_and_catalog_date(record_property: Any) -> None:
    """A report, not a check: which API surface the fake enforces and how old the catalog is."""
    record_property("compute_discovery_revision", discovery.revision())
    record_property("gpu_catalog_date", gpu_catalog.source()["date"])
    print(
        f"compute v1 discovery revision {discovery.revision()}; GPU catalog "
        f"{gpu_catalog.source()['date']} ({gpu_catalog.source()['repository']})"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b["disks"][0].update(boot="yes"),
            "Invalid value at 'resource.disks[0].boot' (TYPE_BOOL)",
        ),
        (lambda b: b.pop("name"), "Required field 'resource.name' not specified"),
        (lambda b: b["scheduling"].update(onHostMaintenance="SOMETIMES"), "(TYPE_ENUM)"),
        (
            lambda b: b.update(guestAccelerator=[]),
            "Unknown name \"guestAccelerator\" at 'resource'",
        ),
    ],
)
def test_wrong_type_missing_field_and_unknown_field_get_googles_400(
    provider_spec: Callable[..., tuple[GcpProvider, LaunchSpec]],
    gce_api: GceFake,
    change: Callable[[dict[str, Any]], Any],
    message: str,
) -> None:
    provider, spec = provider_spec(zones=["us-east1-c"])
    _, api = provider.connect(spec.options)
    body = resources.instance_body(spec, spec.options, "us-east1-c")
    change(body)
    with pytest.raises(CreateRefused) as caught:
        api.request("POST", "/zones/us-east1-c/instances", body, context="creating nb")
    assert message in caught.value.line() and "\n" not in caught.value.line()
    assert gce_api.instances == {}


def test_schema_errors_have_googles_shape(gce_api: GceFake) -> None:
    """The body a client library reads: code, message, status and the field violated."""
    from tests.bed.gce_fake import ApiError, _check_schema

    with pytest.raises(ApiError) as caught:
        _check_schema("compute.firewalls.insert", {"name": "x", "alowed": []})
    error = caught.value.body()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["errors"][0]["reason"] == "invalid"
    (violation,) = error["details"][0]["fieldViolations"]
    assert violation["field"] == "resource" and "alowed" in violation["description"]
