"""status, logs, ssh, tunnel, forget-host-key, ssh-config: reaching what is running."""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import Any, Optional

import typer
from orchestrate.core.flows.rows import row_named
from orchestrate.core.wiring.runtime import Runtime, echo, echo_json

# typer needs Optional[...] rather than X | None on Python 3.10.
# ruff: noqa: UP045

#: `ssh` checks the host key first; a host that does not answer by then is reported as such.
HOST_KEY_CHECK_DEADLINE_S = 20.0


def _err(message: str) -> None:
    echo(message, err=True)


def _age(seconds: float | None) -> str:
    """The row's uptime, in the words the rest of `status` uses ("2h 05m")."""
    if seconds is None:
        return "-"
    from orchestrate.core.money.billing import duration

    return duration(seconds).replace(" ", "")


def _launch_hint(runtime: Runtime) -> str:
    """The launch command for the provider in use (the default profile's), not a fixed
    cloud: a user of another provider would be sent to one they do not use."""
    from orchestrate.core.api.errors import OrchestrateError
    from orchestrate.core.store.profilefile import default_files, read_file
    from orchestrate.core.store.profiles import DEFAULT_PROFILE

    # Read from the files alone: resolving a profile loads every provider plugin, which a
    # `status` that lists nothing must not pay for.
    provider = None
    try:
        for path in default_files(runtime.config):
            for raw in read_file(path):
                if raw.name == DEFAULT_PROFILE and isinstance(raw.table.get("provider"), str):
                    provider = raw.table["provider"]
    except OrchestrateError:
        provider = None
    if provider:
        return f"`orchestrate launch --provider {provider}`"
    return "`orchestrate launch --provider NAME` (`orchestrate providers` lists them)"


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status_command(
        ctx: typer.Context,
        name: Optional[str] = typer.Argument(None, help="One instance (default: all)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        offline: bool = typer.Option(False, "--offline", help="Do not ask the cloud."),
    ) -> None:
        """Instances with state, zone, address, GPU, uptime and tunnel, fresh from the cloud."""
        from orchestrate.core.flows.status import collect

        runtime: Runtime = ctx.obj
        rows = collect(runtime, name, refresh=not offline)
        if as_json:
            echo_json(rows)
            return
        if not rows:
            echo(f"no instances; {_launch_hint(runtime)} creates one")
            return
        for info in rows:
            held = info["tunnel_kind"]
            by = f" ({held}, pid {info['tunnel_pid']})" if held else ""
            echo(
                f"{info['name']:16} {info['status']:10} {info['provider']:6}"
                f" {info['zone'] or '-':16} {info['address'] or '-':15}"
                f" gpu={info['gpu'] or 'none'} up={_age(info['uptime_s'])}"
                f" tunnel={info['tunnel']}{by}"
            )
            if info.get("dashboard"):
                echo(f"    dashboard: {info['dashboard']}")
            for node in info.get("nodes") or []:
                echo(
                    f"    node {node['index']} {node['name']:16} {node['status']:10}"
                    f" {node['zone'] or '-':16} {node['address'] or '-':15}"
                    f" internal={node['internal_address'] or '-'} gpu={node['gpu'] or 'none'}"
                )
                for note in node["notes"]:
                    echo(f"        {note}")
            for note in info["notes"]:
                echo(f"    {note}")

    @app.command("logs")
    def logs_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Instance name."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep following."),
        tail: int = typer.Option(200, "--tail", help="Lines from the end."),
    ) -> None:
        """The notebook container's logs (Jupyter's start-up, CUDA library loading)."""
        from orchestrate.core.flows.rows import connect_shared
        from orchestrate.core.host.hostdocker import container_of, docker_on_host
        from orchestrate.core.ssh.keys import ensure_ssh_key

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        session = connect_shared(runtime, name, ensure_ssh_key(), lambda m: echo(m, err=True))
        flag = " -f" if follow else ""
        command = docker_on_host(f"logs --tail {int(tail)}{flag} -- {container_of(row)} 2>&1")
        try:
            if follow:
                from orchestrate.core.ssh.interruptible import run_until_interrupted

                # Ctrl-C ends `docker logs -f` on the host too, not only here.
                result = run_until_interrupted(session, command, lambda line, stream: echo(line))
            else:
                result = session.run(command, on_line=lambda line, stream: echo(line))
        finally:
            session.close()
        if result.rc != 0:
            raise typer.Exit(result.rc)

    @app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def ssh_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Instance name."),
    ) -> None:
        """Open a shell on the instance with OpenSSH, or run `-- CMD` there."""
        import shutil

        from orchestrate.core.api.errors import OrchestrateError
        from orchestrate.core.ssh import sshconfig
        from orchestrate.core.ssh.keys import ensure_ssh_key

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        if not row.address or not row.host_key:
            raise OrchestrateError(
                f"{name} has no address or pinned host key yet",
                hint=f"run `orchestrate start {name}`",
            )
        key = ensure_ssh_key()
        config = sshconfig.write(runtime.state().all(), key.private_path)
        ssh = shutil.which("ssh")
        if ssh is None:
            raise OrchestrateError(
                "OpenSSH's ssh client is not installed", hint="install openssh-client"
            )
        _check_host_key(row, key.private_path)
        args = [a for a in ctx.args if a != "--"]
        # A command run from a terminal gets a terminal on the host, as a shell does: Ctrl-C
        # then reaches the command there. Without one, OpenSSH only ends itself, and the
        # command runs on at the host until it next writes. Piped or redirected, the output
        # stays byte for byte (a remote terminal would turn newlines into CRLF).
        tty = ["-t"] if args and sys.stdin.isatty() and sys.stdout.isatty() else []
        if tty:
            # A command killed by Ctrl-C would end OpenSSH with 255, the code of a failed
            # connection: the host's shell outlives it (a trap is a handler, which the
            # command does not inherit) and exits with its status, 130.
            args = ["trap : INT;", *args]
        runtime.close()
        os.execv(ssh, ["ssh", "-F", str(config), *tty, name, *args])

    @app.command("tunnel")
    def tunnel_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Instance name."),
        port: Optional[int] = typer.Option(None, "--port", help="Local port."),
        detach: bool = typer.Option(False, "--detach", help="Run in the background."),
        close: bool = typer.Option(False, "--close", help="End the background tunnel."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
    ) -> None:
        """Open the tunnel to the notebook (foreground until Ctrl-C, or --detach)."""
        from orchestrate.core.flows import background
        from orchestrate.core.flows.launch import url_for
        from orchestrate.core.flows.notebook_url import hold_in_foreground, show_url

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        if close:
            ended = background.close_detached(row)
            if background.is_foreground_tunnel(row.tunnel_pid, name):
                # Another terminal holds it: only that terminal's Ctrl-C ends it.
                echo(f"no background tunnel was running; pid {row.tunnel_pid} holds one in "
                     "the foreground (Ctrl-C there closes it)")  # fmt: skip
                return
            runtime.state().update(name, tunnel_pid=None)
            echo("background tunnel closed" if ended else "no background tunnel was running")
            return
        to_stderr = partial(echo, err=True)
        with background.reopen(runtime, row, port, detach=detach, progress=to_stderr) as opened:
            url = url_for(opened.local_port, row.token or "")
            if opened.tunnel is not None:
                hold_in_foreground(
                    opened.tunnel, url, browse=not no_browser, say=echo, say_err=_err
                )
            else:
                show_url(url, browse=not no_browser, say=echo, say_err=_err)

    @app.command("forget-host-key")
    def forget_host_key_command(
        ctx: typer.Context, name: str = typer.Argument(..., help="Instance name.")
    ) -> None:
        """Drop the pinned host key of a legitimately rebuilt host; the next contact pins anew."""
        runtime: Runtime = ctx.obj
        row_named(runtime, name)
        runtime.state().update(name, host_key=None)
        runtime.state().event(name, "host-key", "pinned host key forgotten by the user")
        echo(f"host key of {name} forgotten; the next connection pins the key it presents")

    @app.command("ssh-config")
    def ssh_config_command(
        ctx: typer.Context,
        install: bool = typer.Option(False, "--install", help="Include it from ~/.ssh/config."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    ) -> None:
        """Write the ssh config for orchestrate's hosts; --install includes it in yours."""
        from orchestrate.core.ssh import sshconfig
        from orchestrate.core.ssh.keys import ensure_ssh_key

        runtime: Runtime = ctx.obj
        path = sshconfig.write(runtime.state().all(), ensure_ssh_key().private_path)
        echo(f"wrote {path}")
        if not install:
            echo(f"add `{sshconfig.include_line()}` to ~/.ssh/config, or pass --install")
            return
        if not yes and not typer.confirm(f"add `{sshconfig.include_line()}` to ~/.ssh/config?"):
            raise typer.Exit(1)
        added = sshconfig.install_include()
        echo("included from ~/.ssh/config" if added else "already included from ~/.ssh/config")


def _check_host_key(row: Any, key_path: Any) -> None:
    """Refuse a changed host key the way every other command does, before OpenSSH runs.

    OpenSSH refuses it too (the pinned key is in the known_hosts file it is given), but with
    a screen of warnings and advice (`ssh-keygen -R`) that does not apply to a file
    orchestrate rewrites from state; this check raises the one-line `HostKeyMismatch` that
    names `forget-host-key`. The key is compared before authentication, so nothing runs.
    """
    from orchestrate.core.ssh.session import Session

    Session.connect(
        row.address,
        row.ssh_port,
        row.ssh_user or "orchestrate",
        key_path,
        pinned_host_key=row.host_key,
        deadline_s=HOST_KEY_CHECK_DEADLINE_S,
        name=row.name,
    ).close()
