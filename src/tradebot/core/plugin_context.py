"""The read-only view of the running bot that the public API hands to plugins.

:class:`PluginContext` wraps the engine's :class:`~tradebot.core.context.BotContext` (which
the engine keeps using unchanged) and exposes only what a plugin may rely on: the exchange,
a read-only portfolio, the trading state, the clock, a logger and the plugin's own config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.exchange import Exchange
from tradebot.core.models import TradingState
from tradebot.core.store import Position

__all__ = ["PluginContext", "PortfolioView", "TradingView"]


@runtime_checkable
class PortfolioView(Protocol):
    """The bot's portfolio, read-only: cash, positions and PnL in the quote currency."""

    @property
    def quote(self) -> str:
        """The quote currency cash and PnL are counted in."""

    @property
    def cash(self) -> Decimal:
        """Cash in the quote currency."""

    @property
    def realized_pnl(self) -> Decimal:
        """Realised PnL, net of fees, since the state was created."""

    def position(self, pair: str) -> Position:
        """The position in ``pair`` (flat when there is none)."""

    def positions(self) -> Mapping[str, Position]:
        """Every non-flat position, by pair."""

    def mark_price(self, pair: str) -> Decimal | None:
        """The latest mark (mid) price of ``pair``; None before the first ticker."""

    def equity(self) -> Decimal | None:
        """Cash plus positions at their marks; None while a held pair has no mark."""


@runtime_checkable
class TradingView(Protocol):
    """The trading state, read-only: ACTIVE, REDUCING or HALTED, with why, by whom and since when."""

    @property
    def state(self) -> TradingState:
        """The current trading state."""

    @property
    def reason(self) -> str:
        """Why the bot is in this state."""

    @property
    def source(self) -> str:
        """Who or what put it there (``operator``, ``check:drawdown`` ...)."""

    @property
    def since(self) -> datetime:
        """When the state was entered (aware UTC)."""


@attrs.frozen
class _PortfolioReader:
    """Only the reading side of the engine's portfolio."""

    _portfolio: Any

    @property
    def quote(self) -> str:
        return str(self._portfolio.quote)

    @property
    def cash(self) -> Decimal:
        return Decimal(self._portfolio.cash)

    @property
    def realized_pnl(self) -> Decimal:
        return Decimal(self._portfolio.realized_pnl)

    def position(self, pair: str) -> Position:
        found: Position = self._portfolio.position(pair)
        return found

    def positions(self) -> Mapping[str, Position]:
        return dict(self._portfolio.positions())

    def mark_price(self, pair: str) -> Decimal | None:
        price: Decimal | None = self._portfolio.mark_price(pair)
        return price

    def equity(self) -> Decimal | None:
        value: Decimal | None = self._portfolio.equity()
        return value


@attrs.frozen
class _TradingReader:
    """Only the reading side of the engine's trading-state machine."""

    _trading: Any

    @property
    def state(self) -> TradingState:
        return TradingState(self._trading.state)

    @property
    def reason(self) -> str:
        return str(self._trading.reason)

    @property
    def source(self) -> str:
        return str(self._trading.source)

    @property
    def since(self) -> datetime:
        since: datetime = self._trading.since
        return since


@attrs.frozen
class PluginContext:
    """What a plugin may read of the running bot; nothing here changes it.

    Build one from the ``context`` a factory or ``tradebot_startup`` receives with
    :meth:`of`. Parts a run does not have (yet) are None: the portfolio and trading state
    exist from start-up on, the exchange once it is connected. Read them when you need
    them, not once in the constructor.
    """

    _bot: Any = attrs.field(alias="bot", repr=False)
    plugin: str | None = None
    """The plugin this context is for (None when built without one)."""
    config: Any = None
    """The plugin's own validated config object (its ``[plugins.<name>]`` table), or None."""

    @classmethod
    def of(cls, context: Any, *, plugin: str | None = None, config: Any = None) -> PluginContext:
        """The plugin's view of ``context`` (a bot context, or a PluginContext to re-label)."""
        if isinstance(context, PluginContext):
            return cls(
                bot=context._bot,
                plugin=plugin if plugin is not None else context.plugin,
                config=config if config is not None else context.config,
            )
        return cls(bot=context, plugin=plugin, config=config)

    @property
    def bot_name(self) -> str:
        """``[bot] name``."""
        settings = getattr(self._bot, "settings", None)
        return str(settings.bot.name) if settings is not None else "tradebot"

    @property
    def pairs(self) -> tuple[str, ...]:
        """The pairs the bot trades (``[bot] pairs``)."""
        settings = getattr(self._bot, "settings", None)
        return tuple(settings.bot.pairs) if settings is not None else ()

    @property
    def state_dir(self) -> Path:
        """The bot's state directory (a plugin may keep its own files in a folder named after it)."""
        return Path(getattr(self._bot, "state_dir", Path(".")))

    @property
    def exchange(self) -> Exchange | None:
        """The exchange the bot trades on (None until it is connected)."""
        exchange: Exchange | None = getattr(self._bot, "exchange", None)
        return exchange

    @property
    def portfolio(self) -> PortfolioView | None:
        """Cash, positions and PnL, read-only (None before the engine has started)."""
        portfolio = getattr(self._bot, "portfolio", None)
        return None if portfolio is None else _PortfolioReader(portfolio)

    @property
    def trading(self) -> TradingView | None:
        """The trading state, read-only (None outside a running bot)."""
        trading = getattr(self._bot, "trading", None)
        return None if trading is None else _TradingReader(trading)

    @property
    def clock(self) -> Clock:
        """The bot's clock: use it, not ``time``/``datetime``, so tests can run on fake time."""
        clock: Clock | None = getattr(self._bot, "clock", None)
        return clock if clock is not None else SystemClock()

    @property
    def logger(self) -> logging.Logger:
        """A logger named after the plugin (``tradebot.plugin.<name>``)."""
        return logging.getLogger(f"tradebot.plugin.{self.plugin or 'unnamed'}")
