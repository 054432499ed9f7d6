"""Hostile values are refused where they enter: at profile load, on the command line, in a
cloud's answer. Each refusal is one line naming the file, line and key, with exit 2.

What the grammar lets through (spaces, quotes, `$(...)` in a folder name) is run for real on
the bed's host in tests/reliability/test_hostile_bed.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from orchestrate.core.api import grammar
from orchestrate.core.api.errors import ProviderError
from orchestrate.core.api.templates import fill, heredoc_delimiter

from tests.conftest import CliResult

Cli = Callable[..., CliResult]

MARKER = "/tmp/orchestrate-pwned"
#: Attacks on every shell-bound key: metacharacters, command substitution, newlines, heredoc
#: terminators, template placeholders, docker flags.
ATTACKS = [
    f"x; touch {MARKER}",
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"x\ntouch {MARKER}",
    f"x\nORCHESTRATE_ENV\ntouch {MARKER}",
    "x@CONTAINER@",
    "--privileged",
    "-rf",
    "x\x1b[2Jy",
]
#: Values each key refuses beyond those, with the key.
REFUSED = {
    "image": [*ATTACKS, "a b", "UPPER/x", "x:y:z", ""],
    "container_name": [*ATTACKS, "a b", "a/b", ""],
    "container_notebooks_dir": [*ATTACKS, "relative", "/a b", "/a:b", "/x/../etc", ""],
    "notebooks_dir": [
        f"x\ntouch {MARKER}",
        "/",
        "/etc",
        "/usr/lib/x",
        "~other/x",
        "../x",
        "~/a:b",
        "",
        "x\x1b[2Jy",
        "~/x/../../etc",
    ],
    "description": ["a\nb", "a\x1b[2Jb", "a\rb"],
    "autostop": ["0s", "0m", "-5m", "1.5h"],
}
ACCEPTED = {
    "image": ["jupyter/base-notebook", "quay.io/jupyter/pytorch-notebook:cuda12-latest",
              "localhost:5000/team/nb:1.0", "nb@sha256:" + "a" * 64],
    "container_name": ["nb", "orchestrate-notebook", "A.b_c-1"],
    "container_notebooks_dir": ["/notebooks", "/home/jovyan/work"],
    "notebooks_dir": ["~", "~/notebooks", "/data/nb", "~/my notebooks", "~/a $(b) `c`; d"],
}  # fmt: skip


def profile(key: str, value: object) -> str:
    return (
        f'[profiles.p]\nprovider = "ssh"\n{key} = {json.dumps(value)}\n'
        '[profiles.p.ssh]\nhost = "127.0.0.1"\n'
    )


def one_line_refusal(result: CliResult) -> str:
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestrate: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k, values in REFUSED.items() for v in values]
)
def test_hostile_profile_values_are_refused_at_load(
    cli: Cli, write_profiles: Callable[[str], Path], key: str, value: str
) -> None:
    write_profiles(profile(key, value))
    line = one_line_refusal(cli("launch", "--dry-run", "--profile", "p", "nb"))
    assert "orchestrate.toml:3:" in line and key in line, line
    assert not Path(MARKER).exists()


@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k, values in ACCEPTED.items() for v in values]
)
def test_safe_values_load(
    cli: Cli, write_profiles: Callable[[str], Path], key: str, value: str
) -> None:
    write_profiles(profile(key, value))
    result = cli("launch", "--dry-run", "--profile", "p", "nb")
    assert result.code == 0, result.err


@pytest.mark.parametrize("value", ATTACKS[:7])
def test_hostile_image_flag_is_refused(
    cli: Cli, write_profiles: Callable[[str], Path], value: str
) -> None:
    write_profiles(profile("description", "ok"))
    line = one_line_refusal(cli("launch", "--dry-run", "--profile", "p", "--image", value, "nb"))
    assert "--image" in line and "image" in line


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_confirm_above_must_be_finite(
    cli: Cli, write_profiles: Callable[[str], Path], value: float
) -> None:
    text = profile("description", "x").replace(
        'description = "x"', f"confirm_above = {json.dumps(value).replace('Infinity', 'inf')}"
        .replace("NaN", "nan")
    )  # fmt: skip
    write_profiles(text)
    line = one_line_refusal(cli("launch", "--dry-run", "--profile", "p", "nb"))
    assert "confirm_above" in line


def test_a_control_character_in_a_provider_table_is_refused(
    cli: Cli, write_profiles: Callable[[str], Path]
) -> None:
    text = profile("description", "x").replace('"127.0.0.1"', '"127.0.0.1\\nProxyCommand x"')
    write_profiles(text)
    line = one_line_refusal(cli("launch", "--dry-run", "--profile", "p", "nb"))
    assert "control character" in line and "host" in line


@pytest.mark.parametrize(
    "answer", ["10.0.0.1; touch /tmp/x", "-oProxyCommand=x", "a b", "1.2.3.4\nHost *", "%h"]
)
def test_an_address_from_a_cloud_is_parsed_before_use(answer: str) -> None:
    with pytest.raises(ProviderError):
        grammar.address(answer)


@pytest.mark.parametrize("answer", ["10.0.0.1", "2001:db8::1", "ec2-1-2-3-4.compute.amazonaws.com"])
def test_addresses_and_host_names_pass(answer: str) -> None:
    assert grammar.address(answer) == answer


def test_fill_is_one_pass_and_heredoc_delimiters_cannot_be_closed_early() -> None:
    filled = fill("a=@A@ b=@B@", {"@A@": "@B@", "@B@": "x"})
    assert filled == "a=@B@ b=x", "a value's placeholder is not expanded again"
    text = "line\nORCHESTRATE_ENV\n"
    delimiter = heredoc_delimiter(text, "ORCHESTRATE_ENV")
    assert delimiter not in text and delimiter.startswith("ORCHESTRATE_ENV_")
    assert heredoc_delimiter(text, "ORCHESTRATE_ENV") == delimiter, "stable for a setup hash"
    script = f"cat <<'{delimiter}'\n{text}{delimiter}\n"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == text, "the text comes back whole: its line did not end the document"


def test_a_systemd_exec_word_keeps_a_hostile_path_one_literal_argument() -> None:
    """The autostop unit's ExecStart quotes each path for systemd: %, $, quotes and
    backslashes cannot become specifiers, variables or extra arguments."""
    import re

    from orchestrate.plugins.host.autostop import step

    function = re.search(r"^unit_word\(\) \{.*?^\}", step._FUNCTIONS, re.S | re.M)
    assert function is not None
    path = '/opt/a b"c\\d%h$USER $(touch /tmp/x)'
    out = subprocess.run(
        ["bash", "-c", function.group(0) + '\nunit_word "$1"', "bash", path],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == '"/opt/a b\\"c\\\\d%%h$$USER $$(touch /tmp/x)"'
