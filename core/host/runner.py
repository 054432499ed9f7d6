"""Plan and run host setup: probe once, run the needed steps in one remote shell per stage.

How a setup goes:

1. one probe (`orchestrate.core.host.probe`) gives the facts; on a set-up host nothing is needed,
   and that is the whole setup: connect + probe;
2. the needed steps are written into one stage script and sent to one ``bash`` on the host,
   as root (``sudo -n`` for a non-root login); it runs them as a dependency graph, steps with
   nothing between them at the same time, each in its own ``bash`` from a file, with stdin
   closed so an apt prompt cannot eat the script;
3. the stage tags each step's output lines with its name and prints progress markers
   (``##orchestrate step=NAME event=start|done|fail|reboot``) that the runner turns into
   `ProgressEvent`s for the live CLI line and into the
   ``orchestrate_before_step``/``orchestrate_after_step`` hook calls;
4. a step that asks for a reboot ends the stage once the steps already running are done (an
   image pull is not cut short): the runner reboots the host, waits for SSH
   (`Session.reconnect`), probes again and plans the rest from the new facts; that stage
   runs in the probe's own exec (`stagescript.probe_then_stage_command`), the host waiting
   on stdin while the runner plans.

Full output goes to a per-host log file, with the context's secrets (the notebook token)
replaced; a failing step raises `StepFailed` with its last lines and the log path.
"""

from __future__ import annotations

import collections
import contextlib
import json
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from orchestrate.core.api.errors import HostError, StepFailed
from orchestrate.core.api.gpu_table import PciGpu
from orchestrate.core.api.hoststeps import (
    Facts,
    HostStep,
    StepContext,
    StepResult,
    collect_steps,
    plan,
)
from orchestrate.core.api.retry import Retry
from orchestrate.core.host.probe import (
    PROBE_TIMEOUT_S,
    facts_from_result,
    probe,
    probe_ended,
    probe_script,
)
from orchestrate.core.host.stagescript import (
    parse_marker,
    probe_then_stage_command,
    split_output,
    stage_command,
    stage_script,
    step_graph,
)

if TYPE_CHECKING:  # pragma: no cover - types only
    from orchestrate.core.ssh.channelio import CommandResult, OnLine
    from orchestrate.core.ssh.session import Session

TAIL_LINES = 15
#: Output kept per step for its `summarize` (the tail; apt can print thousands of lines).
KEEP_LINES = 400
REDACTED = "[redacted]"


@dataclass(frozen=True)
class ProgressEvent:
    """One thing the CLI may show live.

    kind: "probe", "plan", "warning", "stage", "step-start", "step-done", "step-fail",
    "output" (one line of a step's output), "reboot", "wait-ssh", "done".
    """

    kind: str
    message: str
    step: str | None = None
    elapsed_s: float | None = None


OnEvent = Callable[[ProgressEvent], None]
#: Reboots the host behind a session; the runner then waits for SSH to come back.
Reboot = Callable[["Session"], None]


@dataclass
class SetupReport:
    """What a setup did. ``facts`` are from the last probe (before the last stage ran)."""

    facts: Facts
    applied: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    probes: int = 0
    reboots: int = 0
    log_path: Path | None = None
    #: wall time of the stages; less than the steps' sum when steps ran at the same time
    stage_seconds: float = 0.0

    @property
    def nothing_to_do(self) -> bool:
        return not self.applied

    def summary(self) -> str:
        """The line the CLI prints at the end."""
        if self.nothing_to_do:
            return "host already set up: 1 probe, 0 steps applied"
        names = ", ".join(r.name for r in self.applied)
        seconds = self.stage_seconds or sum(r.seconds for r in self.applied)
        reboots = f", {self.reboots} reboot(s)" if self.reboots else ""
        count = len(self.applied)
        return f"host set up: {count} step(s) applied ({names}) in {seconds:.0f} s{reboots}"


class Redactor:
    """Replaces the context's secrets in any text bound for a log or a terminal."""

    def __init__(self, secrets_: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets_ if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


# -- the runner ---------------------------------------------------------------------------


@dataclass
class _StepRun:
    step: HostStep
    started: float
    lines: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=KEEP_LINES)
    )


