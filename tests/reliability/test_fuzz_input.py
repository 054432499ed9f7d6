"""Bad input: property-based fuzzing of TOML profiles and CLI arguments (hypothesis).

Whatever a user writes in a profile or types on the command line, orchestrate answers with
exit 0, or with exit 2 and exactly one stderr line starting "orchestrate: " - never a
traceback, never "unexpected" (exit 1 is for failures of the world, not of the input).

The CLI runs in-process through `main()` (the `cli` fixture) for speed. Nothing reaches a
network: every `launch` carries --dry-run, no state row exists for other commands to act
on, and HOME points at the test's folder so nothing can touch the real user's files.
Examples: 250 + 250 + 100 = 600 per run (`EXAMPLES`).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import CliResult

EXAMPLES = {"profiles": 250, "arguments": 250, "names": 100}

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Cli = Callable[..., CliResult]


@pytest.fixture
def home_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME in the test's folder: ~/.ssh and friends are never the real ones."""
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))


def check(result: CliResult, args: list[str]) -> None:
    """The contract for any input: exit 0, or exit 2 with one line; never a traceback."""
    context = f"orchestrate {args!r}\nexit {result.code}\nstderr:\n{result.err}"
    event(f"exit {result.code}")
    assert "Traceback" not in result.err + result.out, context
    assert result.code in (0, 2), context
    if result.code == 2:
        lines = result.err.splitlines()
        assert len(lines) == 1, context
        assert lines[0].startswith("orchestrate: "), context
        assert not lines[0].startswith("orchestrate: unexpected "), context  # a bug's line


# -- TOML -----------------------------------------------------------------------------

def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """A TOML literal. Strings go through JSON's escapes, which TOML mostly shares; where
    it does not (a DEL, a lone surrogate) the file is invalid TOML: one more bad input."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(text, text)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(profiles: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, table in profiles.items():
        scalars = {k: v for k, v in table.items() if not (isinstance(v, dict) and k == "gcp")}
        lines.append(f"[profiles.{toml_key(name)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in scalars.items()]
        if isinstance(table.get("gcp"), dict):
            lines.append(f"[profiles.{toml_key(name)}.gcp]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table["gcp"].items()]
        lines.append("")
    return "\n".join(lines)


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
scalar = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
anything = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def plausible(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Values for one key: mostly valid ones (so that validation goes deep and some
    profiles pass), often plausible mistakes, sometimes anything at all."""
    return st.integers(0, 9).flatmap(
        lambda roll: st.sampled_from(valid) if roll < 6
        else st.sampled_from(invalid) if roll < 9
        else anything
    )


#: Hostile strings every shell-bound key is tried with: shell metacharacters, command
#: substitution, newlines, here-document terminators, template placeholders, docker flags.
HOSTILE = [
    "x; touch /tmp/orchestrate-pwned", "$(touch /tmp/orchestrate-pwned)", "`id`", "a\nb",
    "ORCHESTRATE_ENV", "x\nORCHESTRATE_ENV\ntouch /tmp/orchestrate-pwned", "@CONTAINER@",
    "x@IMAGE@", "--privileged", "-rf", "a'b", 'a"b', "a b", "$HOME", "a\x00b", "a\x1bb",
    "x:y", "../../etc",
]


