"""`orchestrate open NAME` when there is nothing to open: one line that says what to do.

The path with a running notebook (the URL again, the tunnel started when none is alive,
the browser opened) is proved end to end in tests/e2e/test_notebook_browser.py.
"""

from __future__ import annotations

import json

from orchestrate.core.store.state import open_state


def _row(status: str, **fields: object) -> None:
    state = open_state()
    state.record_intent("nb", "ssh", {"values": {}}, ssh_user=None)
    state.update("nb", status=status, **fields)
    state.close()


def test_open_an_unknown_instance_names_the_known_ones(cli) -> None:
    result = cli("open", "nope")
    assert result.code == 2 and result.out == ""
    assert result.err.strip().splitlines() == [
        "orchestrate: no instance named 'nope' (known: none) (see `orchestrate status`)"
    ]


def test_open_a_stopped_instance_says_start_it(cli) -> None:
    _row("stopped", token="t0k3n")
    result = cli("open", "nb")
    assert result.code == 2 and result.out == ""
    assert result.err.strip().splitlines() == [
        "orchestrate: nb is stopped, so its notebook is not reachable (run `orchestrate start nb`)"
    ]


def test_status_json_gives_no_url_without_a_tunnel_and_says_where_the_token_is(cli) -> None:
    _row("stopped", token="t0k3n", local_port=8899)
    result = cli("status", "--offline", "--json")
    [info] = json.loads(result.out)
    assert info["url"] is None  # no live tunnel: a URL would lead nowhere
    assert "state.db" in info["token_in"] and "`orchestrate open nb`" in info["token_in"]
    assert "t0k3n" not in result.out
