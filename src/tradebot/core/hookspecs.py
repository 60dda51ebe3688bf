"""The plugin contract: every hook a tradebot plugin may implement.

Two families:

* **register** hooks return the components a plugin provides, as
  :class:`~tradebot.core.components.ComponentSpec` values keyed by a stable name that
  the config refers to. They are called once at start-up, are synchronous, and must not
  do I/O.
* **lifecycle and broadcast** hooks tell plugins what happens. They may be plain
  functions or ``async def``; the core awaits whatever is awaitable. Their return value
  is ignored. A broadcast hook that raises is isolated: the failure is logged and
  attributed to the plugin, and the other plugins are still called.

Hooks are never called by string from the rest of the code: use
:class:`tradebot.core.plugins.PluginHost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from tradebot.core.models import Alert, Fill, OrderInfo, TradingStateChange

if TYPE_CHECKING:
    from tradebot.core.components import ComponentSpec

PROJECT = "tradebot"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "REGISTER_HOOKS", "hookimpl", "hookspec"]


# --- register components -----------------------------------------------------


@hookspec
def tradebot_register_exchanges() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the exchanges this plugin provides.

    Called once at start-up, synchronous. Each spec's factory is called as
    ``factory(config, context)`` and returns an object satisfying
    :class:`tradebot.core.exchange.Exchange`.
    """


@hookspec
def tradebot_register_strategies() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the strategies this plugin provides.

    Called once at start-up, synchronous. Each factory is called once per configured
    strategy instance as ``factory(config, context)`` and returns a
    :class:`tradebot.core.strategy.Strategy`.
    """


@hookspec
def tradebot_register_checks() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the health checks this plugin provides.

    Called once at start-up, synchronous. Each factory returns a
    :class:`tradebot.core.health.Check`; a check reports ok / degraded / critical.
    """


@hookspec
def tradebot_register_halt_triggers() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the HALT triggers this plugin provides.

    Called once at start-up, synchronous. A HALT trigger is a check whose critical
    result moves the trading state to REDUCING or HALTED (see
    :class:`tradebot.core.health.Check`).
    """


@hookspec
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the recovery actions (healing ladder steps) this plugin provides.

    Called once at start-up, synchronous. Each factory returns a
    :class:`tradebot.core.healing.RecoveryAction`.
    """


@hookspec
def tradebot_register_position_policies() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the HALT position policies (maintain / close / reduce ...) this plugin provides.

    Called once at start-up, synchronous. Each factory returns a
    :class:`tradebot.core.policy.PositionPolicy`, applied when the bot enters HALTED.
    """


@hookspec
def tradebot_register_notifiers() -> Sequence[ComponentSpec]:  # type: ignore[empty-body]
    """Return the notifiers (log, Telegram, webhook ...) this plugin provides.

    Called once at start-up, synchronous. Each factory returns a
    :class:`tradebot.services.notify.Notifier`.
    """


REGISTER_HOOKS: dict[str, str] = {
    "tradebot_register_exchanges": "exchange",
    "tradebot_register_strategies": "strategy",
    "tradebot_register_checks": "check",
    "tradebot_register_halt_triggers": "halt-trigger",
    "tradebot_register_recovery_actions": "recovery",
    "tradebot_register_position_policies": "policy",
    "tradebot_register_notifiers": "notifier",
}
"""Register hook name -> the plugin category it makes a plugin belong to."""


# --- a plugin's own settings ---------------------------------------------------


@hookspec(firstresult=True)
def tradebot_plugin_settings() -> type:  # type: ignore[empty-body]
    """Return the attrs class that validates this plugin's own ``[plugins.<name>]`` table.

    For plugins whose settings belong to no component, like one made only of lifecycle
    hooks. Called once at start-up, synchronous, no I/O. ``<name>`` is the plugin's
    entry-point name. The table is validated like a component's (unknown keys rejected,
    every problem reported with its path) by ``tradebot config check`` and at start-up;
    without a table the class's defaults apply. The validated object is handed to
    :func:`tradebot_configure`.
    """


@hookspec
def tradebot_configure(config: Any, context: Any) -> None:
    """Take this plugin's validated settings (see :func:`tradebot_plugin_settings`).

    Called once per run for this plugin only, after the bot's parts are built and before
    :func:`tradebot_startup`. ``config`` is the plugin's validated config object and
    ``context`` its :class:`tradebot.api.PluginContext` (with that config). May be async.
    If it raises, the plugin is quarantined for the run (its hooks are not called again);
    a plugin in ``[plugins] required`` stops the start-up instead.
    """


# --- lifecycle and broadcast -------------------------------------------------


@hookspec
def tradebot_startup(context: Any) -> None:
    """The bot has started: components are built and trading is about to begin.

    ``context`` is the :class:`tradebot.core.context.BotContext`. May be async.
    """


@hookspec
def tradebot_shutdown(context: Any, reason: str) -> None:
    """The bot is stopping (``reason`` says why). Called before sessions close. May be async."""


@hookspec
def tradebot_trading_state_changed(change: TradingStateChange) -> None:
    """The trading state changed (ACTIVE / REDUCING / HALTED). May be async.

    Called after the new state is persisted, so a plugin may rely on it.
    """


@hookspec
def tradebot_alert(alert: Alert) -> None:
    """Something a person should know about happened. May be async."""


@hookspec
def tradebot_order_report(order: OrderInfo) -> None:
    """An order changed status (placed, filled, cancelled, rejected). May be async."""


@hookspec
def tradebot_fill_report(fill: Fill) -> None:
    """An order was (partly) filled. May be async."""


@hookspec
def tradebot_health_report(report: Any) -> None:
    """A health round finished. ``report`` is a :class:`tradebot.core.health.HealthReport`.

    May be async. Called on every round; compare with the previous report to react to
    changes only.
    """
