"""The public plugin API of tradebot: the one module a plugin imports.

Everything a plugin author needs is here, and what is not here is private to tradebot and
may change without notice: the hook marker, the component description a register hook
returns, one ``Protocol`` per component kind, the base classes the built-in plugins use, the
config validators, the errors a plugin may raise, the data models, and a read-only view of
the running bot.

A plugin is a module (or any object) with hook implementations, registered through the
``tradebot`` entry-point group of its package::

    from tradebot.api import ComponentSpec, hookimpl

    @hookimpl
    def tradebot_register_checks() -> list[ComponentSpec]:
        return [ComponentSpec(name="hello", factory=HelloCheck, config_cls=HelloConfig)]

What each factory receives, and what the component it builds must provide:

=============  ===================================  =================================  ====================
kind           register hook                        factory(config, context) context   returns
=============  ===================================  =================================  ====================
exchange       ``tradebot_register_exchanges``      the bot context (wrap it with      :class:`Exchange`
                                                    :meth:`PluginContext.of`)
strategy       ``tradebot_register_strategies``     :class:`StrategyContext`           :class:`Strategy`
check          ``tradebot_register_checks``         the bot context                    :class:`Check`
HALT trigger   ``tradebot_register_halt_triggers``  the bot context                    :class:`Check`
recovery       ``tradebot_register_recovery_        the bot context                    :class:`RecoveryAction`
               actions``
policy         ``tradebot_register_position_        the bot context                    :class:`PositionPolicy`
               policies``
notifier       ``tradebot_register_notifiers``      the bot context                    :class:`Notifier`
=============  ===================================  =================================  ====================

``config`` is an instance of the spec's ``config_cls``, validated from the component's table
(``[exchanges.<name>]``, ``[strategies.<instance>.params]``, ``[checks.<name>]``,
``[recovery.<name>]``, ``[policies.<name>]``, ``[notifiers.<name>]``), or None without one.
A plugin made only of lifecycle hooks declares its own ``[plugins.<name>]`` table with
``tradebot_plugin_settings`` and receives it in ``tradebot_configure``.

What is here, by purpose:

* the contract: :data:`hookimpl`, :class:`ComponentSpec`, :data:`API_VERSION`,
  :data:`OPT_IN_GROUP`;
* one ``Protocol`` per component kind: :class:`Exchange`, :class:`Strategy`, :class:`Check`
  (checks and HALT triggers), :class:`RecoveryAction`, :class:`PositionPolicy`,
  :class:`Notifier`;
* base classes and helpers: :class:`BaseCheck` with :class:`TriggerOptions`,
  :class:`ActionBase` with :class:`RecoveryLimits` and :func:`probe_exchange`,
  :class:`PriceSampler` with :data:`PRICE_SOURCES` and :func:`buy_volume`, :class:`HttpPoster`
  with :func:`check_url`, :func:`format_positions`, :data:`FLATTEN_STRATEGY` (the strategy name
  a HALT policy's own orders are booked under), :data:`EXIT_ESCALATE` (the exit code that
  asks ``--auto-restart`` or systemd for a restart) and :func:`is_core_module`;
* for exchange plugins: :func:`order_at_wire` (the trading state's last word before an order
  leaves; it raises :class:`OrderHeld`), :class:`FeeSchedule`, :func:`fit_order` and
  :class:`MarketRuleError`, the optional capabilities :class:`ListsMarkets` and
  :class:`MarketDataSource` (what paper trading needs of a wrapped exchange), :class:`SystemClock`, :func:`cancel_and_wait`,
  the optional capability :class:`ReportsResilience` with its :class:`ResilienceStats` snapshot
  (an exchange's breakers, rate limits, retries and latencies, read by ``/metrics``), and the
  resilience toolkit (breakers, rate limits, retries) in :mod:`tradebot.api.resilience`;
* what components receive and return: :class:`StrategyContext`, :data:`MarketEvent`,
  :class:`CheckResult`, :class:`HealthStatus`, :class:`HealthReport`, :class:`Failure`,
  :class:`PolicyOutcome`, :class:`Notification`;
* the running bot, read-only: :class:`PluginContext`, :class:`PortfolioView`,
  :class:`TradingView`, :class:`Clock` (and :class:`FakeClock` for tests);
* config validators: :func:`gt`, :func:`ge`, :func:`lt`, :func:`le`, :func:`in_range`,
  :func:`one_of`, :func:`non_empty`;
* the errors a plugin raises (:class:`TransientError` and :class:`PermanentError` and their
  kinds, all :class:`TradebotError`) and :func:`describe`;
* the data models: orders, fills, tickers, candles, balances, positions, signals, trading
  state and alerts.

What a component may do is declared on it, never inferred from its name, so a third-party
component behaves exactly like the built-in one: a position policy with ``flattens = True``
ends the run once its HALT is done (as ``close``); a recovery step with ``escalates = True``
heals by handing the failure on (as ``escalate``); an exchange spec with ``fills_on_paper``
fills on paper over another exchange's market data (as ``paper``), one with ``on_simulator``
can run against the built-in simulator (as ``kraken``); and a plugin listed in the
entry-point group :data:`OPT_IN_GROUP` of its package is off until the user enables it (as
``telegram``). ``tradebot run --paper`` paper-trades any exchange plugin: its market data
and ``markets()`` drive the paper fills.

Versioning: :data:`API_VERSION` is a semantic version of this module's names and their
meaning. Adding a name raises the minor version; removing or changing one raises the major
version.
"""

