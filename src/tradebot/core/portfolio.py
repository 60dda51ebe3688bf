"""Positions, cash and PnL, kept in the state store.

PnL method: **average cost**. A fill that adds to a position moves its average entry
price; a fill that reduces it realises ``closed volume x (exit - average entry)`` (sign
flipped for shorts) and leaves the average unchanged; a fill that goes through flat
closes the old position and opens the rest at the fill price. Fees (in the quote
currency) are folded in: an opening fill's fee raises the cost basis of a long (lowers
the entry of a short), a reducing fill's fee is taken from its realised PnL, so realised
PnL is net of all fees of the round trip.

Every reducing fill produces one :class:`PositionClosed` record (persisted, and passed
to listeners) that loss-tracking checks consume. Cash moves by the fill's notional and
fee. Equity = cash + the positions marked to the latest ticker mid price.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from decimal import Decimal

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.models import Balances, Fill, Side, Ticker
from tradebot.core.store import EquitySnapshot, Position, PositionClosed, StateStore, StoreTx

__all__ = ["Portfolio", "Position", "PositionClosed", "apply_fill_to_position"]

log = logging.getLogger("tradebot.portfolio")

ZERO = Decimal(0)
_CASH_KEY = "portfolio.cash"
_START_KEY = "portfolio.starting_cash"

ClosedListener = Callable[[PositionClosed], None]


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


def apply_fill_to_position(position: Position, fill: Fill) -> tuple[Position, PositionClosed | None]:
    """The position after ``fill`` and, when the fill reduced it, the realised PnL record."""
    q, p, fee = fill.volume, fill.price, fill.fee
    d = 1 if fill.side is Side.BUY else -1
    v, avg = position.volume, position.avg_price
    new_v = v + d * q
    if v == 0 or _sign(v) == d:
        new_abs = abs(v) + q
        new_avg = (abs(v) * avg + q * p + d * fee) / new_abs
        return Position(position.pair, new_v, new_avg), None
    close_q = min(q, abs(v))
    fee_close = fee * close_q / q
    pnl = close_q * (p - avg) * _sign(v) - fee_close
    rest = q - close_q
    if rest > 0:  # went through flat: the rest opens a new position at the fill price
        new_avg = (rest * p + d * (fee - fee_close)) / rest
    elif new_v == 0:
        new_avg = ZERO
    else:
        new_avg = avg
    closed = PositionClosed(
        trade_id=fill.trade_id,
        pair=fill.pair,
        volume=close_q,
        entry_price=avg,
        exit_price=p,
        pnl=pnl,
        fee=fee_close,
        position_after=new_v,
        fully_closed=new_v == 0 or _sign(new_v) != _sign(v),
        time=fill.time,
    )
    return Position(position.pair, new_v, new_avg), closed


def _cash_delta(fill: Fill) -> Decimal:
    notional = fill.price * fill.volume
    return (-notional if fill.side is Side.BUY else notional) - fill.fee


class Portfolio:
    """Positions per pair, cash and PnL in the ``quote`` currency, persisted in ``store``.

    ``starting_cash`` is recorded the first time a store is used and ignored afterwards
    (the persisted cash wins), so a restart never resets the account. Fills are applied
    exactly once: a fill whose trade id is already recorded changes nothing.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        quote: str = "USD",
        starting_cash: Decimal = ZERO,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.quote = quote
        self._clock = clock or SystemClock()
        self.listeners: list[ClosedListener] = []
        self._marks: dict[str, Decimal] = {}
        if store.get_kv(_CASH_KEY) is None:
            with store.transaction() as tx:
                now = self._clock.now()
                tx.set_kv(_START_KEY, str(starting_cash), now)
                tx.set_kv(_CASH_KEY, str(starting_cash), now)
        self._load()

    def _load(self) -> None:
        self._positions: dict[str, Position] = self.store.positions()
        self._cash = Decimal(self.store.get_kv(_CASH_KEY) or "0")
        self._realized = self.store.total_realized_pnl()

    # --- reading -------------------------------------------------------------------

    @property
    def cash(self) -> Decimal:
        return self._cash

    @property
    def starting_cash(self) -> Decimal:
        return Decimal(self.store.get_kv(_START_KEY) or "0")

    @property
    def realized_pnl(self) -> Decimal:
        """Total realised PnL (net of fees) since the store was created."""
        return self._realized

    def position(self, pair: str) -> Position:
        return self._positions.get(pair) or Position(pair)

    def positions(self) -> dict[str, Position]:
        """Non-flat positions by pair."""
        return {k: v for k, v in self._positions.items() if v.volume != 0}

    def mark_price(self, pair: str) -> Decimal | None:
        return self._marks.get(pair)

    def unrealized_pnl(self, pair: str | None = None) -> Decimal:
        """Open PnL at the latest marks; pairs without a mark count as zero."""
        pairs = [pair] if pair is not None else list(self._positions)
        total = ZERO
        for name in pairs:
            pos = self.position(name)
            mark = self._marks.get(name)
            if pos.volume != 0 and mark is not None:
                total += (mark - pos.avg_price) * pos.volume
        return total

    def positions_value(self) -> Decimal | None:
        """Value of all positions at the latest marks; None while a held pair has no mark."""
        total = ZERO
        for pair, pos in self.positions().items():
            mark = self._marks.get(pair)
            if mark is None:
                return None
            total += pos.volume * mark
        return total

    def equity(self) -> Decimal | None:
        """Cash plus positions value; None while a held pair has no mark (never a made-up number)."""
        value = self.positions_value()
        return None if value is None else self._cash + value

    # --- writing -------------------------------------------------------------------

    def mark(self, ticker: Ticker) -> None:
        """Take the ticker's mid price as the pair's mark."""
        self._marks[ticker.pair] = ticker.mid

    def set_mark(self, pair: str, price: Decimal) -> None:
        self._marks[pair] = price

    def apply_fill(self, fill: Fill, tx: StoreTx | None = None) -> list[PositionClosed] | None:
        """Record ``fill`` and update position, cash and PnL; None when it was applied before.

        With ``tx`` the writes join the caller's transaction (the executor records the
        order's new filled volume in the same one); in-memory state changes only once
        that transaction commits.
        """
        if tx is None:
            with self.store.transaction() as own:
                return self.apply_fill(fill, own)
        if not tx.insert_fill(fill):
            log.debug("fill %s already applied", fill.trade_id)
            return None
        new_pos, closed = apply_fill_to_position(self.position(fill.pair), fill)
        cash = self._cash + _cash_delta(fill)
        now = self._clock.now()
        tx.set_position(new_pos, now)
        tx.set_kv(_CASH_KEY, str(cash), now)
        records = [closed] if closed is not None else []
        for rec in records:
            tx.add_realized(rec)

        def commit() -> None:
            self._positions[fill.pair] = new_pos
            self._cash = cash
            for rec in records:
                self._realized += rec.pnl
                for listener in list(self.listeners):
                    try:
                        listener(rec)
                    except Exception:  # noqa: BLE001 - a listener never undoes a recorded fill
                        log.exception("position-closed listener failed")

        tx.on_commit(commit)
        return records

    def sync_cash(self, balances: Balances) -> Decimal:
        """Adopt the exchange's balance of the quote currency as cash; return the change."""
        new = balances.get(self.quote)
        delta = new - self._cash
        if delta:
            log.info("cash %s synced from exchange: %s -> %s", self.quote, self._cash, new)
            self.store.set_kv(_CASH_KEY, str(new))
            self._cash = new
        return delta

    def snapshot_equity(self) -> EquitySnapshot | None:
        """Persist the current equity (for drawdown); None while it cannot be valued."""
        value = self.positions_value()
        if value is None:
            return None
        snap = EquitySnapshot(self._clock.now(), self._cash + value, self._cash, value)
        self.store.append_equity(snap)
        return snap

    def rebuild_from_fills(self) -> dict[str, Position]:
        """Recompute positions, cash and realised PnL from the recorded fills and replace them.

        Use after a restore from backup or when the stored positions are in doubt.
        """
        fills = self.store.fills()
        positions, cash, realized = self._replay(fills, self.starting_cash)
        now = self._clock.now()
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM positions")
            tx.execute("DELETE FROM realized_pnl")
            for pos in positions.values():
                tx.set_position(pos, now)
            for rec in realized:
                tx.add_realized(rec)
            tx.set_kv(_CASH_KEY, str(cash), now)
        self._load()
        return dict(positions)

    @staticmethod
    def _replay(fills: Iterable[Fill], cash: Decimal) -> tuple[dict[str, Position], Decimal, list[PositionClosed]]:
        positions: dict[str, Position] = {}
        realized: list[PositionClosed] = []
        for f in fills:
            pos, closed = apply_fill_to_position(positions.get(f.pair) or Position(f.pair), f)
            positions[f.pair] = pos
            cash += _cash_delta(f)
            if closed is not None:
                realized.append(closed)
        return positions, cash, realized
