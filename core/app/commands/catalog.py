"""Commands that describe what is installed and configured: plugins, providers, profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from orchestrate.core.wiring.runtime import Runtime, echo, echo_json


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins_command(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List every loaded plugin with its distribution, version and hooks."""
        from orchestrate.core.wiring.registry import disabled_plugins, plugin_infos

        runtime: Runtime = ctx.obj
        infos = plugin_infos(runtime.pm)
        if as_json:
            echo_json([info.__dict__ for info in infos])
            return
        for info in infos:
            echo(f"{info.name}  {info.distribution} {info.version}")
            echo(f"    hooks: {', '.join(info.hooks) or '(none)'}")
        blocked = sorted(disabled_plugins())
        if blocked:
            echo(f"disabled by ORCHESTRATE_DISABLE_PLUGINS: {', '.join(blocked)}")

    @app.command("providers")
    def providers_command(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List the cloud providers `launch --provider` accepts."""
        runtime: Runtime = ctx.obj
        found = runtime.providers()
        if as_json:
            echo_json({name: p.description for name, p in sorted(found.items())})
            return
        if not found:
            echo("no providers installed")
        for name, provider in sorted(found.items()):
            echo(f"{name:10} {provider.description}")

    @app.command("trust")
    def trust_command(
        file: Path = typer.Argument(
            Path("orchestrate.toml"), help="The profile file to trust (default ./orchestrate.toml)."
        ),
    ) -> None:
        """Let a folder's orchestrate.toml set endpoints and credentials (as `direnv allow`).

        The file's SHA-256 is recorded in your config folder: a changed file must be trusted
        again. Your own config file and `--config FILE` need no trust.
        """
        from orchestrate.core.store.profiles import ProfileSet
        from orchestrate.core.store.trust import trust

        ProfileSet([file])  # a file that is not a readable profile is not trusted
        digest = trust(file)
        echo(f"trusted {file.resolve()} (sha256 {digest[:16]}...): run `trust` again after edits")

    @app.command("profiles")
    def profiles_command(
        ctx: typer.Context,
        name: Optional[str] = typer.Argument(  # noqa: UP045 - typer needs Optional on 3.10
            None, help="Show this profile fully resolved."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List profiles, or show one resolved (files, extends, provider options)."""
        from orchestrate.core.store.profilefile import default_files, searched_files
        from orchestrate.core.store.profiles import ProfileSet

        runtime: Runtime = ctx.obj
        files = default_files(runtime.config)
        profiles = ProfileSet(files)
        providers = runtime.providers()
        if name is None:
            searched = searched_files(runtime.config)
            if as_json:
                echo_json(
                    {
                        "searched": [str(f) for f in searched],
                        "files": [str(f) for f in files],
                        "profiles": profiles.names(),
                    }
                )
                return
            echo("files searched, in order: " + ", ".join(str(f) for f in searched))
            echo("files read: " + (", ".join(str(f) for f in files) or "none"))
            for known in profiles.names():
                resolved = profiles.resolve(known, provider_names=sorted(providers))
                echo(f"{known:16} provider={resolved.provider or '-'}  {resolved['description']}")
            if not profiles.names():
                echo(
                    f"no profiles defined: write one in {searched[0]} or ./orchestrate.toml "
                    "(README.md, Quickstart)"
                )
            return
        profile = runtime.profile(name)
        shown: dict[str, object] = dict(profile.values)
        shown["extends_chain"] = list(profile.chain)
        if profile.provider:
            provider = runtime.provider(profile.provider)
            options = provider.validate_options(profile.provider_table(), profile.table_where())
            shown[profile.provider] = dict(provider.redacted_options(options))
        if as_json:
            echo_json({"name": profile.name, "values": shown})
            return
        echo(f"profile {profile.name} (from {' -> '.join(profile.chain)})")
        for key, value in shown.items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    echo(f"  {key}.{sub} = {sub_value!r}")
            else:
                echo(f"  {key} = {value!r}")
