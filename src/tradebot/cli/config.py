"""``tradebot config check|show``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from tradebot.app.config import Settings, unstructure
from tradebot.cli._common import config_option, prepare_or_exit


@click.group()
def config() -> None:
    """Check or show the configuration."""


@config.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """Validate the config and every plugin table. Exit 0 when valid, 2 otherwise."""
    # notes (built-in defaults left out ...) are printed after the report, not as log lines
    notes = _Notes()
    logger = logging.getLogger("tradebot.config")
    logger.addHandler(notes)
    try:
        prepared = prepare_or_exit(config_path)
    except SystemExit:
        notes.echo()
        raise
    finally:
        logger.removeHandler(notes)
    problems = _runtime_problems(prepared.settings, prepared.host)
    if problems:
        click.echo("error: the configuration is valid but this setup cannot start", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        notes.echo()
        sys.exit(2)
    src = prepared.settings.source or "built-in defaults (no config file)"
    click.echo(f"config OK: {src}; {len(prepared.host.loaded)} plugins loaded")
    for name, err in prepared.host.report.failed.items():
        click.echo(f"warning: plugin {name!r} not loaded: {err}", err=True)
    for name in prepared.host.report.unknown:
        click.echo(f"warning: plugin {name!r} is enabled but not installed", err=True)
    notes.echo()


class _Notes(logging.Handler):
    """Collects the notes validation logs, to print them with the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def echo(self) -> None:
        for line in self.lines:
            click.echo(line, err=True)


def _runtime_problems(settings: Settings, host: Any) -> list[str]:
    """What a valid config still cannot do here: read its secrets and run with them, write its state."""
    from tradebot.app.preflight import setup_problems
    from tradebot.core.errors import ConfigError
    from tradebot.core.secrets import load_secrets

    problems = []
    try:
        secrets = load_secrets(settings.secrets_path, declared=host.secret_names())
    except ConfigError as exc:
        problems.append(f"{exc.message} @ $.bot.secrets_file")
    else:
        problems.extend(setup_problems(settings, secrets, host))
    state = settings.state_path
    existing = next((p for p in (state, *state.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"state directory {state} cannot be created or written @ $.bot.state_dir")
    return problems


@config.command("show")
@config_option
def show(config_path: Path | None) -> None:
    """Print the effective configuration, defaults included, as TOML."""
    import tomlkit

    prepared = prepare_or_exit(config_path)
    click.echo(tomlkit.dumps(unstructure(prepared.settings)))
