"""The bot's shared runtime, handed to plugin factories and lifecycle hooks.

Built by the engine at start-up. Plugins read what they need from it; they never
import each other. Fields that a particular run does not have are ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from tradebot.core.clock import Clock, SystemClock

if TYPE_CHECKING:
    from tradebot.app.config import Settings
    from tradebot.core.exchange import Exchange
    from tradebot.core.plugins import PluginHost

__all__ = ["BotContext"]


@attrs.define
class BotContext:
    """Everything a running bot shares between its core parts and its plugins."""

    settings: Settings
    plugins: PluginHost
    clock: Clock = attrs.field(factory=SystemClock)
    state_dir: Path = Path(".")
    exchange: Exchange | None = None
    store: Any = None  # tradebot.core.store.StateStore
    bus: Any = None  # tradebot.core.bus.EventBus
    trading: Any = None  # tradebot.core.trading_state.TradingStateMachine
    health: Any = None  # tradebot.core.health.HealthMonitor
    portfolio: Any = None  # tradebot.core.portfolio.Portfolio
    executor: Any = None  # tradebot.core.executor.OrderExecutor
    healer: Any = None  # tradebot.core.healing.Healer
    supervisor: Any = None  # tradebot.core.supervisor.Supervisor
    metrics: Any = None  # tradebot.services.metrics.BotMetrics
    extras: dict[str, Any] = attrs.field(factory=dict)
