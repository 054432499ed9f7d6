"""The stage script's dependency graph, run by a real bash on this machine (no SSH).

Concurrency is proven by a hand-shake, not by timing: one step waits for a file that only
another step of the same stage writes. Run one after the other, the waiting step would give
up after its bound (which only turns a hang into a failure) and fail the stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from orchestrate.core.host.probe import END, parse_facts
from orchestrate.core.host.stagescript import (
    parse_marker,
    probe_then_stage_command,
    split_output,
    stage_script,
)

WAIT_FOR = """set -euo pipefail
for _ in $(seq 300); do [ -e {path} ] && break; sleep 0.1; done
[ -e {path} ] || {{ echo "{path} never appeared"; exit 3; }}
echo "{name} saw {path}"
"""

REBOOT = 'touch "$ORCHESTRATE_REBOOT_FILE"\n'


def run_stage(script: str) -> tuple[int, list[tuple[str, str]], dict[str, list[str]]]:
    """(exit status, markers as (step, event) in order, each step's output lines)."""
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    events: list[tuple[str, str]] = []
    output: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        tagged = split_output(line)
        if tagged is not None:
            output.setdefault(tagged[0], []).append(tagged[1])
            continue
        marker = parse_marker(line)
        if marker is not None:
            events.append((marker.get("step", ""), marker["event"]))
    return proc.returncode, events, output


def test_independent_steps_run_at_the_same_time_and_dependants_wait(tmp_path: Path) -> None:
    flag = tmp_path / "docker-ready"
    scripts = [
        ("docker", f"echo docker up; touch {flag}\n"),
        ("driver", f"echo installing\n{WAIT_FOR.format(path=tmp_path / 'pulling', name='driver')}"),
        ("image", f"[ -e {flag} ]\ntouch {tmp_path / 'pulling'}\necho pulled\n"),
        ("verify", "echo verified\n"),
    ]
    graph = {"driver": ("docker",), "image": ("docker",), "verify": ("driver", "image")}
    rc, events, output = run_stage(stage_script(scripts, graph))
    assert rc == 0, (events, output)
    starts = [step for step, event in events if event == "start"]
    assert starts == ["docker", "driver", "image", "verify"]
    done = [step for step, event in events if event == "done"]
    assert done[0] == "docker" and done[-1] == "verify"
    assert events.index(("driver", "done")) < events.index(("verify", "start"))
    assert events.index(("image", "done")) < events.index(("verify", "start"))
    assert events[-1] == ("", "stage-done")
    # each step's lines are its own, though two ran at the same time
    assert output["driver"] == ["installing", f"driver saw {tmp_path / 'pulling'}"]
    assert output["image"] == ["pulled"]


def test_without_a_graph_steps_run_one_after_the_other(tmp_path: Path) -> None:
    first = tmp_path / "first"
    # were they to overlap, the second would look before the first wrote its file
    scripts = [("first", f"sleep 0.3\ntouch {first}\n"), ("second", f"[ -e {first} ]\n")]
    rc, events, _ = run_stage(stage_script(scripts))
    assert rc == 0
    assert events[:4] == [
        ("first", "start"), ("first", "done"), ("second", "start"), ("second", "done")
    ]  # fmt: skip


def test_reboot_waits_for_running_steps_and_starts_nothing_new(tmp_path: Path) -> None:
    """The driver asks for a reboot while the pull runs: the pull finishes, verify does not
    start, and the stage ends cleanly with the reboot marker."""
    pulling = tmp_path / "pulling"
    scripts = [
        ("image", f"touch {pulling}\nsleep 0.5\necho pulled\n"),
        ("driver", WAIT_FOR.format(path=pulling, name="driver") + REBOOT),
        ("verify", "echo verified\n"),
    ]
    graph = {"verify": ("driver", "image")}
    rc, events, output = run_stage(stage_script(scripts, graph))
    assert rc == 0
    assert ("driver", "reboot") in events and ("image", "reboot") not in events
    assert ("image", "done") in events, "the pull was not cut short"
    assert ("verify", "start") not in events and ("", "stage-done") not in events
    assert events[-1] == ("", "stage-reboot"), "the runner stops reading at this last marker"
    assert output["image"] == ["pulled"]


def test_a_failure_lets_running_steps_end_and_exits_with_its_status(tmp_path: Path) -> None:
    started = tmp_path / "slow-started"
    scripts = [
        ("slow", f"touch {started}\nsleep 0.5\necho slow finished\n"),
        ("broken", WAIT_FOR.format(path=started, name="broken") + "echo bad; exit 7\n"),
        ("after", "echo never\n"),
    ]
    rc, events, output = run_stage(stage_script(scripts, {"after": ("slow",)}))
    assert rc == 7
    assert ("broken", "fail") in events and ("slow", "done") in events
    assert ("after", "start") not in events
    assert output["broken"][-1] == "bad"


def _probe_script() -> str:
    from orchestrate.core.api.hoststeps import StepContext
    from orchestrate.core.host.probe import probe_script

    return probe_script(StepContext(instance="x", gpu=None, notebook_image="img"))


def test_probe_then_stage_prints_the_facts_then_runs_the_stage_it_is_sent() -> None:
    """After a reboot the probe and the rest of the setup share one exec: the facts come
    first, whole, without reading stdin; the stage sent on stdin then runs as root with its
    markers, and its exit status is the command's."""
    command = probe_then_stage_command(_probe_script())
    with subprocess.Popen(
        ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(2)]  # before any stdin is sent
        facts = parse_facts("".join(first))
        assert first[1].strip() == END and facts.user.privilege == "root"
        stage = stage_script([("hello", "echo hi from $(id -un)\n"), ("bad", "exit 7\n")])
        rest, _ = proc.communicate(stage, timeout=60)
    assert proc.returncode == 7
    assert "##orchestrate out=hello hi from root" in rest
    assert "##orchestrate step=bad event=fail rc=7" in rest


def test_probe_then_stage_with_nothing_sent_only_probes() -> None:
    proc = subprocess.run(
        ["sh", "-c", probe_then_stage_command(_probe_script())],
        input="", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.endswith(f"\n{END}\n")
    assert parse_facts(proc.stdout).os.kernel


def test_a_stage_whose_reader_is_gone_ends_instead_of_waiting_forever(tmp_path: Path) -> None:
    """A launch that dies mid-step (Ctrl-C, a dropped connection) closes the stage's stdout.
    The step's own report must still reach the scheduler, so the stage ends rather than
    leaving a root shell on the host waiting for a step that will never report."""
    release = tmp_path / "release"
    scripts = [
        ("first", f"{WAIT_FOR.format(path=release, name='first')}"),
        ("second", "echo second\n"),
    ]
    stage = subprocess.Popen(
        ["bash", "-c", stage_script(scripts, {"second": ("first",)})],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        assert stage.stdout is not None
        first = stage.stdout.readline().decode()
        assert "step=first event=start" in first, first
        stage.stdout.close()  # the reader is gone while the step runs
        release.touch()
        assert stage.wait(timeout=30) != 0
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)
            stage.wait()
