"""The AWS EC2 provider: options, dry-run plan, credentials, and the life cycle against moto.

The moto tests run libcloud's real EC2 driver over signed HTTP against moto's EC2 API on
127.0.0.1 (tests/support/moto_ec2.py), and check the result through boto3 against the same
server, so the provider's own parsing is not what judges it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import (
    AuthError,
    NotFound,
    OrchestrateError,
    ProfileError,
    QuotaError,
)
from orchestrate.core.api.provider import LaunchSpec
from orchestrate.core.cloud.failover import create_with_failover
from orchestrate.plugins.providers.aws import instance_types as types
from orchestrate.plugins.providers.aws.credentials import describe_credentials, load_credentials
from orchestrate.plugins.providers.aws.options import AwsOptions
from orchestrate.plugins.providers.aws.provider import AwsProvider

from tests.support.moto_ec2 import CANONICAL, Fault, MotoEc2, start_moto_ec2

JAMMY = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-{arch}-server-{date}"
WHERE = "orchestrate.toml:3: [profiles.gpu.aws]"


def _public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " orchestrate@test"


PUBLIC_KEY = _public_key()


def spec_for(options: AwsOptions, name: str = "nb", script: str | None = None) -> LaunchSpec:
    return LaunchSpec(
        name=name,
        provider="aws",
        options=options,
        ssh_user=options.ssh_user,
        ssh_public_key=PUBLIC_KEY,
        startup_script=script,
        labels={"owner": "tests"},
    )


# ---------------------------------------------------------------- options
def test_empty_table_launches_the_seed_machine() -> None:
    options = AwsProvider().validate_options({}, WHERE)
    assert options == AwsOptions()
    assert (options.region, options.instance_type, options.disk_gb) == (
        "us-east-1",
        "g4dn.xlarge",
        50,
    )
    assert options.gpu == p.GpuRequest("nvidia-tesla-t4", 1)
    assert (options.ami_owner, options.ssh_user, options.ssh_port) == (CANONICAL, "ubuntu", 22)
    assert "ubuntu-jammy-22.04" in options.ami_name


@pytest.mark.parametrize(
    ("instance_type", "gpu"),
    [
        ("g4dn.xlarge", ("nvidia-tesla-t4", 1)),
        ("g4dn.12xlarge", ("nvidia-tesla-t4", 4)),
        ("g5.xlarge", ("nvidia-a10g", 1)),
        ("g6.48xlarge", ("nvidia-l4", 8)),
        ("p4d.24xlarge", ("nvidia-tesla-a100", 8)),
        ("p5.48xlarge", ("nvidia-h100-80gb", 8)),
        ("t3.large", None),
        ("m5.xlarge", None),
    ],
)
def test_gpu_is_derived_from_the_instance_type(instance_type: str, gpu: Any) -> None:
    options = AwsProvider().validate_options({"instance_type": instance_type}, WHERE)
    expected = p.GpuRequest(*gpu) if gpu else None
    assert AwsProvider().gpu_request(options) == expected
    assert options.architecture == "x86_64"


def test_graviton_types_boot_arm64_images() -> None:
    assert types.architecture("t4g.large") == "arm64"
    assert types.architecture("m6gd.xlarge") == "arm64"
    assert types.architecture("g4dn.xlarge") == "x86_64"


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"instance_type": "g4ad.xlarge"}, "no GPU data"),
        ({"instance_type": "g5.3xlarge"}, "no GPU data"),
        ({"instance_type": "p2"}, "not an instance type"),
        ({"instance_type": "p2.xlarge"}, "EC2 retired p2 instances in 2024; use g4dn.xlarge"),
        ({"instance_type": "p3.2xlarge"}, "EC2 retired p3 instances in 2025; use g5.xlarge"),
        ({"instance_type": "p3dn.24xlarge"}, "retired p3dn instances in 2025; use p4d"),
        ({"instance_type": "g3.4xlarge"}, "EC2 retired g3 instances in 2025; use g4dn.xlarge"),
        ({"instance_type": "g3s.xlarge"}, "EC2 retired g3s instances in 2025; use g4dn"),
        ({"zones": ["us-west-2a"]}, "not in region 'us-east-1'"),
        ({"region": "us-east1"}, "not a region"),
        ({"zone": "us-east-1a", "zones": ["us-east-1b"]}, "zone or zones"),
        ({"zones": ["us-east-1a", "us-east-1a"]}, "twice"),
        (
            {"subnet_id": "subnet-0123456789abcdef0", "zones": ["us-east-1a", "us-east-1b"]},
            "pins one zone",
        ),
        ({"disk_gb": 4}, "between 8 and 16384"),
        ({"spot": "yes"}, "true or false"),
        ({"endpoint": "http://127.0.0.1:5000/path"}, "no path"),
        ({"ami": "ubuntu"}, "AMI id"),
        ({"instanc_type": "p2.xlarge"}, "did you mean 'instance_type'"),
    ],
)
def test_bad_tables_name_file_table_and_key(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ProfileError) as caught:
        AwsProvider().validate_options(table, WHERE)
    assert WHERE in caught.value.line() or "--" in caught.value.line()
    assert fragment in caught.value.line()


@pytest.mark.parametrize(
    ("gpu", "instance_type"),
    [
        ("t4", "g4dn.xlarge"),
        ("nvidia-tesla-t4:4", "g4dn.12xlarge"),
        ("a10g", "g5.xlarge"),
        ("l4:1", "g6.xlarge"),
        ("a100:8", "p4d.24xlarge"),
        ("none", "t3.large"),
    ],
)
def test_gpu_flag_picks_the_smallest_instance_type(gpu: str, instance_type: str) -> None:
    provider = AwsProvider()
    options = provider.apply_overrides(provider.validate_options({}, WHERE), {"gpu": gpu})
    assert options.instance_type == instance_type


def test_overrides_zone_and_refuse_what_aws_does_not_take() -> None:
    provider = AwsProvider()
    base = provider.validate_options({}, WHERE)
    assert provider.apply_overrides(base, {"zone": "us-east-1d", "gpu": None}).zones == (
        "us-east-1d",
    )
    with pytest.raises(ProfileError, match="not in region"):
        provider.apply_overrides(base, {"zone": "eu-west-1a"})
    with pytest.raises(ProfileError, match="no EC2 instance type has 3"):
        provider.apply_overrides(base, {"gpu": "t4:3"})
    with pytest.raises(ProfileError, match="--gpu k80: EC2 retired p2 instances in 2024"):
        provider.apply_overrides(base, {"gpu": "k80"})
    with pytest.raises(ProfileError, match="--gpu v100: EC2 retired p3 instances in 2025"):
        provider.apply_overrides(base, {"gpu": "v100:8"})
    with pytest.raises(ProfileError, match="no GPU called 'rtx-4090'"):
        provider.apply_overrides(base, {"gpu": "rtx-4090"})
    with pytest.raises(ProfileError, match="does not take --host"):
        provider.apply_overrides(base, {"host": "me@box"})


# ---------------------------------------------------------------- plan (dry run)
def test_plan_lists_the_api_actions_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANNOTSHOWN0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plan-secret-not-shown")
    provider = AwsProvider()
    options = provider.validate_options({"zones": ["us-east-1b", "us-east-1c"], "spot": True}, "t")
    plan = provider.plan(spec_for(options, script="#!/bin/sh\necho token=abc\n"))
    actions = [request.path.removeprefix("/?Action=") for request in plan]
    assert {request.method for request in plan} == {"GET"}  # libcloud signs a GET query
    assert actions == [
        "DescribeAvailabilityZones",
        "DescribeImages",
        "DescribeKeyPairs",
        "ImportKeyPair",
        "DescribeSubnets",
        "DescribeSecurityGroups",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "RunInstances",
        "DescribeInstances",
    ]
    run = plan[actions.index("RunInstances")].body
    assert run is not None
    assert run["InstanceType"] == "g4dn.xlarge"
    assert run["NetworkInterface.1.SubnetId"] == "<default subnet of us-east-1b>"
    assert run["BlockDeviceMapping.1.Ebs.VolumeSize"] == "50"
    assert run["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "stop"
    assert run["UserData"] == "<base64 of the 25-byte startup script>"
    ingress = plan[actions.index("AuthorizeSecurityGroupIngress")].body
    assert ingress is not None and ingress["IpPermissions.1.FromPort"] == "22"
    text = json.dumps([r.__dict__ for r in plan], default=str)
    for secret in (
        "AKIAPLANNOTSHOWN0000",
        "plan-secret-not-shown",
        "token=abc",
        PUBLIC_KEY.split()[1],
    ):
        assert secret not in text
    assert "SHA256:" in text


def test_plan_and_options_load_no_libcloud() -> None:
    probe = (
        "import sys\n"
        "from orchestrate.core.api.provider import LaunchSpec\n"
        "from orchestrate.plugins.providers.aws import AwsProvider\n"
        "p = AwsProvider(); o = p.validate_options({}, 'x')\n"
        f"p.plan(LaunchSpec('nb', 'aws', o, 'ubuntu', {PUBLIC_KEY!r}))\n"
        "p.redacted_options(o)\n"
        "print('libcloud' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------- credentials
def test_credentials_from_env_file_and_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    shared = tmp_path / "credentials"
    shared.write_text(
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n"
        "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = s2\n"
        "aws_session_token = tok\n[sso]\nsso_session = corp\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    assert load_credentials(None).access_key_id == "AKIADEFAULT"
    work = load_credentials("work")
    assert (work.access_key_id, work.session_token) == ("AKIAWORK", "tok")
    assert "s2" not in repr(work) and "tok" not in repr(work)
    assert load_credentials(str(shared)).access_key_id == "AKIADEFAULT"
    with pytest.raises(AuthError) as caught:
        load_credentials("sso")
    assert "export-credentials --profile sso" in caught.value.line()
    with pytest.raises(AuthError, match=r"no \[nope\] profile"):
        load_credentials("nope")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3")
    assert load_credentials(None).access_key_id == "AKIAENV"
    assert describe_credentials(None) == "environment (AWS_ACCESS_KEY_ID)"
    assert describe_credentials("work") == "profile work in the shared file"
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AuthError, match="only one of"):
        load_credentials(None)
    with pytest.raises(AuthError, match="does not exist"):
        load_credentials(str(tmp_path / "missing"))


# ---------------------------------------------------------------- moto
@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoEc2]:
    server = start_moto_ec2()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoEc2, monkeypatch: pytest.MonkeyPatch) -> MotoEc2:
    """A clean moto with Canonical's Ubuntu 22.04 images (two dates, two architectures), one
    look-alike from another account, and an access key in the environment."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMOTOTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    moto_server.add_image(
        JAMMY.format(arch="amd64", date="20240101"), created="2024-01-01T00:00:00"
    )
    moto_server.add_image(
        JAMMY.format(arch="amd64", date="20240301"), created="2024-03-01T00:00:00"
    )
    moto_server.add_image(
        JAMMY.format(arch="arm64", date="20240401"),
        architecture="arm64",
        created="2024-04-01T00:00:00",
    )
    moto_server.add_image(
        JAMMY.format(arch="amd64", date="20250101"),
        owner="111122223333",
        created="2025-01-01T00:00:00",
    )
    return moto_server


