"""The fake GCE API, driven by libcloud's real GCENodeDriver over real HTTP on loopback.

These tests pin the fake's behaviour (what the provider tests rely on): the proof that
libcloud lists zones and creates an instance through it, and each failure switch.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api import gpu_catalog

from tests.bed.fixtures_gce import generate_rsa_key, write_service_account_file
from tests.bed.gce_fake import GceFake, gpu_quota_metric


def redirected_driver_class(fake: GceFake) -> Any:
    """libcloud's driver class with both API and token endpoint redirected to the fake."""
    gce: Any = importlib.import_module("libcloud.compute.drivers.gce")  # typed loosely

    class RedirectedDriver(gce.GCENodeDriver):  # type: ignore[misc, unused-ignore]
        def _ex_connection_class_kwargs(self) -> dict[str, Any]:
            return {**super()._ex_connection_class_kwargs(), "url": fake.endpoint}

    return RedirectedDriver


def make_driver(fake: GceFake, credentials: Path, **kwargs: Any) -> Any:
    """A driver signed in with a service-account key file (token cache: none)."""
    info = json.loads(credentials.read_text())
    driver = redirected_driver_class(fake)(
        info["client_email"],
        info,
        project=fake.project,
        auth_type="SA",
        credential_file=os.devnull,
        **kwargs,
    )
    driver.connection.poll_interval = 0.01
    return driver


def ubuntu(driver: Any) -> Any:
    return driver.ex_get_image_from_family(
        "ubuntu-2204-lts", ex_project_list=["ubuntu-os-cloud"], ex_standard_projects=False
    )


def create_t4(driver: Any, name: str = "bed-1", zone: str = "us-east1-d") -> Any:
    return driver.create_node(
        name,
        "n1-standard-2",
        ubuntu(driver),
        location=zone,
        ex_accelerator_type="nvidia-tesla-t4",
        ex_accelerator_count=1,
        ex_on_host_maintenance="TERMINATE",
        ex_automatic_restart=True,
        ex_disk_size=50,
        ex_labels={"orchestrate": "1"},
    )


def test_libcloud_lists_zones_and_creates_an_instance(
    gce_api: GceFake, gce_credentials: Path
) -> None:
    driver = make_driver(gce_api, gce_credentials)
    zones = {z.name for z in driver.list_locations()}
    assert {"us-east1-c", "us-east1-d", "us-central1-a", "europe-west1-b"} <= zones

    node = create_t4(driver)

    assert node.state == "running"
    assert node.public_ips == ["127.0.0.1"]
    assert node.extra["zone"].name == "us-east1-d"
    stored = gce_api.instances["bed-1"]
    assert stored["selfLink"].startswith(
        "https://www.googleapis.com/compute/v1/projects/orchestrate-test/zones/us-east1-d/"
    )
    assert stored["guestAccelerators"][0]["acceleratorType"].endswith("nvidia-tesla-t4")
    assert stored["scheduling"]["onHostMaintenance"] == "TERMINATE"
    (insert,) = gce_api.calls("POST", "/zones/us-east1-d/instances")
    assert insert.body["name"] == "bed-1"
    assert gce_api.calls("POST", "/token"), "the token exchange went to the fake"
    assert [n.name for n in driver.list_nodes()] == ["bed-1"]


def test_catalog_quotas_and_aggregated_lists(gce_api: GceFake, gce_credentials: Path) -> None:
    driver = make_driver(gce_api, gce_credentials)
    region = driver.ex_get_region("us-east1")
    metrics = {q["metric"]: q for q in region.quotas}
    assert metrics["NVIDIA_T4_GPUS"]["limit"] > 0
    project_quotas = {q["metric"] for q in driver.ex_get_project().quotas}
    assert "GPUS_ALL_REGIONS" in project_quotas
    assert driver.ex_get_size("g2-standard-4", "us-central1-a").extra["guestCpus"] == 4
    assert driver.ex_get_disktype("pd-balanced", "us-west1-b").name == "pd-balanced"
    offered = driver.connection.request_aggregated_items("acceleratorTypes")["items"]
    t4_zones = sorted(
        scope.split("/")[1]
        for scope, value in offered.items()
        if any(a["name"] == "nvidia-tesla-t4" for a in value.get("acceleratorTypes", []))
    )
    assert t4_zones == gpu_catalog.gce_offer_zones("nvidia-tesla-t4"), "offers follow the catalog"
    assert {"europe-west1-b", "us-central1-a", "us-east1-c", "us-east1-d"} <= set(t4_zones)
    assert not any(
        a["name"] == "nvidia-tesla-k80"
        for value in offered.values()
        for a in value.get("acceleratorTypes", [])
    ), "GCE retired the K80: no zone offers it"
    assert ubuntu(driver).extra["family"] == "ubuntu-2204-lts"
    assert gpu_quota_metric("nvidia-tesla-t4") == "NVIDIA_T4_GPUS"
    assert gpu_quota_metric("nvidia-l4", preemptible=True) == "PREEMPTIBLE_NVIDIA_L4_GPUS"


