"""The GCP provider against the fake Compute API: libcloud's real driver, real HTTP, loopback.

Each test builds a fresh `GcpProvider` (its caches are per process in real use) and a profile
table pointing `api_endpoint` at the fake and `credentials` at a generated key file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api import gpu_catalog
from orchestrate.core.api.errors import AuthError, NotFound, ProfileError, QuotaError
from orchestrate.core.api.provider import RUNNING, STOPPED, LaunchSpec
from orchestrate.core.cloud.failover import create_with_failover
from orchestrate.plugins.providers.gcp import GcpOptions, GcpProvider
from orchestrate.plugins.providers.gcp.firewall import managed_instances
from orchestrate.plugins.providers.gcp.resources import SSH_TAG, firewall_name

from tests.bed.fixtures_gce import write_private_file
from tests.bed.gce_fake import GceFake
from tests.support.gcp_provider import PUBLIC_KEY, Events

WHERE = "orchestrate.toml:7: [profiles.t.gcp]"
FIREWALL = firewall_name("default")


@pytest.fixture
def provider() -> GcpProvider:
    return GcpProvider(retry_deadline_s=5.0)


def make_spec(
    provider: GcpProvider,
    gcp_table: dict[str, Any],
    name: str = "nb1",
    startup_script: str | None = None,
    **keys: Any,
) -> LaunchSpec:
    options = provider.validate_options({**gcp_table, **keys}, WHERE)
    return LaunchSpec(
        name=name,
        provider="gcp",
        options=options,
        ssh_user="orchestrate",
        ssh_public_key=PUBLIC_KEY,
        gpu=provider.gpu_request(options),
        startup_script=startup_script,
    )


def inserts(fake: GceFake, zone: str = "") -> list[Any]:
    return [r for r in fake.calls("POST", f"/zones/{zone}") if r.path.endswith("/instances")]


def test_create_t4_sends_the_seed_instance(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    spec = make_spec(provider, gcp_table, startup_script="#!/bin/bash\necho host setup\n")
    events = Events()
    record = create_with_failover(provider, spec, events)

    (insert,) = inserts(gce_api)
    body = insert.body
    assert insert.path.endswith("/zones/us-east1-c/instances"), "nearest zone first"
    assert body["guestAccelerators"] == [
        {"acceleratorType": "zones/us-east1-c/acceleratorTypes/nvidia-tesla-t4",
         "acceleratorCount": 1}
    ]  # fmt: skip
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True}
    assert body["machineType"] == "zones/us-east1-c/machineTypes/n1-standard-2"
    init = body["disks"][0]["initializeParams"]
    assert init["diskSizeGb"] == "50"
    assert init["sourceImage"] == "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts"
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["ssh-keys"] == f"orchestrate:{PUBLIC_KEY}"
    assert metadata["enable-oslogin"] == "FALSE", "an OS Login project would ignore ssh-keys"
    assert metadata["startup-script"].startswith("#!/bin/bash")
    assert body["labels"]["orchestrate"] == "1"
    assert body["labels"]["orchestrate-name"] == "nb1"
    assert body["tags"] == {"items": [SSH_TAG]}
    assert body["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"

    assert record.status == RUNNING
    assert record.zone == "us-east1-c"
    assert record.address == "127.0.0.1"
    assert record.ssh_user == "orchestrate" and record.ssh_port == 22
    assert record.cloud_id == gce_api.instances["nb1"]["selfLink"]
    assert record.extra["firewall"] == FIREWALL
    assert record.extra["api_endpoint"] == gce_api.endpoint
    assert events.kinds() == ["try", "created"]


def test_firewall_opens_tcp_22_only_and_is_reused(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    create_with_failover(provider, make_spec(provider, gcp_table), Events())
    rule = gce_api.firewalls[FIREWALL]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert rule["direction"] == "INGRESS" and rule["targetTags"] == [SSH_TAG]

    other = GcpProvider(retry_deadline_s=5.0)  # no cache: it must find the rule on the API
    create_with_failover(other, make_spec(other, gcp_table, name="nb2"), Events())
    assert len(gce_api.calls("POST", "/global/firewalls")) == 1
    assert list(gce_api.firewalls) == [FIREWALL]


def test_stockout_in_first_zone_creates_in_the_second(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.stockout_zones.add("us-east1-d")
    gce_api.faults.operation_latency = 0.05
    spec = make_spec(provider, gcp_table, zones=["us-east1-d", "us-central1-a"])
    events = Events()
    record = create_with_failover(provider, spec, events)
    assert record.zone == "us-central1-a"
    assert events.kinds() == ["try", "stockout", "try", "created"]
    assert [r.path.split("/")[-2] for r in inserts(gce_api)] == ["us-east1-d", "us-central1-a"]


def test_synchronous_stockout_503_is_not_retried(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.stockout_zones.add("us-east1-d")
    gce_api.faults.stockout_on_insert = True
    spec = make_spec(provider, gcp_table, zones=["us-east1-d", "us-east1-c"])
    record = create_with_failover(provider, spec, Events())
    assert record.zone == "us-east1-c"
    assert len(inserts(gce_api, "us-east1-d")) == 1


def test_regional_quota_skips_the_region(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.exhausted_quota_regions.add("us-east1")
    events = Events()
    record = create_with_failover(provider, make_spec(provider, gcp_table), events)
    assert record.zone == "us-central1-a"
    assert events.kinds() == ["try", "quota", "skip", "try", "created"]
    assert not inserts(gce_api, "us-east1"), "preflight's quota reading saved the insert"


def test_regional_quota_error_from_the_api_skips_the_region(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.exhausted_quota_regions.add("us-east1")
    events = Events()
    spec = make_spec(provider, gcp_table)
    record = create_with_failover(provider, spec, events, preflight=False)
    assert record.zone == "us-central1-a"
    assert [r.path.split("/")[-2] for r in inserts(gce_api)] == ["us-east1-c", "us-central1-a"]
    quota_message = dict(events)["quota"]
    assert "NVIDIA_T4_GPUS" in quota_message


def test_zero_global_gpu_quota_stops_before_any_insert(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.zero_global_gpu_quota = True
    with pytest.raises(QuotaError) as caught:
        create_with_failover(provider, make_spec(provider, gcp_table), Events())
    assert caught.value.scope == "cloud"
    line = caught.value.line()
    assert "GPUS_ALL_REGIONS" in line
    assert f"https://console.cloud.google.com/iam-admin/quotas?project={gce_api.project}" in line
    assert "\n" not in line
    assert inserts(gce_api) == []


def test_global_quota_error_from_the_api_stops_the_loop(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.zero_global_gpu_quota = True
    with pytest.raises(QuotaError) as caught:
        create_with_failover(provider, make_spec(provider, gcp_table), Events(), preflight=False)
    assert caught.value.scope == "cloud"
    assert len(inserts(gce_api)) == 1


def test_stop_start_refreshes_the_address(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.instance_addresses = ["127.0.0.1", "127.0.0.2"]
    gce_api.faults.change_ip_on_start = True
    record = create_with_failover(provider, make_spec(provider, gcp_table), Events())
    assert record.address == "127.0.0.1"

    later = GcpProvider(retry_deadline_s=5.0)  # works from the stored record alone
    later.stop(record)
    stopped = later.get(record)
    assert stopped.status == STOPPED and stopped.address is None
    started = later.start(stopped)
    assert started.status == RUNNING
    assert started.address == "127.0.0.2"


def test_destroy_removes_instance_and_last_firewall_user(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    first = create_with_failover(provider, make_spec(provider, gcp_table), Events())
    second = create_with_failover(provider, make_spec(provider, gcp_table, name="nb2"), Events())
    provider.destroy(first)
    assert "nb1" not in gce_api.instances and "nb1" not in gce_api.disks
    assert FIREWALL in gce_api.firewalls, "nb2 still uses the rule"
    provider.destroy(second)
    assert gce_api.instances == {}
    assert FIREWALL not in gce_api.firewalls
    provider.destroy(second)  # gone already is not an error
    with pytest.raises(NotFound):
        provider.get(first)


def test_get_many_reads_every_instance_in_one_listing(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    """`status` over many rows: one aggregated listing, no read per instance; an instance
    deleted behind orchestrate's back comes back as None, a stopped one as stopped."""
    records = [
        create_with_failover(provider, make_spec(provider, gcp_table, name=n), Events())
        for n in ("nb1", "nb2", "nb3")
    ]
    later = GcpProvider(retry_deadline_s=5.0)  # from the stored records alone
    later.stop(records[1])
    later.destroy(records[2])
    before = len(gce_api.requests)

    found = later.get_many(records)

    asked = gce_api.requests[before:]
    assert [r.path.rsplit("/projects/", 1)[-1] for r in asked if r.method == "GET"] == [
        f"{gce_api.project}/aggregated/instances"
    ], asked
    assert found["nb1"] is not None and found["nb1"].status == RUNNING
    assert found["nb1"].cloud_id == records[0].cloud_id
    assert found["nb1"].ssh_user == records[0].ssh_user
    assert found["nb2"] is not None and found["nb2"].status == STOPPED
    assert found["nb3"] is None


