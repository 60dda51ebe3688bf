"""``tradebot config check|show``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tradebot.cli.plugins import config_option
from tradebot.core.bootstrap import prepare
from tradebot.core.config import unstructure
from tradebot.core.errors import ConfigError, PluginError


@click.group()
def config() -> None:
    """Check or show the configuration."""


@config.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """Validate the config and every plugin table. Exit 0 when valid, 2 otherwise."""
    try:
        prepared = prepare(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for issue in exc.issues:
            click.echo(f"  - {issue}", err=True)
        sys.exit(2)
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    src = prepared.settings.source or "built-in defaults (no config file)"
    click.echo(f"config OK: {src}; {len(prepared.host.loaded)} plugins loaded")
    for name, err in prepared.host.report.failed.items():
        click.echo(f"warning: plugin {name!r} not loaded: {err}", err=True)


@config.command("show")
@config_option
def show(config_path: Path | None) -> None:
    """Print the effective configuration, defaults included, as TOML."""
    import tomlkit

    try:
        prepared = prepare(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for issue in exc.issues:
            click.echo(f"  - {issue}", err=True)
        sys.exit(2)
    click.echo(tomlkit.dumps(unstructure(prepared.settings)))
