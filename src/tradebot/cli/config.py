"""``tradebot config check|show``."""

from __future__ import annotations

from pathlib import Path

import click

from tradebot.cli._common import config_option, prepare_or_exit
from tradebot.core.config import unstructure


@click.group()
def config() -> None:
    """Check or show the configuration."""


@config.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """Validate the config and every plugin table. Exit 0 when valid, 2 otherwise."""
    prepared = prepare_or_exit(config_path)
    src = prepared.settings.source or "built-in defaults (no config file)"
    click.echo(f"config OK: {src}; {len(prepared.host.loaded)} plugins loaded")
    for name, err in prepared.host.report.failed.items():
        click.echo(f"warning: plugin {name!r} not loaded: {err}", err=True)


@config.command("show")
@config_option
def show(config_path: Path | None) -> None:
    """Print the effective configuration, defaults included, as TOML."""
    import tomlkit

    prepared = prepare_or_exit(config_path)
    click.echo(tomlkit.dumps(unstructure(prepared.settings)))
