"""The provider contract as core drives it: a PENDING create polled to RUNNING, the launch
options handed to every lifecycle call, the default `find`, and options validated from a
dataclass with errors at the key's own line.

The provider here keeps its "cloud" in a dict: these tests are about what core does with
the contract, which no real cloud adds to; the real providers are tested against their
fake APIs over HTTP (test_gcp_provider, test_provider_aws, the Linode example).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import NotFound, ProfileError
from orchestrate.core.api.optionchecks import Where, integer
from orchestrate.core.api.typedoptions import checked, options_from
from orchestrate.core.cloud.instances import ensure_running, record_of
from orchestrate.core.store.state import State


@dataclass(frozen=True)
class BoxOptions:
    region: str = "r1"
    size: Literal["small", "large"] = "small"
    disk_gb: int = checked(50, integer(10, 1000))
    spot: bool = False
    tags: tuple[str, ...] = ()
    token_file: str | None = None


class DictCloud(p.Provider):
    """Instances in a dict; each `get` moves a pending one on, as a cloud's boot does."""

    name = "box"
    options_class = BoxOptions

    def __init__(self, reads_until_running: int = 2) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.reads_until_running = reads_until_running
        self.seen_options: list[tuple[str, Any]] = []

    def _record(self, cid: str) -> p.InstanceRecord:
        vm = self.instances[cid]
        return p.InstanceRecord(
            vm["name"], self.name, "r1-a", cid, vm["status"], vm["ip"], "u",
            labels=dict(vm["labels"]),
        )  # fmt: skip

    def create(self, spec: p.LaunchSpec, zone: str) -> p.InstanceRecord:
        cid = f"id-{len(self.instances)}"
        self.instances[cid] = {
            "name": spec.name, "status": p.PENDING, "ip": None, "labels": spec.labels, "reads": 0,
        }  # fmt: skip
        return self._record(cid)

    def get(self, record: p.InstanceRecord) -> p.InstanceRecord:
        self.seen_options.append(("get", record.options))
        vm = self.instances.get(record.cloud_id or "")
        if vm is None:
            raise NotFound(f"{record.name} is gone")
        vm["reads"] += 1
        if vm["status"] == p.PENDING and vm["reads"] >= self.reads_until_running:
            vm["status"], vm["ip"] = p.RUNNING, "127.0.0.1"
        return self._record(record.cloud_id or "")

    def start(self, record: p.InstanceRecord) -> p.InstanceRecord:
        self.seen_options.append(("start", record.options))
        self.instances[record.cloud_id or ""].update(status=p.PENDING, reads=0)
        return self._record(record.cloud_id or "")

    def stop(self, record: p.InstanceRecord) -> None:
        self.seen_options.append(("stop", record.options))
        self.instances[record.cloud_id or ""].update(status=p.STOPPED, ip=None)

    def destroy(self, record: p.InstanceRecord) -> None:
        self.seen_options.append(("destroy", record.options))
        self.instances.pop(record.cloud_id or "", None)

    def list(self, options: Any) -> Sequence[p.InstanceRecord]:
        return [self._record(cid) for cid in self.instances]


def _spec(provider: DictCloud, name: str = "nb", **table: Any) -> p.LaunchSpec:
    options = provider.validate_options(table, "test")
    return p.LaunchSpec(
        name, provider.name, options, "u", "ssh-ed25519 AAAA test",
        labels={"orchestrate": "1", p.NAME_LABEL: name},
    )  # fmt: skip


def _intent(state: State, provider: DictCloud, spec: p.LaunchSpec) -> None:
    snapshot = {"provider_tables": {provider.name: {}}}
    state.record_intent(spec.name, provider.name, snapshot, ssh_user="u")
    state.update(spec.name, extra={"options": dict(provider.redacted_options(spec.options))})


def test_a_pending_create_is_stored_first_then_polled_until_it_runs(tmp_path: Path) -> None:
    cloud = DictCloud(reads_until_running=2)
    spec = _spec(cloud, size="large")
    stored_at_create: list[Any] = []
    with State(tmp_path / "state.db") as state:
        _intent(state, cloud, spec)

        def after_create() -> None:
            row = state.get("nb")
            assert row is not None
            stored_at_create.append(row.cloud_id)

        record = ensure_running(state, cloud, spec, lambda _: None, after_create=after_create)
        row = state.get("nb")
        assert row is not None
        events = [e.kind for e in state.events("nb")]
    assert stored_at_create == [None], "the crash point lies before the cloud id is stored"
    assert record.status == p.RUNNING and record.address == "127.0.0.1"
    assert (row.cloud_id, row.status, row.address) == ("id-0", p.RUNNING, "127.0.0.1")
    assert cloud.instances["id-0"]["reads"] == 2, "core polled get until the boot ended"
    assert "waiting" in events
    assert [kind for kind, _ in cloud.seen_options] == ["get", "get"]
    assert all(options == spec.options for _, options in cloud.seen_options)


