"""Values the state store reads and writes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import attrs

from tradebot.core.models import OrderInfo, OrderStatus, OrderType, Side, TradingState

__all__ = [
    "EquitySnapshot",
    "HealthRecord",
    "JournalEntry",
    "Position",
    "PositionClosed",
    "RestoreReport",
    "TradingStateRecord",
]

ZERO = Decimal(0)


@attrs.frozen
class JournalEntry:
    """One order of the journal, keyed by its client order id.

    ``attempts`` counts how many times the order request was handed to the exchange;
    it is incremented and made durable *before* each send, so ``attempts == 0`` proves
    the order never left the bot.
    """

    client_order_id: str
    pair: str
    side: Side
    order_type: OrderType
    volume: Decimal
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    price: Decimal | None = None
    exchange_order_id: str | None = None
    filled_volume: Decimal = ZERO
    avg_fill_price: Decimal | None = None
    fee: Decimal = ZERO
    strategy: str = ""
    reason: str = ""
    attempts: int = 0
    last_error: str = ""
    sent_at: datetime | None = None

    @property
    def remaining(self) -> Decimal:
        """Volume not filled yet (zero once the order is final)."""
        if self.status.is_final:
            return ZERO
        return max(self.volume - self.filled_volume, ZERO)

    @property
    def signed_remaining(self) -> Decimal:
        """Remaining volume, positive for buys and negative for sells."""
        return self.remaining if self.side is Side.BUY else -self.remaining

    def to_order_info(self) -> OrderInfo:
        """The entry as the :class:`OrderInfo` the rest of the bot understands."""
        return OrderInfo(
            client_order_id=self.client_order_id,
            exchange_order_id=self.exchange_order_id,
            pair=self.pair,
            side=self.side,
            order_type=self.order_type,
            volume=self.volume,
            filled_volume=self.filled_volume,
            status=self.status,
            price=self.price,
            avg_fill_price=self.avg_fill_price,
            fee=self.fee,
            created_at=self.created_at,
        )


@attrs.frozen
class Position:
    """Holding of one pair: signed base volume (negative = short) at an average entry price."""

    pair: str
    volume: Decimal = ZERO
    avg_price: Decimal = ZERO

    @property
    def is_flat(self) -> bool:
        return self.volume == 0


@attrs.frozen
class PositionClosed:
    """Realised PnL of one exposure-reducing fill (a partial or full round trip).

    ``pnl`` is in the quote currency, net of the fees of both the opening fills (folded
    into ``entry_price``) and this fill's share. ``fully_closed`` is true when the fill
    took the position to flat (or through flat), ending a round trip.
    """

    trade_id: str
    pair: str
    volume: Decimal
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
    fee: Decimal
    position_after: Decimal
    fully_closed: bool
    time: datetime


@attrs.frozen
class EquitySnapshot:
    """Account value at one moment, in the quote currency."""

    time: datetime
    equity: Decimal
    cash: Decimal
    positions_value: Decimal


@attrs.frozen
class TradingStateRecord:
    """The persisted trading state with why, by whom and since when."""

    state: TradingState
    reason: str
    source: str
    time: datetime


@attrs.frozen
class HealthRecord:
    """One health check result kept in the history."""

    check: str
    status: str
    message: str
    metrics_json: str
    time: datetime


@attrs.frozen
class RestoreReport:
    """What happened when the database was found damaged, missing or behind a backup at open and restored."""

    corrupt_path: Path
    backup_path: Path
    backup_age_s: float
    problem: str

    @property
    def message(self) -> str:
        return (
            f"state database could not be used ({self.problem}); moved it to {self.corrupt_path.name} and "
            f"restored backup {self.backup_path.name} ({self.backup_age_s:.0f} s old). "
            "Changes made after that backup are lost; reconcile with the exchange."
        )
