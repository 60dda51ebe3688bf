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

**The portfolio is the one owner of positions.** Per pair it holds what the bot holds;
where several strategy instances trade one pair, each instance's share is attributed by
the strategy recorded with the order in the journal (:meth:`Portfolio.strategy_position`).
A fill of an order no strategy placed (a flatten on HALT, for example) reduces the
instances' shares in name order. Strategies read their share through their context; they
keep no copy of their own.

Cash is the bot's own: the starting cash stored when the state was created plus the
effect of every recorded fill, so :meth:`Portfolio.rebuild_from_fills` reproduces it
exactly. The exchange's balances are never copied over it; at start-up they are compared
with it (:meth:`Portfolio.verify_balances`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from decimal import Decimal

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.models import Balances, Fill, Side, Ticker
from tradebot.core.store import EquitySnapshot, Position, PositionClosed, StateStore, StoreTx

__all__ = ["BalanceCheck", "Portfolio", "Position", "PositionClosed", "apply_fill_to_position", "base_asset"]

log = logging.getLogger("tradebot.portfolio")

ZERO = Decimal(0)
_CASH_KEY = "portfolio.cash"
_START_KEY = "portfolio.starting_cash"
UNATTRIBUTED = ""
"""The strategy name of fills no strategy instance can be credited with."""
FLATTEN_STRATEGY = "flatten"
"""The journal's strategy of the executor's own flatten orders (not a strategy instance)."""

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


def base_asset(pair: str) -> str:
    """``BTC`` of ``BTC/USD``."""
    return pair.partition("/")[0]


def _split_fill(fill: Fill, volume: Decimal) -> Fill:
    """The part ``volume`` of ``fill``, with its share of the fee."""
    fee = fill.fee * volume / fill.volume if fill.volume else fill.fee
    return attrs.evolve(fill, volume=volume, fee=fee)


def _attribute(
    book: dict[tuple[str, str], Position], fill: Fill, strategy: str
) -> dict[tuple[str, str], Position]:
    """The per-strategy positions ``fill`` changes (new values by (strategy, pair)).

    A fill of a strategy's order is that strategy's; a sell beyond the strategy's own
    position takes the rest from the unattributed holding (what no instance owns). A sell
    no strategy placed (a flatten) takes from the strategies holding the pair, in name
    order, and the rest (if any) goes to :data:`UNATTRIBUTED`.
    """
    pair = fill.pair
    if strategy != UNATTRIBUTED and strategy != FLATTEN_STRATEGY:
        key = (strategy, pair)
        own = book.get(key) or Position(pair)
        spare = book.get((UNATTRIBUTED, pair)) or Position(pair)
        if fill.side is Side.SELL and fill.volume > max(own.volume, ZERO) and spare.volume > 0:
            # beyond its own lot a strategy sells from what no instance owns (never another's)
            mine = max(own.volume, ZERO)
            theirs = min(fill.volume - mine, spare.volume)
            changes: dict[tuple[str, str], Position] = {}
            changes[(UNATTRIBUTED, pair)], _ = apply_fill_to_position(spare, _split_fill(fill, theirs))
            rest = fill.volume - theirs
            if rest > 0:
                changes[key], _ = apply_fill_to_position(own, _split_fill(fill, rest))
            return changes
        new, _ = apply_fill_to_position(own, fill)
        return {key: new}
    changes = {}
    left = fill.volume
    if fill.side is Side.SELL:
        holders = sorted(k for k, p in book.items() if k[1] == pair and k[0] != UNATTRIBUTED and p.volume > 0)
        for key in holders:
            if left <= 0:
                break
            take = min(left, book[key].volume)
            changes[key], _ = apply_fill_to_position(book[key], _split_fill(fill, take))
            left -= take
    if left > 0:
        key = (UNATTRIBUTED, pair)
        part = fill if left == fill.volume else _split_fill(fill, left)
        changes[key], _ = apply_fill_to_position(book.get(key) or Position(pair), part)
    return changes


@attrs.frozen
class BalanceCheck:
    """The bot's cash and positions compared with the exchange's balances.

    ``problems`` (the exchange holds less than the bot's records say) mean the records
    cannot be trusted: the bot must not trade. ``unexplained`` lists what the exchange
    holds beyond the bot's records (the user's own coins or cash on a shared account, a
    deposit, or a fill the journal does not know): reported, never adopted.
    """

    problems: tuple[str, ...]
    unexplained: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        if self.problems:
            return "cash/positions do not match the exchange: " + "; ".join(self.problems)
        return "cash and positions match the exchange"


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
        self._mark_times: dict[str, float] = {}
        if store.get_kv(_CASH_KEY) is None:
            with store.transaction() as tx:
                now = self._clock.now()
                tx.set_kv(_START_KEY, str(starting_cash), now)
                tx.set_kv(_CASH_KEY, str(starting_cash), now)
        self._load()
        self._migrate_starting_cash()

    @staticmethod
    def exists(store: StateStore) -> bool:
        """Whether ``store`` already holds a portfolio (its starting cash is recorded)."""
        return store.get_kv(_CASH_KEY) is not None

    def _load(self) -> None:
        self._positions: dict[str, Position] = self.store.positions()
        self._cash = Decimal(self.store.get_kv(_CASH_KEY) or "0")
        self._realized = self.store.total_realized_pnl()
        self._strategy_of: dict[str, str] = {e.client_order_id: e.strategy for e in self.store.orders()}
        self._book: dict[tuple[str, str], Position] = {}
        fees = ZERO
        for fill in self.store.fills():
            self._book.update(
                _attribute(self._book, fill, self._strategy_of.get(fill.client_order_id or "", ""))
            )
            fees += fill.fee
        self._fees = fees

    def _migrate_starting_cash(self) -> None:
        """A state written before starting cash was stored (it read 0 while cash was copied
        from the exchange): store the starting cash that makes cash = start + fills."""
        if self.store.get_kv(_START_KEY) not in (None, "0"):
            return
        fills = self.store.fills()
        if not fills:
            return
        start = self._cash - sum((_cash_delta(f) for f in fills), ZERO)
        if start != 0:
            log.warning(
                "starting cash was not recorded; derived %s %s from cash and fills", start, self.quote
            )
            self.store.set_kv(_START_KEY, str(start))

    def adopt_exchange_cash(self, balance: Decimal) -> None:
        """After the journal was rebuilt from the exchange (a lost or damaged state): take the
        exchange's cash as the bot's, and store the starting cash that keeps cash = start +
        fills, so the next start's check and ``rebuild_from_fills`` agree with it."""
        start = balance - sum((_cash_delta(f) for f in self.store.fills()), ZERO)
        with self.store.transaction() as tx:
            now = self._clock.now()
            tx.set_kv(_CASH_KEY, str(balance), now)
            tx.set_kv(_START_KEY, str(start), now)
        self._cash = balance

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

    @property
    def fees_paid(self) -> Decimal:
        """Fees of every recorded fill since the state was created, in the quote currency."""
        return self._fees

    def position(self, pair: str) -> Position:
        return self._positions.get(pair) or Position(pair)

    def strategy_position(self, strategy: str, pair: str) -> Position:
        """What the strategy instance ``strategy`` holds of ``pair`` (its attributed share;
        ``""``: what no instance owns, e.g. fills of orders placed without a strategy)."""
        return self._book.get((strategy, pair)) or Position(pair)

    def strategy_positions(self) -> dict[tuple[str, str], Position]:
        """Non-flat attributed positions by (strategy, pair); strategy ``""`` is unattributed."""
        return {k: v for k, v in self._book.items() if v.volume != 0}

    def mark_age_s(self, pair: str) -> float | None:
        """Seconds since ``pair``'s mark was last set (None: never)."""
        at = self._mark_times.get(pair)
        return None if at is None else self._clock.monotonic() - at

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
        self.set_mark(ticker.pair, ticker.mid)

    def set_mark(self, pair: str, price: Decimal) -> None:
        self._marks[pair] = price
        self._mark_times[pair] = self._clock.monotonic()

    def apply_fill(
        self, fill: Fill, tx: StoreTx | None = None, *, strategy: str | None = None
    ) -> list[PositionClosed] | None:
        """Record ``fill`` and update position, cash and PnL; None when it was applied before.

        With ``tx`` the writes join the caller's transaction (the executor records the
        order's new filled volume in the same one); in-memory state changes only once
        that transaction commits. ``strategy`` is the instance the fill is attributed to;
        by default the one the journal records for the fill's order.
        """
        if tx is None:
            with self.store.transaction() as own:
                return self.apply_fill(fill, own, strategy=strategy)
        if not tx.insert_fill(fill):
            log.debug("fill %s already applied", fill.trade_id)
            return None
        if strategy is None:
            strategy = self._strategy_for(fill)
        book_changes = _attribute(self._book, fill, strategy)
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
            self._fees += fill.fee
            self._book.update(book_changes)
            for rec in records:
                self._realized += rec.pnl
                for listener in list(self.listeners):
                    try:
                        listener(rec)
                    except Exception:  # a listener never undoes a recorded fill
                        log.exception("position-closed listener failed")

        tx.on_commit(commit)
        return records

    def _strategy_for(self, fill: Fill) -> str:
        cid = fill.client_order_id or ""
        strategy = self._strategy_of.get(cid)
        if strategy is None:
            entry = self.store.get_order(cid) if cid else None
            strategy = entry.strategy if entry is not None else UNATTRIBUTED
            if cid:
                self._strategy_of[cid] = strategy
        return strategy

    def verify_balances(
        self,
        balances: Balances,
        *,
        pairs: Iterable[str] = (),
        cash_tolerance: Decimal = Decimal("1"),
        holding_tolerance_pct: Decimal = Decimal("1"),
    ) -> BalanceCheck:
        """Compare the bot's cash and positions with the exchange's ``balances``.

        The rule (a spot account may be shared with the user's own holdings): the exchange
        must hold at least what the bot's records say, the bot's cash of the quote currency
        (less ``cash_tolerance``) and each position's base asset (less
        ``holding_tolerance_pct`` percent of it); anything less is a problem. Whatever the
        exchange holds beyond that, of the quote currency and of the base assets of
        ``pairs`` and of the held pairs, is reported as unexplained.
        """
        problems: list[str] = []
        unexplained: list[str] = []
        have_cash = balances.get(self.quote)
        if have_cash < self._cash - cash_tolerance:
            problems.append(
                f"{self.quote}: the bot's cash is {self._cash} by its journal but the exchange holds {have_cash}"
            )
        elif have_cash > self._cash + cash_tolerance:
            unexplained.append(
                f"{self.quote}: the exchange holds {have_cash}, {have_cash - self._cash} more than the bot's cash "
                f"{self._cash} (not the bot's: left alone)"
            )
        held: dict[str, Decimal] = {}
        for pair in set(pairs) | set(self.positions()):
            asset = base_asset(pair)
            held[asset] = held.get(asset, ZERO) + self.position(pair).volume
        for asset, volume in sorted(held.items()):
            have = balances.get(asset)
            slack = abs(volume) * holding_tolerance_pct / 100
            if volume < 0:
                problems.append(
                    f"{asset}: the bot's journal shows a short of {volume}, impossible on a spot account"
                )
            elif have < volume - slack:
                problems.append(
                    f"{asset}: the bot holds {volume} by its journal but the exchange holds {have}"
                )
            elif have > volume + slack:
                unexplained.append(
                    f"{asset}: the exchange holds {have}, {have - volume} more than the bot's position {volume} "
                    "(not explained by the journal: left alone)"
                )
        return BalanceCheck(tuple(problems), tuple(unexplained))

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
        self._load()  # the per-strategy shares are replayed from the fills on load
        return dict(positions)

    @staticmethod
    def _replay(
        fills: Iterable[Fill], cash: Decimal
    ) -> tuple[dict[str, Position], Decimal, list[PositionClosed]]:
        positions: dict[str, Position] = {}
        realized: list[PositionClosed] = []
        for f in fills:
            pos, closed = apply_fill_to_position(positions.get(f.pair) or Position(f.pair), f)
            positions[f.pair] = pos
            cash += _cash_delta(f)
            if closed is not None:
                realized.append(closed)
        return positions, cash, realized