def test_lifecycle_calls_get_the_launch_options_back_from_the_row(tmp_path: Path) -> None:
    cloud = DictCloud(reads_until_running=1)
    spec = _spec(cloud, region="r2", tags=["a", "b"])
    with State(tmp_path / "state.db") as state:
        _intent(state, cloud, spec)
        ensure_running(state, cloud, spec, lambda _: None)
        row = state.get("nb")
        assert row is not None
        again = record_of(row, cloud)
        cloud.stop(again)
        # A start that comes back PENDING is polled too, with the same options.
        ensure_running(state, cloud, spec, lambda _: None)
        row = state.get("nb")
        assert row is not None and row.status == p.RUNNING
        cloud.destroy(record_of(row, cloud))
    assert again.options == spec.options
    assert again.options.tags == ("a", "b") and again.options.region == "r2"
    assert "options" not in again.extra, "core's copy is not the provider's extra"
    kinds = [kind for kind, _ in cloud.seen_options]
    assert kinds == ["get", "stop", "get", "start", "get", "destroy"]
    assert all(options == spec.options for _, options in cloud.seen_options)


def test_default_find_matches_core_name_label_only(tmp_path: Path) -> None:
    cloud = DictCloud()
    spec = _spec(cloud)
    assert cloud.find(spec) is None
    cloud.create(_spec(cloud, "other"), "")
    assert cloud.find(spec) is None
    cloud.create(spec, "")
    found = cloud.find(spec)
    assert found is not None and found.cloud_id == "id-1"


def test_options_from_a_dataclass_fill_defaults_and_check_types() -> None:
    options = options_from(BoxOptions, {"size": "large", "tags": ["x"]}, "f.toml:3: [t]")
    assert options == BoxOptions(size="large", tags=("x",))
    cases = {
        "size": ("huge", "f.toml:3: [t]: size: 'huge' is not one of 'small', 'large'"),
        "disk_gb": (5, "f.toml:3: [t]: disk_gb must be between 10 and 1000, not 5"),
        "spot": ("yes", "f.toml:3: [t]: spot must be true or false, not string 'yes'"),
        "region": (1, "f.toml:3: [t]: region must be a string, not integer 1"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ProfileError) as bad:
            options_from(BoxOptions, {key: value}, "f.toml:3: [t]")
        assert bad.value.message == message
    with pytest.raises(ProfileError) as unknown:
        options_from(BoxOptions, {"regions": "r1"}, "f.toml:3: [t]")
    assert unknown.value.message == "f.toml:3: [t]: unknown key 'regions'"
    assert unknown.value.hint == "did you mean 'region'?"


def test_errors_name_the_line_of_the_key_not_of_the_table(tmp_path: Path) -> None:
    where = Where("f.toml:3: [t]", {"disk_gb": "f.toml:7: [t]"})
    with pytest.raises(ProfileError) as bad:
        options_from(BoxOptions, {"disk_gb": 1}, where)
    assert bad.value.message.startswith("f.toml:7: [t]: disk_gb must be")


def test_a_profile_file_gives_each_key_its_line(write_profiles: Any, orch_home: Path) -> None:
    from orchestrate.core.store.profiles import load_profile

    path = write_profiles(
        '[profiles.x]\nprovider = "ssh"\n\n[profiles.x.ssh]\nhost = "me@192.0.2.1"\ngpu = "none"\n'
    )
    profile = load_profile("x", config=None, provider_names=["ssh"])
    where = profile.table_where()
    assert str(where) == f"{path}:4: [profiles.x.ssh]"
    assert isinstance(where, Where) and where.keys["gpu"] == f"{path}:6: [profiles.x.ssh]"


def test_the_default_redacted_options_are_a_valid_table() -> None:
    options = BoxOptions(region="r3", tags=("a",))
    shown = DictCloud().redacted_options(options)
    assert shown == {"region": "r3", "size": "small", "disk_gb": 50, "spot": False, "tags": ["a"]}
    assert DictCloud().validate_options(shown, "row") == options
    assert dataclasses.asdict(options)["token_file"] is None
