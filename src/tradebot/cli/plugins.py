"""``tradebot plugins list|enable|disable``."""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path

import click

from tradebot.app.config import Settings, find_config, load_settings, required_plugin_issues
from tradebot.cli._common import config_option
from tradebot.core.errors import ConfigError
from tradebot.core.plugins import (
    PluginHost,
    PluginInfo,
    gather_infos,
    installed_plugins,
    name_clashes,
    opt_in_plugins,
    resolve_enabled,
)


@click.group()
def plugins() -> None:
    """List, enable and disable plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("--all", "show_all", is_flag=True, help="Also list installed plugins that are not enabled.")
@config_option
def list_plugins(as_json: bool, show_all: bool, config_path: Path | None) -> None:
    """Installed plugins: name, category, enabled, state (loaded, failed, quarantined, disabled),
    distribution, version, hooks."""
    settings: Settings | None
    try:
        settings = load_settings(config_path)
        configured, quarantine_after = settings.plugins.enabled, settings.plugins.quarantine_after
        disabled = settings.plugins.disabled
    except ConfigError as exc:
        click.echo(f"warning: {exc}\n(listing with the default plugin set)", err=True)
        settings, configured, quarantine_after, disabled = None, None, 5, []
    enabled = resolve_enabled(configured, installed_plugins(), disabled=disabled)
    # load problems are printed below, once, instead of as log lines
    logging.getLogger("tradebot.plugins").addHandler(logging.NullHandler())
    host = PluginHost(quarantine_after=quarantine_after)
    host.load(enabled)  # every enabled plugin is listed; required ones that did not load are named below
    infos = gather_infos(host, enabled, include_disabled=show_all)
    if as_json:
        click.echo(json.dumps([i.as_json() for i in infos], indent=2))
    else:
        _print_table(infos)
    for i in infos:
        if i.error:
            click.echo(f"error: plugin {i.name!r}: {i.error}", err=True)
    for name in host.report.unknown:
        click.echo(f"error: plugin {name!r} is enabled but not installed", err=True)
    for issue in name_clashes():
        click.echo(f"error: {issue}", err=True)
    for issue in required_plugin_issues(settings, host) if settings is not None else []:
        click.echo(f"error: {issue}", err=True)


def _print_table(infos: list[PluginInfo]) -> None:
    rows = [("NAME", "CATEGORY", "ENABLED", "STATE", "DISTRIBUTION", "VERSION", "HOOKS")]
    for i in infos:
        hooks = ", ".join(h.removeprefix("tradebot_") for h in i.hooks)
        rows.append(
            (
                i.name,
                i.category,
                "yes" if i.enabled else "no",
                i.state,
                i.distribution or "-",
                i.version or "-",
                hooks,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in range(6)) + "  " + r[6])


def _edit_enabled(name: str, config_path: Path | None, enable: bool) -> None:
    import tomlkit

    installed = installed_plugins()
    if name not in installed:
        near = difflib.get_close_matches(name, list(installed), n=3)
        hint = (
            f" Did you mean: {', '.join(near)}?" if near else f" Installed: {', '.join(sorted(installed))}."
        )
        raise click.ClickException(f"no plugin named {name!r} is installed.{hint}")
    path = find_config(config_path) or Path("tradebot.toml")
    if path.exists():
        try:
            doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - tomlkit raises several parse error types
            raise click.ClickException(f"{path} is not valid TOML: {exc}") from None
    else:
        doc = tomlkit.document()
    table = doc.get("plugins")
    if table is None:
        table = tomlkit.table()
        doc["plugins"] = table
    disabled = table.get("disabled")
    off = [str(x) for x in disabled] if disabled is not None else []
    current = table.get("enabled")
    names = [str(x) for x in current] if current is not None else None
    required = table.get("required")
    still_required = not enable and isinstance(required, list) and name in [str(x) for x in required]
    if enable:
        default_on = name not in opt_in_plugins() if names is None else name in names
        if default_on and name not in off:
            click.echo(f"{name} is already enabled in {path}")
            return
        if name in off:
            assert disabled is not None
            disabled.remove(name)
            if not len(disabled):
                del table["disabled"]
        if not default_on:
            if current is None:
                # a plugin that is off by default: the enabled set is written out, from the
                # default set, so that enabling one plugin disables none
                current = tomlkit.array()
                for n in resolve_enabled(None, installed, environ={}, disabled=off):
                    current.append(n)
                current.multiline(True)
                table["enabled"] = current
            current.append(name)
    else:
        loaded = name not in opt_in_plugins() if names is None else name in names
        if name in off or not loaded:
            click.echo(f"{name} is already disabled in {path}")
            return
        # [plugins] enabled is left as it is: plugins installed later still load by default
        if disabled is None:
            disabled = tomlkit.array()
            table["disabled"] = disabled
        disabled.append(name)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    click.echo(f"{'enabled' if enable else 'disabled'} {name} in {path}")
    if still_required:
        click.echo(
            f"warning: {name} is still in [plugins] required: start-up fails until it is enabled again "
            f"or removed from required",
            err=True,
        )


@plugins.command("enable")
@click.argument("name")
@config_option
def enable(name: str, config_path: Path | None) -> None:
    """Enable plugin NAME in the config file (comments and layout are kept)."""
    _edit_enabled(name, config_path, True)


@plugins.command("disable")
@click.argument("name")
@config_option
def disable(name: str, config_path: Path | None) -> None:
    """Disable plugin NAME in the config file (comments and layout are kept)."""
    _edit_enabled(name, config_path, False)