def hostile(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """`plausible`, with the hostile strings among the mistakes."""
    return plausible(valid, invalid + HOSTILE)


COMMON = {
    "provider": plausible(["gcp"], ["aws", "ssh", "GCP", "", "toy"]),
    "description": hostile(["a notebook", ""], [1]),
    "image": hostile(["jupyter/base-notebook", "quay.io/j/n:cuda12", "localhost:5000/a/b:1"],
                     ["", "a b", "UPPER:tag", "x" * 300, "-rf"]),
    "port": plausible([8899, 9000, 65535], [0, -1, 65536, 22, "8899", 8899.0]),
    "remote_port": plausible([8888], [0, 70000, "8888"]),
    "notebooks_dir": hostile(["~/notebooks", "~", "/data/nb", "~/my notebooks", "~/a$b;c"],
                             ["", "../x", "a\nb", "~other/x", "/", "/etc", "/usr/lib"]),
    "container_notebooks_dir": hostile(["/notebooks", "/home/jovyan/work"], ["", "relative"]),
    "container_name": hostile(["nb", "orchestrate-notebook", "a.b_c-1"],
                              ["", "bad name", "-x", "a" * 200]),
    "autostop": plausible(["60m", "off", "2h"], ["0s", "-5m", "forever", "1.5h", 30, ""]),
    "bootstrap": plausible(["ssh", "startup-script"], ["cloud-init", ""]),
    "confirm_above": plausible([1.5, 10], [0, -1, "1", float("nan"), float("inf")]),
}
GCP = {
    "project": plausible(["orch-test-1", "org.com:proj-1"], ["p", "UPPER-CASE", ""]),
    "credentials": hostile(["/nonexistent/key.json", "~/key.json"],
                           ["", 5, "/dev/zero", "/dev/stdin", "/"]),
    "zones": plausible([["us-east1-d"], ["us-east1-d", "us-central1-a"]],
                       [[], ["us-east1-d", "us-east1-d"], ["mars"], "us-east1-d"]),
    "zone": plausible(["us-east1-d"], ["us-east1", "bad zone"]),
    "region": plausible(["us-east1"], ["us-east1-d", ""]),
    "machine_type": plausible(["n1-standard-4"], ["", "n1 standard"]),
    "accelerator": plausible(["nvidia-tesla-t4", "none"], ["", "NVIDIA"]),
    "accelerator_count": plausible([1, 2, 0], [3, -1, 1000, "1", True]),
    "image_family": plausible(["ubuntu-2204-lts"], [""]),
    "image_project": plausible(["ubuntu-os-cloud"], [""]),
    "boot_image": plausible(["global/images/x"], ["http://x", ""]),
    "disk_gb": plausible([50, 200], [0, -1, 10**9, 50.5]),
    "disk_type": plausible(["pd-ssd"], ["floppy"]),
    "spot": plausible([True, False], ["yes"]),
    "preemptible": plausible([False], [1]),
    "labels": plausible([{"team": "ml"}], [{"Bad Key": "v"}, {"k": "V!"}, []]),
    "network": plausible(["default"], ["", "Net"]),
    "service_account": plausible(["default"], ["", 3]),
    "scopes": plausible([["compute-rw"], []], [["nope"], "compute-rw"]),
    "api_endpoint": hostile(["https://www.googleapis.com", "http://127.0.0.1:9"],
                            ["ftp://x", "", "localhost", "http://evil.example", "https://a@b"]),
    "ssh_user": plausible(["orchestrate", "ubuntu"], ["", "bad user", "x" * 40]),
    "ssh_port": plausible([22, 2222], [0, 65536, "22"]),
}


@st.composite
def profile_tables(draw: st.DrawFn) -> dict[str, Any]:
    table = {k: draw(v) for k, v in COMMON.items() if draw(st.integers(0, 2)) == 0}
    if draw(st.integers(0, 3)) > 0:
        table.setdefault("provider", "gcp")
    if draw(st.integers(0, 9)) == 0:
        table[draw(st.text(min_size=1, max_size=12))] = draw(anything)  # an unknown key
    gcp = {k: draw(v) for k, v in GCP.items() if draw(st.integers(0, 4)) == 0}
    if draw(st.integers(0, 9)) == 0:
        gcp[draw(st.text(min_size=1, max_size=12))] = draw(anything)
    if draw(st.integers(0, 3)) > 0:
        table["gcp"] = gcp
    return table


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A profile file: mostly well-formed TOML of plausible and implausible values,
    sometimes one cut short or with a character replaced, sometimes raw text."""
    kind = draw(st.integers(0, 14))
    if kind == 0:
        return draw(st.text(max_size=200))
    profiles = {"fuzz": draw(profile_tables())}
    if draw(st.booleans()):
        profiles["base"] = draw(profile_tables())
        profiles["fuzz"]["extends"] = draw(plausible(["base"], ["fuzz", "missing", ""]))
        if draw(st.integers(0, 9)) == 0:
            profiles["base"]["extends"] = draw(st.sampled_from(["fuzz", "base"]))  # a cycle
    document = toml_document(profiles)
    if kind == 1 and document:
        at = draw(st.integers(0, len(document) - 1))
        return document[:at]
    if kind == 2 and document:
        at = draw(st.integers(0, len(document) - 1))
        return document[:at] + draw(st.sampled_from("[]=\"'{}\n#\\\x00\x7f")) + document[at + 1 :]
    return document


@pytest.mark.usefixtures("home_is_private")
@settings(FUZZ, max_examples=EXAMPLES["profiles"])
@given(
    document=documents(), command=st.sampled_from(["launch", "profiles"]), trusted=st.booleans()
)
# Found by this test, kept as regressions: a child's string over a parent's table under
# extends (a TypeError), and a table key with a carriage return (a two-line error).
@example(
    document='[profiles.fuzz]\nextends = "base"\nbootstrap = "ssh"\n'
    "[profiles.base]\nbootstrap = {}\n",
    command="launch",
    trusted=True,
)
@example(document='[profiles.fuzz]\nprovider = "gcp"\n"\\r" = {}\n', command="launch", trusted=True)
# the ssh provider without a host, refused by its plan: one line, not one after the price
@example(document='[profiles.fuzz]\nprovider = "ssh"\n', command="launch", trusted=False)
def test_fuzzed_profiles(cli: Cli, document: str, command: str, trusted: bool) -> None:
    """Trusted or not: an untrusted file that names credentials is one more bad input."""
    Path("orchestrate.toml").write_text(document, encoding="utf-8", errors="surrogatepass")
    if trusted:
        from orchestrate.core.store.trust import trust

        trust(Path("orchestrate.toml"))
    if command == "launch":
        args = ["launch", "--dry-run", "fuzz", "--profile", "fuzz", "--yes"]
    else:
        args = ["profiles"]
    result = cli(*args)
    check(result, args)
    if command == "launch" and result.code == 0:
        assert result.out.startswith("# launch fuzz on "), result.out[:200]


# -- CLI arguments --------------------------------------------------------------------

VALID_PROFILE = """
[profiles.good]
provider = "gcp"
image = "jupyter/base-notebook"
autostop = "off"

[profiles.good.gcp]
project = "orch-test-1"
credentials = "/nonexistent/key.json"
zones = ["us-east1-d"]
accelerator = "none"
"""

token = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30),
    st.sampled_from(["", "-", "-1", "0", "65536", "8899", "none", "nvidia-tesla-t4:2",
                     "nvidia-tesla-t4:x", "us-east1-d", "good", "missing", "-p", "--port"]),
).filter(lambda t: t != "--")
name = st.one_of(token, st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True))

LAUNCH_OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    "--provider": st.one_of(st.sampled_from(["gcp", "aws", "ssh", "toy"]), token),
    "--profile": st.one_of(st.sampled_from(["good", "missing"]), token),
    "--gpu": token,
    "--zone": token,
    "--host": st.one_of(st.sampled_from(["u@h", "u@h:22", "@", "h:99999"]), token),
    "--image": st.one_of(st.sampled_from(HOSTILE), token),
    "--port": token,
    "--autostop": st.one_of(st.sampled_from(["off", "30m", "2h", "0s"]), token),
    "--detach": None,
    "--no-browser": None,
    "--yes": None,
    "--bogus": None,
}
#: Commands other than launch act on a named instance; none exists, which is bad input too.
COMMANDS: dict[str, dict[str, st.SearchStrategy[str] | None]] = {
    "status": {"--json": None, "--offline": None},
    "stop": {},
    "start": {"--port": token, "--detach": None, "--no-browser": None},
    "down": {"--yes": None, "--sync-notebooks": token},
    "logs": {"--follow": None, "--tail": token},
    "tunnel": {"--port": token, "--detach": None, "--close": None},
    "ssh": {},
    "forget-host-key": {},
}
GLOBAL_CONFIG = ["/nonexistent.toml", ".", "orchestrate.toml", "garbage.toml"]


@st.composite
def argument_lists(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    if draw(st.integers(0, 4)) == 0:
        args += ["--config", draw(st.sampled_from(GLOBAL_CONFIG))]
    command = draw(st.sampled_from(["launch", *COMMANDS, "gpus", "providers", "nope"]))
    options = LAUNCH_OPTIONS if command == "launch" else COMMANDS.get(command, {})
    # --dry-run straight after launch: no later token can turn it into a value.
    args += [command, "--dry-run"] if command == "launch" else [command]
    if command not in ("gpus", "providers", "nope") and draw(st.integers(0, 5)) > 0:
        args.append(draw(name))
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=5)) if options else []:
        args.append(option)
        value = options[option]
        if value is not None and draw(st.integers(0, 9)) > 0:  # sometimes the value is missing
            args.append(draw(value))
    if draw(st.integers(0, 9)) == 0:
        args.append(draw(token))  # an extra word
    return args


def write_trusted(text: str) -> None:
    """./orchestrate.toml, trusted as `orchestrate trust` would (it names credentials)."""
    from orchestrate.core.store.trust import trust

    Path("orchestrate.toml").write_text(text, encoding="utf-8")
    trust(Path("orchestrate.toml"))


@pytest.mark.usefixtures("home_is_private")
@settings(FUZZ, max_examples=EXAMPLES["arguments"])
@given(args=argument_lists())
def test_fuzzed_arguments(cli: Cli, args: list[str]) -> None:
    write_trusted(VALID_PROFILE)
    Path("garbage.toml").write_text("[profiles.good\nport = ", encoding="utf-8")
    check(cli(*args), args)


def safe_everywhere(instance: str) -> bool:
    """Whether `instance` can be used as it is as a file name, an ssh Host alias and a
    cloud resource name; GCE's naming is the strictest of the three, so a name it would
    rewrite (case, characters, length, a trailing dash) is not."""
    from orchestrate.plugins.providers.gcp.resources import instance_name

    as_file = instance not in ("", ".", "..") and "/" not in instance and "\0" not in instance
    as_alias = not any(c.isspace() or c in "*?!%#" for c in instance)
    return as_file and as_alias and instance_name(instance) == instance


@pytest.mark.usefixtures("home_is_private")
@settings(FUZZ, max_examples=EXAMPLES["names"])
@given(
    instance=st.one_of(
        name,
        st.from_regex(r"[a-z][-a-z0-9]{0,70}", fullmatch=True),
        st.text(string.ascii_lowercase + string.digits + "-_./ \n", max_size=70),
    )
)
@example(instance="a" * 63)
@example(instance="a" * 64)
@example(instance="nb-")
def test_fuzzed_instance_names(cli: Cli, instance: str) -> None:
    """A name is a file name, an ssh alias and a cloud resource name: exactly the names
    that are safe as all three launch, and every other one is refused as bad input."""
    write_trusted(VALID_PROFILE)
    args = ["launch", "--dry-run", "--profile", "good", "--", instance]
    result = cli(*args)
    check(result, args)
    assert (result.code == 0) == safe_everywhere(instance), (instance, result.err)
    if result.code == 0:
        assert result.out.startswith(f"# launch {instance} on gcp"), result.out[:200]
