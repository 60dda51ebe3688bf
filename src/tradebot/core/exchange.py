"""What an exchange plugin provides.

An exchange plugin registers a factory (see :mod:`tradebot.core.hookspecs`) that builds
an object satisfying :class:`Exchange`. The engine talks to exchanges only through this
protocol, so Kraken, the paper exchange and any third-party exchange are interchangeable.

All methods raise subclasses of :class:`tradebot.core.errors.TradebotError` only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from tradebot.core.markets import MarketRules
from tradebot.core.models import Balances, Candle, Fill, OrderInfo, OrderRequest, SystemStatus, Ticker

__all__ = ["Exchange", "KeepsOrderHistory", "ListsMarkets", "MarketDataSource", "MarketEvent"]

MarketEvent = Ticker | Candle


@runtime_checkable
class Exchange(Protocol):
    """An exchange connection (REST + streaming market data)."""

    name: str

    async def start(self) -> None:
        """Open sessions/connections. Called once before any other method."""

    async def close(self) -> None:
        """Release every connection. Safe to call more than once."""

    async def server_time(self) -> datetime:
        """The exchange's clock (aware UTC), for clock-skew checks."""

    async def system_status(self) -> SystemStatus:
        """``online`` / ``maintenance`` / ``cancel_only`` / ``post_only``."""

    async def markets(self) -> Mapping[str, MarketRules]:
        """The market rules of every pair the exchange lists, keyed by ``BASE/QUOTE``.

        Precision, minimums, fees (the account's tier where the exchange tells it) and
        status. Orders are fitted to these before they are sent, and a pair missing from
        the answer is not traded. Cheap to call often: implementations cache and refresh
        on their own schedule, and keep a pair's last good rules when an answer about it
        is incomplete.
        """

    async def balances(self) -> Balances:
        """Balances per asset; stale (with age) when the exchange cannot be reached."""

    async def place_order(self, request: OrderRequest) -> OrderInfo:
        """Place an order carrying ``request.client_order_id``.

        Exactly-once: when the outcome is unknown the implementation looks the order up
        by its client id before resending, and raises
        :class:`~tradebot.core.errors.OrderOutcomeUnknown` if it still cannot tell.
        """

    async def cancel_order(self, client_order_id: str) -> bool:
        """Cancel by client order id. True when an order was cancelled."""

    async def open_orders(self) -> Sequence[OrderInfo]:
        """Every open order of the account."""

    async def order_by_client_id(self, client_order_id: str) -> OrderInfo | None:
        """Look an order up (open or closed) by its client id; None when there is none."""

    async def closed_orders(self, since: datetime | None = None) -> Sequence[OrderInfo]:
        """Orders of the account that were closed (filled, cancelled, expired) after ``since``
        (all that the exchange keeps when None). What rebuilds a lost order journal."""

    async def trades(self, since: datetime | None = None) -> Sequence[Fill]:
        """The account's trades (executions) after ``since`` (all when None). A trade need not
        carry a client order id; ``exchange_order_id`` names its order."""

    def market_data(
        self, pairs: Sequence[str], *, ohlc_interval: int | None = None
    ) -> AsyncIterator[MarketEvent]:
        """Stream tickers (and candles when ``ohlc_interval`` is set) for ``pairs``.

        The stream heals itself (reconnect, resubscribe, REST fallback) and ends only when
        the exchange is closed or the consumer stops iterating.
        """


# --- parts of an exchange that another component may rely on alone ---------------------------
# (checked with isinstance once, where the component is given the exchange)


@runtime_checkable
class MarketDataSource(Protocol):
    """What a paper-trading exchange needs of the exchange it wraps: its market data."""

    def market_data(
        self, pairs: Sequence[str], *, ohlc_interval: int | None = None
    ) -> AsyncIterator[MarketEvent]:
        """See :meth:`Exchange.market_data`."""


@runtime_checkable
class ListsMarkets(Protocol):
    """An exchange that tells its market rules (:meth:`Exchange.markets`)."""

    async def markets(self) -> Mapping[str, MarketRules]:
        """See :meth:`Exchange.markets`."""


@runtime_checkable
class KeepsOrderHistory(Protocol):
    """An exchange that lists its closed orders (:meth:`Exchange.closed_orders`)."""

    async def closed_orders(self, since: datetime | None = None) -> Sequence[OrderInfo]:
        """See :meth:`Exchange.closed_orders`."""