from __future__ import annotations

from tradebot.api._http import HttpPoster, check_url
from tradebot.api._recovery import ActionBase, probe_exchange
from tradebot.core.clock import Clock, FakeClock, SystemClock
from tradebot.core.components import ComponentSpec
from tradebot.core.errors import (
    AuthError,
    BadDataError,
    CircuitOpen,
    ConfigError,
    ConnectionFailed,
    DNSError,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    MarketClosed,
    NetworkError,
    OrderNotFound,
    OrderOutcomeUnknown,
    PermanentError,
    RateLimited,
    RequestTimeout,
    StateError,
    TradebotError,
    TransientError,
    UnknownPair,
    describe,
)
from tradebot.core.exchange import Exchange, ListsMarkets, MarketDataSource, MarketEvent
from tradebot.core.healing import EXIT_ESCALATE, Failure, RecoveryAction, RecoveryLimits, is_core_module
from tradebot.core.health import BaseCheck, Check, CheckResult, HealthReport, HealthStatus, TriggerOptions
from tradebot.core.hookspecs import hookimpl
from tradebot.core.markets import FeeSchedule, MarketRuleError, MarketRules, PairStatus, buy_volume, fit_order
from tradebot.core.models import (
    Alert,
    AlertLevel,
    Balances,
    Candle,
    Fill,
    OrderInfo,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    Signal,
    SystemStatus,
    Ticker,
    TradingState,
    TradingStateChange,
    utc_now,
)
from tradebot.core.plugin_context import PluginContext, PortfolioView, TradingView
from tradebot.core.plugins import OPT_IN_GROUP
from tradebot.core.policy import PolicyOutcome, PositionPolicy, format_positions
from tradebot.core.portfolio import FLATTEN_STRATEGY
from tradebot.core.store import Position, PositionClosed
from tradebot.core.strategy import PRICE_SOURCES, PriceSampler, Strategy, StrategyContext
from tradebot.core.tasks import cancel_and_wait
from tradebot.core.trading_state import OrderHeld, order_at_wire
from tradebot.core.validate import ge, gt, in_range, le, lt, non_empty, one_of
from tradebot.resilience.stats import ReportsResilience, ResilienceStats
from tradebot.services.notify import Notification, Notifier

API_VERSION = "1.2.0"
"""Semantic version of the public plugin API (this module's names and their meaning)."""

__all__ = [  # sorted; the module docstring groups them by purpose
    "API_VERSION",
    "EXIT_ESCALATE",
    "FLATTEN_STRATEGY",
    "OPT_IN_GROUP",
    "PRICE_SOURCES",
    "ActionBase",
    "Alert",
    "AlertLevel",
    "AuthError",
    "BadDataError",
    "Balances",
    "BaseCheck",
    "Candle",
    "Check",
    "CheckResult",
    "CircuitOpen",
    "Clock",
    "ComponentSpec",
    "ConfigError",
    "ConnectionFailed",
    "DNSError",
    "Exchange",
    "ExchangeError",
    "ExchangeUnavailable",
    "Failure",
    "FakeClock",
    "FeeSchedule",
    "Fill",
    "HealthReport",
    "HealthStatus",
    "HttpPoster",
    "InsufficientFunds",
    "InvalidNonce",
    "InvalidOrder",
    "ListsMarkets",
    "MarketClosed",
    "MarketDataSource",
    "MarketEvent",
    "MarketRuleError",
    "MarketRules",
    "NetworkError",
    "Notification",
    "Notifier",
    "OrderHeld",
    "OrderInfo",
    "OrderNotFound",
    "OrderOutcomeUnknown",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "PairStatus",
    "PermanentError",
    "PluginContext",
    "PolicyOutcome",
    "PortfolioView",
    "Position",
    "PositionClosed",
    "PositionPolicy",
    "PriceSampler",
    "RateLimited",
    "RecoveryAction",
    "RecoveryLimits",
    "ReportsResilience",
    "RequestTimeout",
    "ResilienceStats",
    "Side",
    "Signal",
    "StateError",
    "Strategy",
    "StrategyContext",
    "SystemClock",
    "SystemStatus",
    "Ticker",
    "TradebotError",
    "TradingState",
    "TradingStateChange",
    "TradingView",
    "TransientError",
    "TriggerOptions",
    "UnknownPair",
    "buy_volume",
    "cancel_and_wait",
    "check_url",
    "describe",
    "fit_order",
    "format_positions",
    "ge",
    "gt",
    "hookimpl",
    "in_range",
    "is_core_module",
    "le",
    "lt",
    "non_empty",
    "one_of",
    "order_at_wire",
    "probe_exchange",
    "utc_now",
]