def boto(moto: MotoEc2) -> Any:
    import boto3

    return boto3.client(
        "ec2",
        endpoint_url=moto.endpoint,
        region_name=moto.region,
        aws_access_key_id="AKIAMOTOTEST",
        aws_secret_access_key="x",
    )


def provider_and_options(moto: MotoEc2, **table: Any) -> tuple[AwsProvider, AwsOptions]:
    provider = AwsProvider(sleep=lambda seconds: None)
    return provider, provider.validate_options({"endpoint": moto.endpoint, **table}, WHERE)


def test_create_g4dn_xlarge_with_key_group_and_user_data(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1c"])
    script = "#!/bin/sh\necho orchestrate\n"
    record = provider.create(spec_for(options, script=script), "us-east-1c")

    assert record.status == p.RUNNING and record.zone == "us-east-1c"
    assert record.address and record.ssh_user == "ubuntu" and record.ssh_port == 22
    assert record.extra["region"] == "us-east-1" and "moto-secret" not in json.dumps(record.extra)
    ec2 = boto(moto)
    instance = ec2.describe_instances(InstanceIds=[record.cloud_id])["Reservations"][0][
        "Instances"
    ][0]
    assert instance["InstanceType"] == "g4dn.xlarge"
    assert instance["PublicIpAddress"] == record.address
    newest_canonical = ec2.describe_images(
        Owners=[CANONICAL], Filters=[{"Name": "name", "Values": ["*amd64-server-20240301"]}]
    )["Images"][0]["ImageId"]
    assert instance["ImageId"] == newest_canonical  # not the newer look-alike, not arm64
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    # key pair imported from the user's public key, named after it
    (pair,) = ec2.describe_key_pairs()["KeyPairs"]
    assert instance["KeyName"] == pair["KeyName"] and pair["KeyName"].startswith("orchestrate-")
    # the security group opens tcp:22 only
    groups = instance["NetworkInterfaces"][0]["Groups"]
    (group,) = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in groups])[
        "SecurityGroups"
    ]
    assert group["GroupName"] == "orchestrate-ssh"
    assert [
        (r["IpProtocol"], r["FromPort"], r["ToPort"], [i["CidrIp"] for i in r["IpRanges"]])
        for r in group["IpPermissions"]
    ] == [("tcp", 22, 22, ["0.0.0.0/0"])]
    user_data = ec2.describe_instance_attribute(InstanceId=record.cloud_id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == script
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {"Name": "nb", "orchestrate": "1", "orchestrate-name": "nb", "owner": "tests"}
    (volume,) = ec2.describe_volumes()["Volumes"]
    assert (volume["Size"], volume["VolumeType"]) == (50, "gp3")

    # a second launch reuses key pair and group instead of importing or creating again
    before = (len(moto.sent("ImportKeyPair")), len(moto.sent("CreateSecurityGroup")))
    provider.create(spec_for(options, name="nb2"), "us-east-1c")
    assert (len(moto.sent("ImportKeyPair")), len(moto.sent("CreateSecurityGroup"))) == before
    assert not moto.sent("AuthorizeSecurityGroupIngress")[1:]


def test_stop_and_start_refresh_the_address(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1a"])
    record = provider.create(spec_for(options), "us-east-1a")
    provider.stop(record)
    stopped = provider.get(record)
    assert stopped.status == p.STOPPED and stopped.address is None
    started = provider.start(stopped)
    assert started.status == p.RUNNING
    assert started.address and started.address != record.address
    assert provider.get(started).address == started.address
    provider.stop(started)
    provider.stop(started)  # stopping a stopped instance is a no-op
    assert len(moto.sent("StopInstances")) == 2


def test_get_many_reads_every_instance_in_one_call(moto: MotoEc2) -> None:
    """`status` over many rows: one DescribeInstances for all; a terminated instance comes
    back as None without failing the call for the others, a stopped one as stopped."""
    provider, options = provider_and_options(moto, zones=["us-east-1a"])
    records = [provider.create(spec_for(options, name=n), "us-east-1a") for n in ("a", "b", "c")]
    provider.stop(records[1])
    provider.destroy(records[2])
    gone = dataclasses.replace(records[0], name="d", cloud_id="i-0123456789abcdef0")
    before = len(moto.sent("DescribeInstances"))

    found = AwsProvider(sleep=lambda seconds: None).get_many([*records, gone])

    assert len(moto.sent("DescribeInstances")) == before + 1
    assert found["a"] is not None and found["a"].status == p.RUNNING
    assert found["a"].address == records[0].address
    assert found["b"] is not None and found["b"].status == p.STOPPED
    assert found["c"] is None
    assert found["d"] is None, "an id EC2 never had is gone, not an error"


def test_capacity_error_moves_to_the_next_zone(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1a", "us-east-1b"])
    moto.faults.append(
        Fault(
            "RunInstances",
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone "
            "you requested (us-east-1a).",
            status=500,
            when=lambda params: (
                moto.zone_of_subnet(params["NetworkInterface.1.SubnetId"]) == "us-east-1a"
            ),
        )
    )
    events: list[tuple[str, str]] = []
    record = create_with_failover(
        provider, spec_for(options), lambda kind, message, data: events.append((kind, message))
    )
    assert record.zone == "us-east-1b"
    assert [kind for kind, _ in events] == ["try", "stockout", "try", "created"]
    assert "InsufficientInstanceCapacity" in events[1][1]
    assert len(moto.sent("RunInstances")) == 2  # capacity errors are not retried in place


def test_zones_default_to_every_available_zone_of_the_region(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto)
    spec = spec_for(options)
    provider.preflight(spec)
    zones = list(provider.candidate_zones(spec))
    assert zones == sorted(zones) and zones[0] == "us-east-1a" and len(zones) >= 3
    assert provider.region_of("us-east-1a", None) == "us-east-1"


def test_vcpu_limit_is_explained_and_ends_the_failover(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1a", "us-east-1b"])
    moto.faults.append(
        Fault(
            "RunInstances",
            "VcpuLimitExceeded",
            "You have requested more vCPU capacity than your current vCPU limit of 0 allows "
            "for the instance bucket that the specified instance type belongs to.",
        )
    )
    with pytest.raises(QuotaError) as caught:
        create_with_failover(provider, spec_for(options), lambda *event: None)
    error = caught.value
    assert error.scope == "cloud" and error.region == "us-east-1"
    assert "Running On-Demand G and VT instances" in error.message and "4 vCPUs" in error.message
    assert error.hint and "L-DB2E81BA" in error.hint
    assert len(moto.sent("RunInstances")) == 1


def test_spot_vcpu_limit_names_the_spot_quota(moto: MotoEc2) -> None:
    provider, options = provider_and_options(
        moto, zones=["us-east-1a"], instance_type="g4dn.xlarge", spot=True
    )
    moto.faults.append(Fault("RunInstances", "VcpuLimitExceeded", "limit of 0"))
    with pytest.raises(QuotaError) as caught:
        provider.create(spec_for(options), "us-east-1a")
    assert "All G and VT Spot Instance Requests" in caught.value.message
    assert caught.value.hint and "L-3819A6DF" in caught.value.hint


def test_terminate_then_the_instance_is_gone(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1a"])
    spec = spec_for(options)
    record = provider.create(spec, "us-east-1a")
    found = provider.find(spec)
    assert found is not None and found.cloud_id == record.cloud_id
    provider.destroy(record)
    with pytest.raises(NotFound):
        provider.get(record)
    provider.destroy(record)  # gone already is not an error
    assert provider.find(spec) is None
    assert len(moto.sent("TerminateInstances")) == 1


def test_find_adopts_an_instance_created_before_a_crash(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1a"])
    created = provider.create(spec_for(options, name="crashy"), "us-east-1a")
    fresh = AwsProvider(sleep=lambda seconds: None)  # a new process: no cache
    found = fresh.find(spec_for(options, name="crashy"))
    assert found is not None and found.cloud_id == created.cloud_id
    assert fresh.find(spec_for(options, name="other")) is None


def test_auth_failure_is_an_auth_error(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto)
    moto.faults.append(
        Fault(
            "DescribeAvailabilityZones",
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        )
    )
    with pytest.raises(AuthError) as caught:
        provider.preflight(spec_for(options))
    assert "AuthFailure" in caught.value.line() and "moto-secret" not in caught.value.line()


def test_throttling_is_retried(moto: MotoEc2) -> None:
    slept: list[float] = []
    provider = AwsProvider(sleep=slept.append)
    options = provider.validate_options({"endpoint": moto.endpoint, "zones": ["us-east-1a"]}, "t")
    moto.faults.append(
        Fault(
            "DescribeImages", "RequestLimitExceeded", "Request limit exceeded.", status=503, times=2
        )
    )
    record = provider.create(spec_for(options), "us-east-1a")
    assert record.status == p.RUNNING
    assert len(moto.sent("DescribeImages")) == 3 and slept[:2] == [0.25, 0.5]


def test_missing_image_and_subnet_say_what_to_set(moto: MotoEc2) -> None:
    provider, options = provider_and_options(moto, zones=["us-east-1a"], ami_name="no-such-*")
    with pytest.raises(Exception, match="no x86_64 image named 'no-such-\\*'"):
        provider.create(spec_for(options), "us-east-1a")
    provider, options = provider_and_options(moto, subnet_id="subnet-0123456789abcdef0")
    with pytest.raises(Exception, match="subnet subnet-0123456789abcdef0 does not exist"):
        provider.candidate_zones(spec_for(options))


def test_subnet_id_pins_the_zone(moto: MotoEc2) -> None:
    subnet = boto(moto).describe_subnets(
        Filters=[{"Name": "availability-zone", "Values": ["us-east-1d"]}]
    )["Subnets"][0]["SubnetId"]
    provider, options = provider_and_options(moto, subnet_id=subnet)
    spec = spec_for(options)
    assert list(provider.candidate_zones(spec)) == ["us-east-1d"]
    record = provider.create(spec, "us-east-1d")
    assert record.zone == "us-east-1d"
    provider, options = provider_and_options(moto, subnet_id=subnet, zones=["us-east-1a"])
    with pytest.raises(ProfileError, match="is in us-east-1d"):
        provider.candidate_zones(spec_for(options))


def test_moto_refuses_what_ec2_refuses(moto: MotoEc2) -> None:
    """moto runs any instance type; EC2 refuses retired families and unknown types. The
    bed closes that gap (tests/support/moto_ec2.py) so a request that slipped past the
    profile checks fails as it would on EC2, and nothing runs."""
    provider, options = provider_and_options(moto, zones=["us-east-1c"])
    for instance_type, code in (("p2.xlarge", "Unsupported"), ("g5.3xlarge", "InvalidParameter")):
        sneaked = dataclasses.replace(options, instance_type=instance_type)
        with pytest.raises(OrchestrateError, match=code):
            provider.create(spec_for(sneaked), "us-east-1c")
    assert boto(moto).describe_instances()["Reservations"] == []


def test_retired_type_fails_before_any_request(moto: MotoEc2) -> None:
    with pytest.raises(ProfileError) as caught:
        provider_and_options(moto, instance_type="p3.8xlarge")
    line = caught.value.line()
    assert "\n" not in line and "retired p3" in line and "g5.xlarge" in line
    assert moto.actions == []
