"""Domain values shared by the core and every plugin.

Prices, volumes and money are :class:`~decimal.Decimal`; times are timezone-aware UTC
datetimes. Pairs use the ``BASE/QUOTE`` form (``"BTC/USD"``), assets their common codes
(``"BTC"``, ``"USD"``); exchange plugins translate to and from their own codes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

import attrs

__all__ = [
    "Alert",
    "AlertLevel",
    "Balances",
    "Candle",
    "Fill",
    "OrderInfo",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "Side",
    "Signal",
    "SystemStatus",
    "Ticker",
    "TradingState",
    "TradingStateChange",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Side(enum.StrEnum):
    """Buy or sell."""

    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    """Market (fills at once at the best price) or limit (never worse than ``price``)."""

    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(enum.StrEnum):
    """Lifecycle of an order as the bot sees it."""

    PENDING = "pending"  # journalled, not yet acknowledged by the exchange
    OPEN = "open"  # resting on the book (possibly partly filled)
    CLOSED = "closed"  # fully filled
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # sent, outcome not known yet: must be resolved by lookup

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.CLOSED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED)


class TradingState(enum.StrEnum):
    """Whether the bot may open new exposure."""

    ACTIVE = "active"  # trade normally
    REDUCING = "reducing"  # only exposure-reducing orders
    HALTED = "halted"  # no new orders; cancels always pass

    @property
    def severity(self) -> int:
        return {"active": 0, "reducing": 1, "halted": 2}[self.value]


@attrs.frozen
class Ticker:
    """Best bid/ask and last trade of one pair at one moment."""

    pair: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    volume: Decimal
    time: datetime

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@attrs.frozen
class Candle:
    """One OHLC bar; ``interval_min`` minutes starting at ``open_time``."""

    pair: str
    interval_min: int
    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    vwap: Decimal
    volume: Decimal
    count: int


@attrs.frozen
class Balances:
    """Balances per asset as of ``as_of``.

    ``stale`` is true when the exchange could not be reached and these are the last known
    values; ``age_s`` then tells how old they are. Never a made-up number.
    """

    totals: Mapping[str, Decimal]
    as_of: datetime
    stale: bool = False
    age_s: float = 0.0

    def get(self, asset: str) -> Decimal:
        return self.totals.get(asset, Decimal(0))


@attrs.frozen
class SystemStatus:
    """Exchange status: ``online``, ``maintenance``, ``cancel_only`` or ``post_only``."""

    status: str
    time: datetime

    @property
    def online(self) -> bool:
        return self.status == "online"


@attrs.frozen
class OrderRequest:
    """An order to place. ``client_order_id`` makes it idempotent."""

    pair: str
    side: Side
    order_type: OrderType
    volume: Decimal
    client_order_id: str
    price: Decimal | None = None


@attrs.frozen
class OrderInfo:
    """An order as the exchange reports it."""

    client_order_id: str | None
    exchange_order_id: str | None
    pair: str
    side: Side
    order_type: OrderType
    volume: Decimal
    filled_volume: Decimal
    status: OrderStatus
    price: Decimal | None = None
    avg_fill_price: Decimal | None = None
    fee: Decimal = Decimal(0)
    created_at: datetime | None = None


@attrs.frozen
class Fill:
    """One execution of (part of) an order."""

    trade_id: str
    client_order_id: str | None
    exchange_order_id: str | None
    pair: str
    side: Side
    price: Decimal
    volume: Decimal
    fee: Decimal
    time: datetime


@attrs.frozen
class Signal:
    """What a strategy wants: buy or sell ``volume`` of ``pair``.

    Signals are only acted on after the strategy call returned, so a timed-out or
    cancelled strategy can never leave a half-submitted order.
    """

    strategy: str
    pair: str
    side: Side
    volume: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    reason: str = ""


@attrs.frozen
class TradingStateChange:
    """A transition of the trading state, with who caused it and why."""

    previous: TradingState
    current: TradingState
    reason: str
    source: str
    time: datetime


class AlertLevel(enum.StrEnum):
    """How urgent an alert is: info, warning or critical."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@attrs.frozen
class Alert:
    """Something a person should know about (sent to every notifier)."""

    level: AlertLevel
    title: str
    message: str
    source: str
    time: datetime = attrs.field(factory=utc_now)
    key: str | None = None  # de-duplication key for notifiers
