"""SSH drops in the middle of a host step: launch reconnects, repeats the stage, completes.

The cut is real: while a test plugin's host step sleeps on the host, the test finds the sshd
processes serving the launch's connection (by its TCP ports) and SIGKILLs them; the client
sees its connection reset, as when a NAT box or a Wi-Fi change drops it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.reliability.support import (
    launch_args,
    notebook_answers,
    orchestrate,
    slow_step_plugin,
    sshd_serving,
    wait_for,
)
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]


def test_connection_cut_mid_step_is_resumed(
    bed: Bed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with slow_step_plugin(monkeypatch, tmp_path / "plugin", seconds=3) as slow:
        proc = orchestrate(bed, *launch_args())
        try:
            wait_for("the slow step to start", lambda: slow.starts == 1, timeout=120)
            serving = sshd_serving(proc.pid, bed.ssh.port)
            assert serving, "no sshd process serves the launch"
            assert bed.ssh.sshd.pid not in serving
            for pid in serving:
                os.kill(pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "connection" in err and "reconnect" in err, err
        notebook_answers(out)
        # The cut step died with its connection and ran again in full.
        assert slow.starts == 2 and slow.done

        again = bed.cli(*launch_args())
        assert "0 steps applied" in again.stderr, again.stderr
        assert slow.starts == 2