def test_gpu_instance_without_terminate_is_refused(gce_api: GceFake, gce_credentials: Path) -> None:
    from libcloud.common.google import InvalidRequestError

    driver = make_driver(gce_api, gce_credentials)
    with pytest.raises(InvalidRequestError, match="live migration"):
        driver.create_node(
            "bed-2",
            "n1-standard-2",
            ubuntu(driver),
            location="us-east1-c",
            ex_accelerator_type="nvidia-tesla-t4",
            ex_accelerator_count=1,
        )


def test_stockout_in_a_zone_fails_the_operation(gce_api: GceFake, gce_credentials: Path) -> None:
    from libcloud.common.google import GoogleBaseError

    driver = make_driver(gce_api, gce_credentials)
    gce_api.faults.stockout_zones.add("us-east1-d")
    with pytest.raises(GoogleBaseError) as caught:
        create_t4(driver)
    assert caught.value.code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert "bed-1" not in gce_api.instances
    assert create_t4(driver, zone="us-east1-c").extra["zone"].name == "us-east1-c"


def test_stockout_on_insert_answers_503_with_details(
    gce_api: GceFake, gce_credentials: Path
) -> None:
    from libcloud.common.google import GoogleBaseError

    driver = make_driver(gce_api, gce_credentials)
    gce_api.faults.stockout_zones.add("us-east1-d")
    gce_api.faults.stockout_on_insert = True
    with pytest.raises(GoogleBaseError) as caught:
        create_t4(driver)
    assert caught.value.http_code == 503
    assert caught.value.code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"


def test_regional_and_global_gpu_quota(gce_api: GceFake, gce_credentials: Path) -> None:
    from libcloud.common.google import QuotaExceededError

    driver = make_driver(gce_api, gce_credentials)
    gce_api.faults.exhausted_quota_regions.add("us-east1")
    region_quotas = {q["metric"]: q for q in driver.ex_get_region("us-east1").quotas}
    k80 = region_quotas["NVIDIA_T4_GPUS"]
    assert k80["limit"] - k80["usage"] == 0
    with pytest.raises(QuotaExceededError, match=r"NVIDIA_T4_GPUS.*us-east1"):
        create_t4(driver)
    create_t4(driver, zone="us-central1-a")

    gce_api.faults.zero_global_gpu_quota = True
    quotas = {q["metric"]: q for q in driver.ex_get_project().quotas}
    assert quotas["GPUS_ALL_REGIONS"]["limit"] == 0
    with pytest.raises(QuotaExceededError, match="GPUS_ALL_REGIONS"):
        create_t4(driver, name="bed-3", zone="europe-west1-b")


def test_operation_latency_and_wait(gce_api: GceFake, gce_credentials: Path) -> None:
    driver = make_driver(gce_api, gce_credentials)
    gce_api.faults.operation_latency = 0.2
    node = create_t4(driver)
    gce_api.faults.operation_latency = 0.3
    started = time.monotonic()
    op = driver.connection.request(
        f"/zones/us-east1-d/instances/{node.name}/stop", method="POST"
    ).object
    assert op["status"] == "PENDING"
    assert gce_api.instances[node.name]["status"] == "STOPPING"
    done = driver.connection.request(op["selfLink"] + "/wait", method="POST").object
    assert done["status"] == "DONE"
    assert time.monotonic() - started >= 0.25
    assert gce_api.instances[node.name]["status"] == "TERMINATED"


def test_one_server_error_then_success(gce_api: GceFake, gce_credentials: Path) -> None:
    from libcloud.common.google import GoogleBaseError

    driver = make_driver(gce_api, gce_credentials)
    gce_api.faults.server_errors = 1
    with pytest.raises(GoogleBaseError) as caught:
        driver.list_locations()
    assert caught.value.http_code == 503
    assert len(driver.list_locations()) >= 6


