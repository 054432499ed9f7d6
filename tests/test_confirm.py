"""Asking before deleting or spending: without a terminal, one line that says to pass
--yes, for `down` as for `launch` (it used to end as "interrupted")."""

from __future__ import annotations

from orchestrate.core.store.state import open_state


def test_down_without_a_terminal_says_pass_yes_and_deletes_nothing(cli) -> None:
    state = open_state()
    state.record_intent("nb", "ssh", {"values": {}}, ssh_user=None)
    state.close()
    result = cli("down", "nb")  # pytest's stdin is not a terminal
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines == [
        "orchestrate: delete nb on ssh and its disk? -- no terminal to ask "
        "(pass --yes to delete it without asking)"
    ]
    state = open_state()
    assert state.get("nb") is not None
    state.close()


def test_down_of_an_ssh_host_that_is_gone_refuses_quickly_then_force_forgets(cli) -> None:
    """A workstation that is gone: `down` tries SSH for a short while (the deadline is cut
    here, as the wait itself is not the subject), then says --force; --force forgets it."""
    import socket

    from orchestrate.core.flows import teardown

    with socket.socket() as probe:  # a loopback port with nothing behind it
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    state = open_state()
    state.record_intent("ws", "ssh", {"values": {}}, ssh_user="me")
    state.update(
        "ws", status="running", cloud_id=f"me@127.0.0.1:{closed}", address="127.0.0.1",
        ssh_port=closed, host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh4eHh4eHh4eHh4eHh4eHh4",
    )  # fmt: skip
    state.close()
    saved = teardown.DOWN_SSH_DEADLINE_S
    teardown.DOWN_SSH_DEADLINE_S = 1.0
    try:
        refused = cli("down", "ws", "--yes")
        assert refused.code != 0
        line = refused.err.strip().splitlines()[-1]
        assert "`orchestrate down ws --force` forgets it" in line, refused.err
        state = open_state()
        assert state.get("ws") is not None
        state.close()
        forced = cli("down", "ws", "--yes", "--force")
    finally:
        teardown.DOWN_SSH_DEADLINE_S = saved
    assert forced.code == 0, forced.err
    assert "warning: 127.0.0.1 does not answer" in forced.err
    state = open_state()
    assert state.get("ws") is None
    state.close()