def test_list_and_find_see_only_orchestrate_instances(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    spec = make_spec(provider, gcp_table)
    assert provider.find(spec) is None
    create_with_failover(provider, spec, Events())
    _, api = provider.connect(spec.options)
    foreign = {
        "name": "someone-else",
        "machineType": "zones/us-west1-b/machineTypes/n1-standard-2",
        "disks": [{"boot": True, "initializeParams": {
            "sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
    }  # fmt: skip
    api.request("POST", "/zones/us-west1-b/instances", foreign, context="test")
    assert "someone-else" in gce_api.instances
    assert [i["name"] for i in managed_instances(api)] == ["nb1"], "by label, not by name"
    found = provider.find(spec)
    assert found is not None and found.zone == "us-east1-c"


def test_cpu_host_has_no_accelerator_and_ignores_gpu_quota(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.zero_global_gpu_quota = True
    spec = make_spec(provider, gcp_table, accelerator="none", zone="us-west1-b")
    assert spec.gpu is None
    record = create_with_failover(provider, spec, Events())
    (insert,) = inserts(gce_api)
    assert "guestAccelerators" not in insert.body
    assert insert.body["scheduling"]["onHostMaintenance"] == "MIGRATE"
    assert record.zone == "us-west1-b"


def test_server_error_is_retried(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    gce_api.faults.server_errors = 1
    gce_api.faults.server_error_path = "/instances"
    record = create_with_failover(provider, make_spec(provider, gcp_table), Events())
    assert record.status == RUNNING
    assert len(inserts(gce_api)) == 2, "the 503 insert was sent again"


def test_missing_bad_and_refused_credentials_are_one_line_auth_errors(
    provider: GcpProvider,
    gcp_table: dict[str, Any],
    gce_api: GceFake,
    tmp_path: Path,
    gce_credentials: Path,
) -> None:
    from tests.bed.fixtures_gce import generate_rsa_key, write_service_account_file

    unknown_key = write_service_account_file(
        tmp_path / "revoked.json", gce_api, generate_rsa_key(), register=False
    )
    not_json = tmp_path / "key.p12"
    not_json.write_bytes(b"\x30\x82binary")
    wrong_type = write_private_file(tmp_path / "x.json", {"type": "external_account"})
    bad_pem = json.loads(gce_credentials.read_text())
    bad_pem["private_key"] = (
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    )
    bad_pem_file = write_private_file(tmp_path / "bad-pem.json", bad_pem)
    cases = {
        str(tmp_path / "missing.json"): "does not exist",
        str(unknown_key): "were refused: Invalid JWT Signature.",
        str(not_json): "is not JSON",
        str(wrong_type): "expected service_account or authorized_user",
        str(bad_pem_file): "the key cannot be used",
    }
    secret_lines = [
        line
        for line in json.loads(unknown_key.read_text())["private_key"].splitlines()
        if "-----" not in line
    ]
    for path, expected in cases.items():
        spec = make_spec(GcpProvider(), {**gcp_table, "credentials": path})
        with pytest.raises(AuthError) as caught:
            GcpProvider(retry_deadline_s=1.0).preflight(spec)
        line = caught.value.line()
        assert expected in line and path in line
        assert "\n" not in line
        assert not any(secret in line for secret in secret_lines)
    gce_api.faults.auth_failure = True
    with pytest.raises(AuthError, match="were refused"):
        provider.preflight(make_spec(provider, gcp_table))
    assert inserts(gce_api) == []


def test_application_default_credentials_work(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_adc_credentials: Path, gce_api: GceFake
) -> None:
    spec = make_spec(provider, {**gcp_table, "credentials": str(gce_adc_credentials)})
    record = create_with_failover(provider, spec, Events())
    assert record.address == "127.0.0.1"
    grants = [r.body["grant_type"] for r in gce_api.calls("POST", "/token")]
    assert grants == ["refresh_token"]


def test_plan_shows_requests_without_secrets_or_network(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake, gce_credentials: Path
) -> None:
    spec = make_spec(
        provider, gcp_table, startup_script="#!/bin/sh\necho setup\n", zone="us-east1-d"
    )
    plan = provider.plan(spec)
    shown = json.dumps([[p.method, p.path, p.body] for p in plan])
    shown += json.dumps(provider.redacted_options(spec.options))

    key = json.loads(gce_credentials.read_text())["private_key"]
    body_lines = [line for line in key.splitlines() if line and "-----" not in line]
    assert body_lines and not any(line in shown for line in body_lines)
    assert "PRIVATE KEY" not in shown and "private_key" not in shown
    assert str(gce_credentials) in shown, "the path is shown, never the content"
    assert gce_api.requests == [], "--dry-run talks to no API"

    methods = [(p.method, p.path) for p in plan]
    base = f"/compute/v1/projects/{gce_api.project}"
    assert ("POST", f"{base}/global/firewalls") in methods
    assert methods[-2] == ("POST", f"{base}/zones/us-east1-d/instances")
    insert = plan[-2].body
    assert insert is not None
    items = {i["key"]: i["value"] for i in insert["metadata"]["items"]}
    assert items["ssh-keys"].endswith(PUBLIC_KEY)
    assert items["startup-script"] == "#!/bin/sh\necho setup\n"


def test_plan_needs_no_credentials(provider: GcpProvider, tmp_path: Path) -> None:
    options = provider.validate_options({"credentials": str(tmp_path / "none.json")}, WHERE)
    spec = LaunchSpec("nb1", "gcp", options, "orchestrate", PUBLIC_KEY)
    plan = provider.plan(spec)
    assert plan[-2].path == "/compute/v1/projects/PROJECT/zones/ZONE/instances"


def test_validate_options_rejects_unknown_key_and_wrong_type(provider: GcpProvider) -> None:
    with pytest.raises(ProfileError) as caught:
        provider.validate_options({"machine_typo": "n1-standard-2"}, WHERE)
    assert WHERE in caught.value.line() and "'machine_typo'" in caught.value.line()
    assert "machine_type" in caught.value.line(), "suggests the close key"
    with pytest.raises(ProfileError) as caught:
        provider.validate_options({"disk_gb": "50"}, WHERE)
    assert f"{WHERE}: disk_gb must be an integer" in caught.value.line()
    with pytest.raises(ProfileError, match="zones\\[1\\]"):
        provider.validate_options({"zones": ["us-east1-d", 3]}, WHERE)
    with pytest.raises(ProfileError, match="zone or zones"):
        provider.validate_options({"zone": "us-east1-d", "zones": ["us-east1-c"]}, WHERE)
    with pytest.raises(ProfileError, match="spot or preemptible"):
        provider.validate_options({"spot": True, "preemptible": True}, WHERE)
    with pytest.raises(ProfileError, match="accelerator_count"):
        provider.validate_options({"accelerator_count": 3}, WHERE)
    with pytest.raises(ProfileError, match=r"labels\.orchestrate"):
        provider.validate_options({"labels": {"orchestrate": "x"}}, WHERE)
    with pytest.raises(ProfileError, match="no path"):
        provider.validate_options({"api_endpoint": "http://127.0.0.1:9/v1"}, WHERE)


def test_defaults_are_the_seed_instance(provider: GcpProvider) -> None:
    options = provider.validate_options({}, WHERE)
    assert isinstance(options, GcpOptions)
    assert (options.machine_type, options.accelerator, options.accelerator_count) == (
        "n1-standard-2",
        "nvidia-tesla-t4",
        1,
    )
    assert (options.image_project, options.image_family, options.disk_gb) == (
        "ubuntu-os-cloud",
        "ubuntu-2204-lts",
        50,
    )
    shown = provider.redacted_options(options)
    assert shown["accelerator"] == "nvidia-tesla-t4" and shown["zones"] == []


def test_overrides_zone_and_gpu(provider: GcpProvider) -> None:
    options = provider.validate_options({"zones": ["us-east1-c", "us-east1-d"]}, WHERE)
    changed = provider.apply_overrides(
        options, {"zone": "us-central1-b", "gpu": "nvidia-tesla-v100:2"}
    )
    assert changed.zones == ("us-central1-b",)
    gpu = provider.gpu_request(changed)
    assert gpu is not None and (gpu.name, gpu.count) == ("nvidia-tesla-v100", 2)
    assert provider.gpu_request(provider.apply_overrides(options, {"gpu": "none"})) is None
    assert provider.apply_overrides(options, {"zone": None, "gpu": None}) == options
    with pytest.raises(ProfileError, match="--image"):
        provider.apply_overrides(options, {"image": "x"})
    with pytest.raises(ProfileError, match="not possible"):
        provider.apply_overrides(options, {"gpu": "nvidia-tesla-t4:3"})


def test_candidate_zones_cheapest_then_nearest_region_first(
    provider: GcpProvider, gcp_table: dict[str, Any]
) -> None:
    # n1-standard-2 + T4 lists at the same price in us-east1, us-central1 and us-west1 in the
    # catalog snapshot, more in europe-west1: the home region leads the cheapest tier.
    zones = provider.candidate_zones(make_spec(provider, gcp_table))
    assert zones[:8] == [
        "us-east1-c", "us-east1-d", "us-central1-a", "us-central1-b", "us-central1-c",
        "us-central1-f", "us-west1-a", "us-west1-b",
    ]  # fmt: skip
    assert zones.index("europe-west1-b") > zones.index("us-west1-b")
    assert sorted(zones) == gpu_catalog.gce_offer_zones("nvidia-tesla-t4")
    europe = make_spec(provider, gcp_table, region="europe-west1")
    in_europe = provider.candidate_zones(europe)
    assert in_europe[0] == "us-central1-a", "a cheaper region wins over the home region"
    assert in_europe.index("europe-west1-b") < in_europe.index("asia-east1-a")
    listed = make_spec(provider, gcp_table, zones=["us-central1-a", "us-east1-d"])
    assert provider.candidate_zones(listed) == ["us-central1-a", "us-east1-d"]
    assert provider.region_of("europe-west1-b", None) == "europe-west1"


def test_preflight_rejects_a_zone_without_the_accelerator(
    provider: GcpProvider, gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    with pytest.raises(ProfileError, match="not offered in us-east1-b") as caught:
        provider.preflight(make_spec(provider, gcp_table, zone="us-east1-b"))
    assert "us-east1-c" in caught.value.line()
    with pytest.raises(ProfileError, match="image family ubuntu-9999"):
        provider.preflight(make_spec(provider, gcp_table, image_family="ubuntu-9999"))
    assert inserts(gce_api) == []


def test_importing_the_plugin_loads_no_libcloud() -> None:
    code = (
        "import sys, orchestrate.plugins.providers.gcp as g; g.GcpProvider();"
        "print([m for m in sys.modules if m.split('.')[0] in ('libcloud', 'cryptography')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_registered_through_the_provider_hook() -> None:
    """`orchestrate_register_providers` offers the gcp provider from the built-in module."""
    from orchestrate.core.wiring.registry import build_manager, providers

    pm = build_manager(builtins=("orchestrate.plugins.providers.gcp",))
    assert isinstance(providers(pm)["gcp"], GcpProvider)
