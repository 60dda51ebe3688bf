"""Start-up common to every command: settings, then the enabled plugins, then plugin configs."""

from __future__ import annotations

from pathlib import Path

import attrs

from tradebot.app.config import (
    InvalidSettings,
    Settings,
    load_settings,
    protection_issues,
    validate_plugin_tables,
)
from tradebot.core.errors import ConfigError
from tradebot.core.plugins import PluginHost, installed_plugins, name_clashes, resolve_enabled

__all__ = ["Prepared", "prepare"]


@attrs.define
class Prepared:
    """Validated settings with their loaded plugin host."""

    settings: Settings
    host: PluginHost
    enabled: list[str]


def prepare(
    config: str | Path | None = None, *, settings: Settings | None = None, signals_from_code: bool = False
) -> Prepared:
    """Load settings and plugins and validate every plugin table.

    ``signals_from_code``: the caller feeds the bot its signals itself (the drill), so a
    config with no strategy instance is not refused as one that would trade nothing.

    Raises :class:`ConfigError` listing every problem, or :class:`PluginError` when a
    required plugin cannot load.
    """
    if settings is None:
        try:
            settings = load_settings(config)
        except InvalidSettings as exc:
            exc.add_plugin_issues()  # plugins are loaded here anyway: list their tables' problems too
            raise
    enabled = resolve_enabled(
        settings.plugins.enabled, installed_plugins(), disabled=settings.plugins.disabled
    )
    host = PluginHost(quarantine_after=settings.plugins.quarantine_after)
    host.load(enabled, required=settings.plugins.required)
    issues = name_clashes()
    issues += validate_plugin_tables(settings, host)
    issues += [
        i for i in protection_issues(settings, host, need_strategy=not signals_from_code) if i not in issues
    ]
    if issues:
        where = f" in {settings.source}" if settings.source else ""
        raise ConfigError(f"invalid configuration{where}", issues)
    return Prepared(settings=settings, host=host, enabled=enabled)
