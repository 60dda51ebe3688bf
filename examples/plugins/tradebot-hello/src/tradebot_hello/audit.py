"""``hello-audit``: a plugin made only of lifecycle hooks, with a settings table of its own.

It declares its ``[plugins.hello-audit]`` table with ``tradebot_plugin_settings`` (checked
by ``tradebot config check`` like any other table), receives the validated settings in
``tradebot_configure``, and then appends one JSON line per event (start, stop, trading-state
change and, with ``fills = true``, every fill) to ``file`` in the state directory.

The plugin is an object rather than a module (entry point ``tradebot_hello.audit:plugin``),
so its settings live on the object instead of in module globals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from tradebot.api import Fill, PluginContext, TradingStateChange, hookimpl, non_empty, utc_now

__all__ = ["AuditConfig", "AuditPlugin", "plugin"]


@attrs.frozen
class AuditConfig:
    """``[plugins.hello-audit]``"""

    file: str = attrs.field(default="hello-audit.jsonl", validator=non_empty)
    """Where the trail goes; relative paths are inside the state directory."""
    fills: bool = True
    """Record every fill as well."""


class AuditPlugin:
    """The audit trail; one instance is the plugin."""

    def __init__(self) -> None:
        self.config = AuditConfig()
        self.view: PluginContext | None = None

    @hookimpl
    def tradebot_plugin_settings(self) -> type:
        return AuditConfig

    @hookimpl
    def tradebot_configure(self, config: AuditConfig, context: PluginContext) -> None:
        self.config = config
        self.view = context

    @hookimpl
    def tradebot_startup(self, context: Any) -> None:
        trading = self.view.trading if self.view is not None else None
        self._write("startup", state=trading.state.value if trading is not None else None)

    @hookimpl
    def tradebot_trading_state_changed(self, change: TradingStateChange) -> None:
        self._write(
            "trading-state",
            previous=change.previous.value,
            current=change.current.value,
            reason=change.reason,
            source=change.source,
        )

    @hookimpl
    def tradebot_fill_report(self, fill: Fill) -> None:
        if self.config.fills:
            self._write(
                "fill",
                pair=fill.pair,
                side=fill.side.value,
                volume=str(fill.volume),
                price=str(fill.price),
                client_order_id=fill.client_order_id,
            )

    @hookimpl
    def tradebot_shutdown(self, context: Any, reason: str) -> None:
        self._write("shutdown", reason=reason)

    def _write(self, event: str, **fields: Any) -> None:
        if self.view is None:
            return  # not configured: the bot did not start (config check, plugins list)
        path = Path(self.config.file).expanduser()
        if not path.is_absolute():
            path = self.view.state_dir / path
        record = {"event": event, "time": utc_now().isoformat(), "bot": self.view.bot_name, **fields}
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


plugin = AuditPlugin()
"""The plugin object the entry point names."""
