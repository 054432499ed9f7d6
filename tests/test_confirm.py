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