def test_auth_failure_and_unknown_key(
    gce_api: GceFake, gce_credentials: Path, tmp_path: Path
) -> None:
    from libcloud.common.google import GoogleBaseError, InvalidRequestError

    driver = make_driver(gce_api, gce_credentials)
    gce_api.faults.auth_failure = True
    with pytest.raises(GoogleBaseError) as caught:
        driver.list_locations()
    assert caught.value.http_code == 401
    with pytest.raises(InvalidRequestError, match="Invalid JWT Signature"):
        make_driver(gce_api, gce_credentials)

    gce_api.faults.auth_failure = False
    stranger = write_service_account_file(
        tmp_path / "other.json", gce_api, generate_rsa_key(), register=False
    )
    with pytest.raises(InvalidRequestError, match="Invalid JWT Signature"):
        make_driver(gce_api, stranger)


def test_changed_ip_after_stop_start(gce_api: GceFake, gce_credentials: Path) -> None:
    gce_api.instance_addresses = ["127.0.0.1", "127.0.0.2"]
    gce_api.faults.change_ip_on_start = True
    driver = make_driver(gce_api, gce_credentials)
    node = create_t4(driver)
    assert node.public_ips == ["127.0.0.1"]
    driver.ex_stop_node(node)
    assert [ip for ip in driver.ex_get_node(node.name, "us-east1-d").public_ips if ip] == []
    driver.ex_start_node(node)
    assert driver.ex_get_node(node.name, "us-east1-d").public_ips == ["127.0.0.2"]


def test_firewalls_filters_and_delete(gce_api: GceFake, gce_credentials: Path) -> None:
    driver = make_driver(gce_api, gce_credentials)
    firewall = driver.ex_create_firewall(
        "bed-ssh", [{"IPProtocol": "tcp", "ports": ["22"]}], target_tags=["bed-ssh"]
    )
    assert firewall.allowed == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert gce_api.firewalls["bed-ssh"]["targetTags"] == ["bed-ssh"]
    create_t4(driver)
    create_t4(driver, name="other", zone="us-central1-a").extra["labels"]
    labelled = driver.connection.request(
        "/aggregated/instances", params={"filter": 'labels.orchestrate = "1"'}
    ).object["items"]
    names = [i["name"] for v in labelled.values() for i in v.get("instances", [])]
    assert sorted(names) == ["bed-1", "other"]
    by_name = driver.connection.request(
        "/aggregated/instances", params={"filter": "name = other"}
    ).object["items"]
    assert [i["name"] for v in by_name.values() for i in v.get("instances", [])] == ["other"]
    driver.destroy_node(driver.ex_get_node("bed-1", "us-east1-d"))
    driver.ex_destroy_firewall(firewall)
    assert "bed-1" not in gce_api.instances and "bed-ssh" not in gce_api.firewalls
    assert "bed-1" not in gce_api.disks


def test_application_default_credentials_refresh_grant(
    gce_api: GceFake, gce_adc_credentials: Path, tmp_path: Path
) -> None:
    """The authorized_user flow: libcloud's installed-app auth refreshes a stored token."""
    info = json.loads(gce_adc_credentials.read_text())
    cache = tmp_path / "token-cache.json"
    cache.write_text(
        json.dumps(
            {
                "access_token": "",
                "refresh_token": info["refresh_token"],
                "expire_time": "1970-01-01T00:00:00Z",
            }
        )
    )

    driver = redirected_driver_class(gce_api)(
        info["client_id"],
        info["client_secret"],
        project=gce_api.project,
        auth_type="IA",
        credential_file=str(cache),
    )
    assert len(driver.list_locations()) >= 6
    (grant,) = gce_api.calls("POST", "/token")
    assert grant.body == {"grant_type": "refresh_token"}


def test_reset_forgets_everything(gce_api: GceFake, gce_credentials: Path) -> None:
    driver = make_driver(gce_api, gce_credentials)
    create_t4(driver)
    gce_api.faults.stockout_zones.add("us-east1-c")
    gce_api.reset()
    assert gce_api.instances == {} and gce_api.requests == []
    assert gce_api.faults.stockout_zones == set()
    with pytest.raises(Exception, match=r"401|invalid authentication"):
        driver.list_locations()  # issued tokens are forgotten too
