"""What the background tunnel's process tells the command that started it (no network).

The end-to-end tests (tests/e2e/test_launch_ssh.py) run the real process; here, the error
line's round trip, which decides what a `launch --detach` prints and exits with when the
process failed for it.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from orchestrate.core.api.errors import (
    HostError,
    HostKeyMismatch,
    StepFailed,
    UsageError,
)
from orchestrate.core.flows.tunnel_start import Say, decode_error, encode_error


def test_an_error_comes_back_as_its_class_with_its_line_and_exit_status() -> None:
    sent = HostKeyMismatch("host key of 10.0.0.2:22 changed", hint="orchestrate forget-host-key nb")
    sent.notes.append("nb is still running")
    got = decode_error(encode_error(sent))
    assert type(got) is HostKeyMismatch
    assert got.line() == sent.line() and got.exit_code == 1

    usage = decode_error(encode_error(UsageError("port 8899 is busy", hint="choose another")))
    assert type(usage) is UsageError and usage.exit_code == 2


def test_an_error_with_fields_of_its_own_comes_back_as_a_host_error_with_its_line() -> None:
    sent = StepFailed("host step 'docker' failed", step="docker", log_path=Path("/x.log"))
    got = decode_error(encode_error(sent))
    assert type(got) is HostError and got.line() == sent.line()


def test_an_unknown_kind_or_garbage_is_not_taken_for_an_error() -> None:
    assert type(decode_error('{"kind": "SystemExit", "message": "m"}')) is HostError
    assert decode_error("ready 8899") is None
    assert decode_error('{"message": 5}') is None


def test_a_parent_gone_leaves_the_process_silent_not_failing() -> None:
    out = io.StringIO()
    say = Say(out)
    say("progress", "waiting for SSH\non two lines")
    assert out.getvalue() == "progress waiting for SSH on two lines\n"

    read, write = os.pipe()
    os.close(read)
    pipe = os.fdopen(write, "w")
    gone = Say(pipe)
    gone("ready", "8899")  # the parent was killed: no BrokenPipeError reaches the tunnel
    assert gone.gone
    gone("ready", "8899")
    with contextlib.suppress(BrokenPipeError):  # what is left in the buffer has nowhere to go
        pipe.close()
