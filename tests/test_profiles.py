"""Profiles: files in order, extends, provider sub-tables, overrides, and one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from orchestrate.core.api.errors import ProfileError
from orchestrate.core.store.profiles import (
    Profile,
    ProfileSet,
    apply_overrides,
    check_common,
    parse_duration,
    profile_snapshot,
)
from orchestrate.core.store.state import InstanceRow

from tests.support.toy_plugin import install_toy

GOOD = """
[profiles.base]
provider = "toy"
image = "img:1"
autostop = "30m"

[profiles.base.toy]
region = "r9"

[profiles.big]
extends = "base"
description = "more of it"
port = 9000

[profiles.big.toy]
size = 4
"""


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = install_toy(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("orch_toy", None)


def test_extends_merges_keys_and_sub_tables(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    profile = ProfileSet([path]).resolve("big", provider_names=["toy"])
    assert profile.chain == ("big", "base")
    assert profile["port"] == 9000
    assert profile["image"] == "img:1"
    assert profile["autostop"] == "30m"
    assert profile.provider_table() == {"region": "r9", "size": 4}
    assert str(profile.origins["port"]) == f"{path}:13"
    assert str(profile.origins["toy.region"]) == f"{path}:8"


def test_later_files_override_earlier_ones_key_by_key(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text(GOOD)
    second.write_text('[profiles.base]\nimage = "img:2"\n[profiles.base.toy]\nsize = 2\n')
    profile = ProfileSet([first, second]).resolve("base", provider_names=["toy"])
    assert profile["image"] == "img:2"
    assert profile["provider"] == "toy"
    assert profile.provider_table() == {"region": "r9", "size": 2}


def test_cli_overrides_win_and_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    profile = ProfileSet([path]).resolve("big", provider_names=["toy"])
    apply_overrides(profile, {"port": 7000, "image": None})
    assert profile["port"] == 7000 and profile["image"] == "img:1"
    apply_overrides(profile, {"port": 70000})
    with pytest.raises(ProfileError, match="--port: port must be a TCP port"):
        check_common(profile, ["toy"])


def test_no_profile_gives_defaults() -> None:
    profile = ProfileSet([]).resolve(None, provider_names=["toy"])
    assert profile["port"] == 8899 and profile["remote_port"] == 8888
    assert profile["notebooks_dir"] == "~/notebooks"
    assert profile["container_notebooks_dir"] == "/notebooks"


def test_snapshot_reads_back_what_was_launched(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    launched = ProfileSet([path]).resolve("big", provider_names=["toy"])
    again = Profile.from_snapshot(profile_snapshot(launched))
    assert again.values == launched.values
    assert again.provider_table() == {"region": "r9", "size": 4}
    assert (again.port, again.image, again.autostop) == (9000, "img:1", "30m")


def test_snapshot_missing_keys_take_todays_defaults() -> None:
    """A row written before a key existed (or with no snapshot at all) reads as defaults,
    so no reader has to restate them."""
    defaults = ProfileSet([]).resolve(None, provider_names=["toy"])
    row = InstanceRow(name="nb", provider="toy", status="running", profile={})
    old = row.launched_profile()
    assert old.values == defaults.values
    assert (old.port, old.remote_port) == (defaults["port"], defaults["remote_port"])
    assert old.container_name == defaults["container_name"]
    partial = Profile.from_snapshot({"values": {"remote_port": 9999}, "provider_tables": []})
    assert partial.remote_port == 9999 and partial.notebooks_dir == defaults["notebooks_dir"]
    assert partial.provider_tables == {}


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("60m") == 3600
    assert parse_duration("2h") == 7200
    assert parse_duration("15") == 900
    assert parse_duration("off") is None
    with pytest.raises(ProfileError, match="not a duration"):
        parse_duration("soon")


def test_profiles_command_lists_and_shows_resolved(toy, cli, write_profiles) -> None:
    path = write_profiles(GOOD)
    listed = cli("profiles")
    assert listed.code == 0, listed.err
    assert f"files read: {path}" in listed.out
    assert "big" in listed.out and "more of it" in listed.out
    shown = cli("profiles", "big")
    assert shown.code == 0, shown.err
    assert "port = 9000" in shown.out
    assert "toy.size = 4" in shown.out
    assert "from big -> base" in shown.out


# Each bad profile: (file text, what the one line must contain). Lines are 1-based.
BAD = {
    "syntax": ('[profiles.a]\nprovider = "toy\n', ["invalid TOML", "line 2"]),
    "wrong type": ('[profiles.a]\nprovider = "toy"\nport = "8899"\n', [
        "orchestrate.toml:3", "profiles.a.port must be an integer", "str '8899'"]),
    "unknown key": ('[profiles.a]\nprovider = "toy"\n\nimage_name = "x"\n', [
        "orchestrate.toml:4", "unknown key 'image_name'", "did you mean 'image'"]),
    "unknown provider": ('[profiles.a]\nprovider = "azurre"\n', [
        "orchestrate.toml:2", "unknown provider 'azurre'", "toy"]),
    "extends cycle": ('[profiles.a]\nextends = "b"\n[profiles.b]\nextends = "a"\n', [
        "extends cycle a -> b -> a", "orchestrate.toml:4"]),
    "unknown extends": ('[profiles.a]\nextends = "nope"\n', [
        "orchestrate.toml:2", "unknown profile 'nope'"]),
    "bad sub-table key": ('[profiles.a]\nprovider = "toy"\n[profiles.a.toy]\nzone = 1\n', [
        "orchestrate.toml:3: [profiles.a.toy]", "unknown key 'zone'"]),
    "unknown sub-table": ('[profiles.a]\nprovider = "toy"\n[profiles.a.gcpp]\nx = 1\n', [
        "orchestrate.toml:3", "unknown table [gcpp]"]),
    "bad bootstrap": ('[profiles.a]\nbootstrap = "cloud-init"\n', [
        "orchestrate.toml:2", "bootstrap must be one of ssh, startup-script"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profile_is_one_line_exit_2(case: str, toy, cli, write_profiles) -> None:
    text, expected = BAD[case]
    write_profiles(text)
    result = cli("profiles", "a")
    assert result.code == 2, (result.out, result.err)
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for part in expected:
        assert part in result.err, (part, result.err)


def test_missing_config_file_is_one_line(cli) -> None:
    result = cli("--config", "/nonexistent/x.toml", "profiles")
    assert result.code == 2
    assert result.err.strip() == (
        "orchestrate: --config /nonexistent/x.toml: no such file (check the path)"
    )


def test_debug_shows_the_traceback(toy, cli, write_profiles) -> None:
    write_profiles('[profiles.a]\nport = "x"\n')
    with pytest.raises(ProfileError):
        cli("--debug", "profiles", "a")


def test_finding_every_keys_line_scans_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5000 keys used to mean 5000 scans of a 5000-line file (25 million line matches, 26 s).
    The work is counted, not timed: one index per file, each line read once."""
    from orchestrate.core.store import profilefile

    keys = 5000
    text = "[profiles.many]\n" + "".join(f'k{i} = "v"\n' for i in range(keys)) + "[profiles.b.x]\n"
    text += "".join(f"s{i} = {i}\n" for i in range(keys))
    path = tmp_path / "many.toml"
    path.write_text(text)
    built: list[profilefile.LineIndex] = []
    original = profilefile.LineIndex.__init__

    def counting(self: profilefile.LineIndex, lines: list[str]) -> None:
        original(self, lines)
        built.append(self)

    monkeypatch.setattr(profilefile.LineIndex, "__init__", counting)
    (many, b) = sorted(profilefile.read_file(path), key=lambda raw: raw.name, reverse=True)
    assert len(built) == 1 and built[0].scanned == len(text.splitlines()) == 2 * keys + 2
    assert many.origins["k4999"].line == keys + 1, "lines are still exact"
    assert b.origins["x.s0"].line == keys + 3


def test_profiles_names_every_file_it_searched_and_status_the_provider_in_use(
    cli, write_profiles, orch_home: Path
) -> None:
    empty = cli("profiles")
    user_file = orch_home / "config" / "config.toml"
    folder_file = Path("orchestrate.toml").resolve()
    assert f"files searched, in order: {user_file}, {folder_file}" in empty.out
    assert f"no profiles defined: write one in {user_file}" in empty.out
    assert "--provider NAME" in cli("status", "--offline").out
    write_profiles('[profiles.default]\nprovider = "ssh"\n')
    assert "`orchestrate launch --provider ssh` creates one" in cli("status", "--offline").out