@dataclass
class _StageOutcome:
    results: list[StepResult]
    reboot_by: str | None


#: Runs a stage script on an exec already open: (script, on_line, done_when) -> its result.
_Execute = Callable[[str, "OnLine", Callable[[str], bool]], "CommandResult"]


class Runner:
    """Sets one host up over an open `Session`.

    ``steps`` are every contributed step, ordered (`hoststeps.collect_steps`); ``hook`` is the
    plugin manager's hook relay, or None in tests; ``reboot`` replaces the default reboot
    (``context.reboot_command`` as root), e.g. with a restarted sshd on the test bed.
    """

    def __init__(
        self,
        session: Session,
        context: StepContext,
        steps: Sequence[HostStep],
        *,
        log_path: Path,
        hook: Any = None,
        on_event: OnEvent | None = None,
        reboot: Reboot | None = None,
        ssh_deadline_s: float = 600.0,
        stage_timeout_s: float = 3600.0,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        max_reboots: int = 2,
    ) -> None:
        self.session = session
        self.context = context
        self.steps = list(steps)
        self.log_path = log_path
        self.hook = hook
        self.on_event = on_event
        self.reboot = reboot
        self.ssh_deadline_s = ssh_deadline_s
        self.stage_timeout_s = stage_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.max_reboots = max_reboots
        self.redact = Redactor(context.secrets())
        self.probes = 0

    # -- small helpers ----------------------------------------------------------------

    def _emit(
        self, kind: str, message: str, step: str | None = None, elapsed: float | None = None
    ) -> None:
        if self.on_event is not None:
            self.on_event(ProgressEvent(kind, self.redact(message), step, elapsed))

    def _log(self, text: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(self.redact(text))
            if not text.endswith("\n"):
                log.write("\n")

    def _stamp(self, title: str) -> None:
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log(f"\n=== {now} {self.context.instance}: {title}")

    # -- probe and plan ---------------------------------------------------------------

    def probe(self) -> Facts:
        """One probe round trip; the facts go to the log. It also asks Jupyter on the host
        (`Facts.jupyter_status`): on a set-up host this probe is the whole setup, and its
        answer spares the launch a check of its own."""
        return self._probed(
            lambda: probe(
                self.session, self.context, self.steps, timeout=self.probe_timeout_s, jupyter=True
            )
        )

    def _probed(self, get: Callable[[], Facts], where: str = "") -> Facts:
        """The facts `get` returns, timed, logged and shown (`where`: who ran the probe,
        when not this runner)."""
        self._emit("probe", "probing the host")
        started = time.monotonic()
        facts = get()
        self.probes += 1
        elapsed = time.monotonic() - started
        self._stamp(f"probe {where or f'({elapsed:.2f} s)'}")
        self._log(json.dumps(facts.raw, indent=1, sort_keys=True))
        self._emit("probe", f"probed in {elapsed:.1f} s", elapsed=elapsed)
        return facts

    def plan(self, facts: Facts, changed: Iterable[str] = ()) -> list[HostStep]:
        return plan(self.steps, facts, changed=changed)

    def warnings(self, facts: Facts) -> list[str]:
        """Every step's warnings for these facts (needed or not: an image already pulled can
        still be too new for the driver)."""
        found: list[str] = []
        for step in self.steps:
            if step.warnings is not None:
                found.extend(self.redact(w) for w in step.warnings(facts))
        return found

    # -- run --------------------------------------------------------------------------

    def run(self, facts: Facts | None = None) -> SetupReport:
        """Probe (unless `facts` are given: the same probe, run by another process on its
        connection, logged here as this runner's), then run stages until nothing is needed."""
        if facts is None:
            facts = self.probe()
        else:
            given = facts
            facts = self._probed(lambda: given, "(run on another process's connection)")
        report = SetupReport(facts=facts, log_path=self.log_path)
        self._add_warnings(report, facts)
        changed: list[str] = []
        rebooted_for: set[str] = set()
        outcome = self._next_stage(facts, report, changed, None)
        while outcome is not None and outcome.reboot_by is not None:
            if outcome.reboot_by in rebooted_for or report.reboots >= self.max_reboots:
                raise HostError(
                    f"host step {outcome.reboot_by!r} still asks for a reboot after "
                    f"{report.reboots} reboot(s)",
                    hint=f"see {self.log_path}; with Secure Boot on, unsigned driver modules "
                    "cannot load",
                )
            rebooted_for.add(outcome.reboot_by)
            self._reboot_and_wait(facts, outcome.reboot_by)
            report.reboots += 1
            with self._probe_then_stage() as (facts, execute):
                report.facts = facts
                self._add_warnings(report, facts)
                outcome = self._next_stage(facts, report, changed, execute)
        report.probes = self.probes
        self._stamp(report.summary())
        self._emit("done", report.summary())
        return report

    def _add_warnings(self, report: SetupReport, facts: Facts) -> None:
        for warning in self.warnings(facts):
            if warning not in report.warnings:
                report.warnings.append(warning)
                self._emit("warning", warning)

    def _next_stage(
        self,
        facts: Facts,
        report: SetupReport,
        changed: list[str],
        execute: _Execute | None,
    ) -> _StageOutcome | None:
        """Plan from `facts` and run the stage, if any step is needed (None: none is)."""
        todo = self.plan(facts, changed)
        if not todo:
            return None
        self._emit("plan", f"{len(todo)} step(s) to run: {', '.join(s.name for s in todo)}")
        started = time.monotonic()
        outcome = self.run_stage(todo, facts, report, execute=execute)
        report.stage_seconds += time.monotonic() - started
        report.applied.extend(outcome.results)
        changed.extend(r.name for r in outcome.results)
        return outcome

    @contextlib.contextmanager
    def _probe_then_stage(self) -> Iterator[tuple[Facts, _Execute | None]]:
        """The facts after a reboot, and how to run the stage planned from them: on the
        same exec as the probe where the session allows it (`Session.exchange`), else as
        a command of its own (None). Steps are always left to run after the reboot, so the
        stage's channel and shell start are worth saving; the probe alone stays as it is
        (on a set-up host, every launch's probe must not start a root shell it won't use).
        """
        exchange = getattr(self.session, "exchange", None)
        if exchange is None:  # a session shared through a tunnel's control socket
            yield self.probe(), None
            return
        script = probe_script(self.context, self.steps)
        with exchange(probe_then_stage_command(script)) as talk:
            facts = self._probed(
                lambda: facts_from_result(talk.read_until(probe_ended, self.probe_timeout_s))
            )

            def execute(
                script: str, on_line: OnLine, done_when: Callable[[str], bool]
            ) -> CommandResult:
                return talk.finish(script, self.stage_timeout_s, on_line, done_when)  # type: ignore[no-any-return]

            yield facts, execute

    def run_stage(
        self,
        steps: Sequence[HostStep],
        facts: Facts,
        report: SetupReport | None = None,
        *,
        execute: _Execute | None = None,
    ) -> _StageOutcome:
        """Send `steps` as one stage to one remote bash; stream its markers and output.
        `execute` runs the stage script on an exec already open (`_probe_then_stage`)."""
        command = stage_command(facts)
        scripts = [(step.name, step.script(self.context, facts)) for step in steps]
        by_name = {step.name: step for step in steps}
        script = stage_script(scripts, step_graph(steps))
        self._stamp(f"stage: {', '.join(by_name)}")
        self._log(script)
        self._emit("stage", f"running {', '.join(by_name)}")

        results: list[StepResult] = []
        # Steps running now, by name; several at once when the graph allows it.
        current: dict[str, _StepRun] = {}
        reboot_by: list[str] = []
        # The stage's last marker: its outcome is known there, and the shell's clean-up and
        # exit status after it (a few process exits and a round trip) are not waited for.
        ended: list[str] = []
        stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        log = self.log_path.open("a", encoding="utf-8")

        def finish(run: _StepRun, ok: bool, rc: int) -> StepResult:
            seconds = time.monotonic() - run.started
            output = "\n".join(run.lines)
            summary = None
            if ok and run.step.summarize is not None:
                summary = run.step.summarize(output, facts)
            result = StepResult(
                name=run.step.name,
                ok=ok,
                rc=rc,
                seconds=seconds,
                output_tail=tuple(self.redact(x) for x in list(run.lines)[-TAIL_LINES:]),
                summary=self.redact(summary) if summary else None,
            )
            results.append(result)
            if self.hook is not None:
                self.hook.orchestrate_after_step(step=run.step, context=self.context, result=result)
            return result

        def on_line(line: str, stream: str) -> None:
            if stream == "stderr":
                _write(log, self.redact(f"[stderr] {line}"))
                stderr_tail.append(line)
                return
            tagged = split_output(line)
            if tagged is not None:
                name, line = tagged
                _write(log, self.redact(f"[{name}] {line}"))
                run = current.get(name)
                marker = parse_marker(line)
                if marker is None or "warning" not in marker:
                    if run is not None and line:
                        run.lines.append(line)
                        self._emit("output", line, name)
                    return
                warning = self.redact(marker["warning"])
                if report is not None:
                    report.warnings.append(warning)
                self._emit("warning", warning, name)
                return
            _write(log, self.redact(line))
            marker = parse_marker(line)
            if marker is None or "warning" in marker:
                return
            event, name = marker.get("event"), marker.get("step", "")
            if event in ("stage-done", "stage-reboot"):
                ended.append(event)
                return
            step = by_name.get(name)
            if step is None:
                return
            if event == "start":
                current[name] = _StepRun(step, time.monotonic())
                if self.hook is not None:
                    self.hook.orchestrate_before_step(step=step, context=self.context)
                self._emit("step-start", f"{name}: {step.description}", name, 0.0)
            elif event in ("done", "fail") and name in current:
                ok = event == "done"
                result = finish(current.pop(name), ok, int(marker.get("rc", "0") or 0))
                kind = "step-done" if ok else "step-fail"
                text = f"{name}: {result.summary or ('done' if ok else f'failed ({result.rc})')}"
                self._emit(kind, text, name, result.seconds)
            elif event == "reboot":
                reboot_by.append(name)
                self._emit("reboot", f"{name} asks for a reboot", name)

        try:
            if execute is not None:
                result = execute(script, on_line, lambda _out: bool(ended))
            else:
                result = self.session.run(
                    command,
                    stdin=script,
                    timeout=self.stage_timeout_s,
                    on_line=on_line,
                    done_when=lambda _out: bool(ended),
                )
        finally:
            log.close()

        failed = [r for r in results if not r.ok]
        if failed:
            bad = failed[0]
            tail = "\n".join(f"    {x}" for x in bad.output_tail) or "    (no output)"
            raise StepFailed(
                f"host step {bad.name!r} failed with exit status {bad.rc}; last lines:\n{tail}\n",
                step=bad.name,
                log_path=self.log_path,
                hint=f"full output in {self.log_path}",
            )
        if reboot_by:
            return _StageOutcome(results, reboot_by[0])
        if result.rc != 0 or len(results) != len(steps):
            where = f" during {', '.join(map(repr, current))}" if current else ""
            detail = self.redact("\n".join(stderr_tail).strip()) or f"exit status {result.rc}"
            raise HostError(
                f"the host setup stage ended early{where}: {detail}",
                hint=f"full output in {self.log_path}",
            )
        return _StageOutcome(results, None)

    # -- reboot -----------------------------------------------------------------------

    def _default_reboot(self, facts: Facts) -> None:
        """Ask the host to reboot in two seconds, so the command itself returns cleanly."""
        inner = f"nohup sh -c {shlex.quote('sleep 2; ' + self.context.reboot_command)}"
        command = f"sh -c {shlex.quote(inner + ' >/dev/null 2>&1 &')}"
        if facts.user.privilege == "sudo":
            command = "sudo -n " + command
        self.session.run(command, timeout=60)

    def _reboot_and_wait(self, facts: Facts, by: str) -> None:
        self._stamp(f"reboot (asked by {by})")
        self._emit("reboot", f"rebooting the host for {by}", by)
        started = time.monotonic()
        if self.reboot is not None:
            self.reboot(self.session)
        else:
            self._default_reboot(facts)
            # Wait for the old connection to drop, so we do not reconnect to the host
            # before it went down.
            every_half_second = Retry(deadline_s=120, first_s=0.5, max_s=0.5)
            every_half_second.poll(lambda: self.session.active, lambda active: not active)

        def on_wait(attempt: int, elapsed: float, reason: str) -> None:
            self._emit("wait-ssh", f"waiting for SSH ({elapsed:.0f} s): {reason}", by, elapsed)

        deadline = started + self.ssh_deadline_s

        def back_on_a_new_boot() -> bool:
            self.session.reconnect(
                deadline_s=max(1.0, deadline - time.monotonic()), on_wait=on_wait
            )
            if self.reboot is not None or not facts.os.boot_id:
                return True
            # The default reboot must show a new boot id, or we reached the old system.
            boot_id = self.session.run("cat /proc/sys/kernel/random/boot_id", timeout=30)
            return bool(boot_id.stdout.strip() != facts.os.boot_id)

        every_two_seconds = Retry(deadline_s=deadline - time.monotonic(), first_s=2, max_s=2)
        _, rebooted = every_two_seconds.poll(back_on_a_new_boot, bool)
        if not rebooted:
            raise HostError(f"the host did not reboot within {self.ssh_deadline_s:.0f} s")
        elapsed = time.monotonic() - started
        self._emit("wait-ssh", f"SSH is back after {elapsed:.0f} s", by, elapsed)


def _write(log: IO[str], line: str) -> None:
    log.write(line + "\n")
    log.flush()


# -- dry run ------------------------------------------------------------------------------


def assumed_facts(context: StepContext) -> Facts:
    """Facts of a fresh host for `--dry-run` before the instance exists: nothing installed,
    the GPU the profile asks for (named as the provider names it)."""
    gpus: tuple[PciGpu, ...] = ()
    if context.gpu is not None:
        gpus = tuple(
            PciGpu(slot=f"(planned {i})", device_id="", name=context.gpu.name)
            for i in range(context.gpu.count)
        )
    return Facts(gpus=gpus)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.rstrip("\n").split("\n"))


