"""Pieces every command shares: the ``--config`` option and start-up that fails clearly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tradebot.app.bootstrap import Prepared

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $TRADEBOT_CONFIG or ./tradebot.toml).",
)


def echo_problem(exc: Exception) -> None:
    """Print a config or plugin error with every issue on its own line."""
    click.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
    for issue in getattr(exc, "issues", []):
        click.echo(f"  - {issue}", err=True)


def event_loop_or_exit() -> None:
    """Exit 2 naming ``TRADEBOT_EVENT_LOOP`` when it is bad, before a command starts anything."""
    from tradebot.core.errors import ConfigError
    from tradebot.core.loop import loop_name

    try:
        loop_name()
    except ConfigError as exc:
        echo_problem(exc)
        sys.exit(2)


def prepare_or_exit(config_path: Path | None) -> Prepared:
    """Settings and plugins, or exit 2 listing every problem."""
    from tradebot.app.bootstrap import prepare
    from tradebot.core.errors import ConfigError, PluginError

    try:
        return prepare(config_path)
    except (ConfigError, PluginError) as exc:
        echo_problem(exc)
        sys.exit(2)