def dry_run_text(
    hook: Any,
    context: StepContext,
    facts: Facts | None = None,
    *,
    steps: Sequence[HostStep] | None = None,
) -> str:
    """What host setup would do: the probe, then each step, needed or not, with the script
    of each one that would run. Secrets are redacted.

    Steps come from the plugins (``hook`` is ``pm.hook``) unless `steps` are given. Without
    `facts` (no instance yet) the plan assumes a fresh host with the requested GPU.
    """
    if steps is None:
        steps = collect_steps(hook, context)
    redact = Redactor(context.secrets())
    assumed = facts is None
    facts = facts if facts is not None else assumed_facts(context)
    planned = plan(steps, facts)
    todo = {s.name for s in planned}
    waits = step_graph(planned)
    lines = [f"host setup for {context.instance}:"]
    lines.append("  probe: one SSH command (POSIX sh), prints the facts as one JSON object:")
    lines.append(_indent(probe_script(context, steps), "      "))
    where = "a fresh host (no probe yet)" if assumed else "the probed host"
    lines.append(f"  steps for {where}; each starts once the steps it waits for are done:")
    if not steps:
        lines.append("    (no plugin contributes host steps)")
    for i, step in enumerate(steps, 1):
        verdict = "would run" if step.name in todo else "not needed"
        reboot = ", may reboot" if step.reboot_may_follow else ""
        after = f" (waits for {', '.join(waits[step.name])})" if waits.get(step.name) else ""
        lines.append(f"  {i}. {step.name} [{verdict}{reboot}]{after}: {step.description}")
        if step.name in todo:
            lines.append(_indent(step.script(context, facts), "      "))
    for step in steps:
        for warning in step.warnings(facts) if step.warnings else ():
            lines.append(f"  warning: {warning}")
    return redact("\n".join(lines)) + "\n"
