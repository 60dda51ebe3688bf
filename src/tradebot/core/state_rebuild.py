"""Compare the order journal with the exchange and rebuild it from the exchange's history.

A bot recognises its own orders on the exchange by their client order ids
(:class:`~tradebot.core.order_ids.OrderIds`, from the config). :func:`check_state` lists
this bot's orders the exchange knows and the journal does not (or knows differently), and
compares positions. :func:`rebuild_state` journals what is missing, with its fills,
through the executor's normal path, so positions follow; cash is then taken from the
exchange's balance. At start-up :func:`recover_at_start` does this whenever the store was
restored, damaged or found empty while the exchange shows this bot's orders, and leaves
the bot HALTED saying what happened, until a person resumes.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from tradebot.core.models import Fill, OrderInfo, OrderStatus, Side
from tradebot.core.order_ids import OrderIds
from tradebot.core.store import JournalEntry, StateStore

__all__ = ["StateReport", "check_state", "rebuild_state", "recover_at_start", "start_damage"]

log = logging.getLogger("tradebot.state")

ZERO = Decimal(0)
MARGIN = timedelta(minutes=5)
"""Looked back before the point in time a journal is known to be complete (clock skew)."""
SOURCE = "state"
"""The source of a HALT for a restored or rebuilt state (a person resumes it)."""


@attrs.frozen
class StateReport:
    """This bot's orders on the exchange against the journal."""

    since: datetime | None
    exchange_orders: int
    """This bot's orders the exchange listed (open, and closed after ``since``)."""
    missing: tuple[OrderInfo, ...]
    """This bot's orders on the exchange that the journal does not have."""
    differing: tuple[tuple[JournalEntry, OrderInfo], ...]
    """Journalled orders whose status or filled volume differ from the exchange's."""
    positions: dict[str, tuple[Decimal, Decimal]] = attrs.field(factory=dict)
    """pair -> (journal position, position from this bot's fills on the exchange); only
    when the whole history was read (``since`` None)."""
    fill_differences: tuple[str, ...] = ()
    """Orders whose journalled fills (volume, price, fee) differ from the exchange's trades
    of them, one line each; empty when the exchange lists no trade history."""
    orders: tuple[OrderInfo, ...] = ()
    """This bot's orders the exchange listed."""

    @property
    def position_differences(self) -> dict[str, tuple[Decimal, Decimal]]:
        return {p: v for p, v in self.positions.items() if v[0] != v[1]}

    @property
    def clean(self) -> bool:
        return (
            not self.missing
            and not self.differing
            and not self.position_differences
            and not self.fill_differences
        )

    def lines(self) -> list[str]:
        window = "all history" if self.since is None else f"since {self.since.isoformat(timespec='seconds')}"
        out = [f"{self.exchange_orders} of this bot's orders on the exchange ({window})"]
        out.extend(
            f"  missing from the journal: {info.client_order_id} {info.side.value} {info.volume} {info.pair}"
            f" {info.status.value}, filled {info.filled_volume}"
            for info in self.missing
        )
        out.extend(
            f"  differs: {entry.client_order_id} journal {entry.status.value} filled {entry.filled_volume},"
            f" exchange {info.status.value} filled {info.filled_volume}"
            for entry, info in self.differing
        )
        out.extend(f"  fills differ from the exchange's trades: {line}" for line in self.fill_differences)
        for pair, (journal, exchange) in sorted(self.positions.items()):
            mark = "" if journal == exchange else "   <- differs"
            out.append(f"  position {pair}: journal {journal}, exchange {exchange}{mark}")
        out.append("journal matches the exchange" if self.clean else "journal does NOT match the exchange")
        return out


def _supports_history(exchange: Any) -> bool:
    from tradebot.core.exchange import KeepsOrderHistory

    return isinstance(exchange, KeepsOrderHistory)


async def bot_orders(exchange: Any, ids: OrderIds, since: datetime | None) -> list[OrderInfo]:
    """This bot's orders on the exchange: open ones, and closed ones after ``since``; oldest first."""
    closed = await exchange.closed_orders(since)
    seen: dict[str, OrderInfo] = {}
    for info in [*closed, *await exchange.open_orders()]:
        if ids.is_ours(info.client_order_id):
            seen[info.client_order_id] = info
    return sorted(seen.values(), key=lambda o: o.created_at.timestamp() if o.created_at else 0.0)


PRICE_TOLERANCE = Decimal("0.0005")
"""Relative difference allowed between the journal's and the trades' average price: the
exchange rounds an order's average price to the pair's decimals (0.05 % covers SHIB's 8)."""
FEE_TOLERANCE = Decimal("0.00001")
"""Difference allowed between fee sums (the exchange states fees to a few more decimals than cash)."""


async def trades_by_order(exchange: Any, since: datetime | None) -> dict[str, list[Fill]] | None:
    """The exchange's trades after ``since`` by exchange order id; None when it lists none."""
    if not callable(getattr(exchange, "trades", None)):
        return None
    found: dict[str, list[Fill]] = {}
    for trade in await exchange.trades(since):
        if trade.exchange_order_id:
            found.setdefault(trade.exchange_order_id, []).append(trade)
    return found


def _fill_difference(cid: str, fills: list[Fill], trades: list[Fill]) -> str | None:
    """How the journal's fills of one order differ from the exchange's trades (None: they agree)."""
    volume = sum((f.volume for f in fills), ZERO)
    t_volume = sum((t.volume for t in trades), ZERO)
    fee = sum((f.fee for f in fills), ZERO)
    t_fee = sum((t.fee for t in trades), ZERO)
    price = sum((f.volume * f.price for f in fills), ZERO) / volume if volume else ZERO
    t_price = sum((t.volume * t.price for t in trades), ZERO) / t_volume if t_volume else ZERO
    problems = []
    if volume != t_volume:
        problems.append(f"volume {volume} in the journal, {t_volume} traded")
    if volume and t_volume and abs(price - t_price) > PRICE_TOLERANCE * t_price:
        problems.append(f"average price {price:.8f} in the journal, {t_price:.8f} traded")
    if abs(fee - t_fee) > FEE_TOLERANCE:
        problems.append(f"fee {fee} in the journal, {t_fee} charged")
    if not problems:
        return None
    return f"{cid} ({len(fills)} fills, {len(trades)} trades): " + "; ".join(problems)


def fill_differences(store: StateStore, orders: list[OrderInfo], trades: dict[str, list[Fill]]) -> list[str]:
    """Each of ``orders`` the journal has whose fills differ from the exchange's trades."""
    journal: dict[str, list[Fill]] = {}
    for fill in store.fills():
        if fill.client_order_id:
            journal.setdefault(fill.client_order_id, []).append(fill)
    out = []
    for info in orders:
        cid = info.client_order_id
        if not cid or store.get_order(cid) is None:
            continue  # missing from the journal altogether: reported as such
        traded = trades.get(info.exchange_order_id or "", [])
        if not traded and info.filled_volume > 0:
            continue  # filled, but its trades are older than the history read: nothing to compare
        line = _fill_difference(cid, journal.get(cid, []), traded)
        if line is not None:
            out.append(line)
    return out


def _differs(entry: JournalEntry, info: OrderInfo) -> bool:
    status = OrderStatus.OPEN if info.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN) else info.status
    if entry.status is OrderStatus.UNKNOWN or (not entry.status.is_final and status.is_final):
        return True
    return entry.filled_volume != info.filled_volume or (entry.status.is_final and entry.status is not status)


async def check_state(
    store: StateStore,
    exchange: Any,
    ids: OrderIds,
    since: datetime | None,
    *,
    trades: dict[str, list[Fill]] | None = None,
) -> StateReport:
    """Compare the journal with this bot's orders on the exchange, and its fills with the
    exchange's trades of them (read-only). ``trades``: already read (see :func:`trades_by_order`)."""
    orders = await bot_orders(exchange, ids, since)
    if trades is None and any(store.get_order(o.client_order_id) is not None for o in orders):  # type: ignore[arg-type]
        # fills are compared only for orders the journal has: an empty journal costs no
        # TradesHistory call (2 points on Kraken's counter)
        trades = await trades_by_order(exchange, since)
    missing, differing = [], []
    for info in orders:
        entry = store.get_order(info.client_order_id)  # type: ignore[arg-type]
        if entry is None:
            missing.append(info)
        elif _differs(entry, info):
            differing.append((entry, info))
    positions: dict[str, tuple[Decimal, Decimal]] = {}
    if since is None:
        from_exchange: dict[str, Decimal] = {}
        for info in orders:
            signed = info.filled_volume if info.side is Side.BUY else -info.filled_volume
            from_exchange[info.pair] = from_exchange.get(info.pair, ZERO) + signed
        journal = {pair: pos.volume for pair, pos in store.positions().items()}
        for pair in sorted(set(from_exchange) | set(journal)):
            pair_values = (journal.get(pair, ZERO), from_exchange.get(pair, ZERO))
            if pair_values != (ZERO, ZERO):
                positions[pair] = pair_values
    differences = () if trades is None else tuple(fill_differences(store, orders, trades))
    return StateReport(
        since, len(orders), tuple(missing), tuple(differing), positions, differences, tuple(orders)
    )


@attrs.frozen
class RebuildReport:
    """What :func:`rebuild_state` changed."""

    added: tuple[str, ...]
    updated: tuple[str, ...]
    cash: Decimal | None
    fill_differences: tuple[str, ...] = ()
    """Orders whose fills still differ from the exchange's trades after the rebuild."""
    trades_checked: bool = False
    """The exchange's trade history was read and compared with the journal's fills."""

    @property
    def message(self) -> str:
        cash = "" if self.cash is None else f"; cash {self.cash} from the exchange"
        if not self.trades_checked:
            fills = "; fills not compared (the exchange lists no trade history)"
        elif self.fill_differences:
            fills = "; fills DIFFER from the exchange's trades: " + " | ".join(self.fill_differences)
        else:
            fills = "; fills equal the exchange's trades"
        return f"journal rebuilt from the exchange: {len(self.added)} orders added, {len(self.updated)} updated{cash}{fills}"


async def rebuild_state(
    executor: Any,
    exchange: Any,
    ids: OrderIds,
    since: datetime | None,
    *,
    trades: dict[str, list[Fill]] | None = None,
) -> RebuildReport:
    """Journal this bot's orders the journal lacks (with their fills, so positions follow),
    bring differing ones in line, then take cash from the exchange's balance.

    Fills come from the exchange's trade history (``trades``, read when not given): each
    trade of an order the journal lacks becomes one fill with its volume, price and fee;
    afterwards every order's fills are compared with its trades and any difference is
    reported (logged, and in the report's message)."""
    if trades is None:
        trades = await trades_by_order(exchange, since)
    report = await check_state(executor.store, exchange, ids, since, trades=trades)
    added: list[str] = []
    updated: list[str] = []

    def traded(info: OrderInfo) -> list[Fill]:
        return [] if trades is None else trades.get(info.exchange_order_id or "", [])

    for info in report.missing:
        await executor.adopt(info, reason="rebuilt from the exchange", trades=traded(info))
        added.append(info.client_order_id)  # type: ignore[arg-type]
    for entry, info in report.differing:
        await executor.adopt(info, reason=entry.reason, trades=traded(info))
        updated.append(entry.client_order_id)
    differences: tuple[str, ...] = ()
    if trades is not None:
        differences = tuple(fill_differences(executor.store, list(report.orders), trades))
        for line in differences:
            log.error("after the rebuild, fills differ from the exchange's trades: %s", line)
    cash = None
    try:
        cash_before = executor.portfolio.cash
        balances = await exchange.balances()
        quote = executor.portfolio.quote
        if balances.stale:
            raise ValueError(f"the exchange's balances are {balances.age_s:.0f} s old")
        executor.portfolio.adopt_exchange_cash(balances.get(quote))
        cash = executor.portfolio.cash
        if cash != cash_before:
            log.info("cash after the rebuild: %s (was %s)", cash, cash_before)
    except Exception as exc:  # noqa: BLE001 - the journal is rebuilt; cash follows at the next sync
        log.warning("could not read balances after the rebuild: %s", exc)
    result = RebuildReport(tuple(added), tuple(updated), cash, differences, trades is not None)
    log.warning("%s", result.message)
    return result


def start_damage(store: StateStore) -> str | None:
    """What is wrong with the state this start found (None: nothing known to be wrong)."""
    if store.restored is not None:
        r = store.restored
        return (
            f"the state database could not be used ({r.problem}) and backup {r.backup_path.name}"
            f" ({r.backup_age_s:.0f} s old) was restored"
        )
    if store.created:
        leftovers = sorted(p.name for p in store.state_dir.glob(f"{store.path.name}.corrupt-*"))
        if leftovers:
            return f"the state database is new, next to a damaged one ({leftovers[-1]})"
    return None


def _since(store: StateStore) -> datetime | None:
    """From when the exchange's history must be read to find what the journal may lack."""
    if store.created:
        return None
    if store.restored is not None:
        taken = store.restored_backup_time()
        return None if taken is None else taken - MARGIN
    newest = store.newest_order_time()
    # an empty journal (e.g. a wiped folder where a command created a new database first)
    # is compared with the whole history: this bot's older orders must not go unseen
    return None if newest is None else newest - MARGIN


async def recover_at_start(ctx: Any, executor: Any, ids: OrderIds) -> str | None:
    """Find and rebuild a lost journal before the first order; HALT saying why. Returns the reason."""
    store, exchange, trading = ctx.store, ctx.exchange, ctx.trading
    damage = start_damage(store)
    if not _supports_history(exchange):
        if damage is None:
            return None
        reason = (
            f"{damage}; this exchange cannot list its order history, so the journal was not rebuilt:"
            " compare orders and positions with the exchange by hand, then `tradebot resume`"
        )
        await trading.halt_anew(reason, SOURCE)
        return reason
    since = _since(store)
    try:
        report = await check_state(store, exchange, ids, since)
    except Exception as exc:  # noqa: BLE001 - cannot tell: a damaged or new state halts
        log.warning("could not compare the journal with the exchange's history: %s", exc)
        if damage is None and not store.created:
            return None
        damage = damage or "the state database is new"
        reason = f"{damage}; the exchange's history could not be read ({exc}): run `tradebot state rebuild`, then `tradebot resume`"
        await trading.halt_anew(reason, SOURCE)
        return reason
    if damage is None and not report.missing:
        return None
    if damage is None:
        damage = (
            f"the journal lacks {len(report.missing)} of this bot's orders the exchange has"
            f" ({'a new state' if store.created else 'lost changes'})"
        )
    try:
        rebuilt = await rebuild_state(executor, exchange, ids, since)
    except Exception as exc:  # stay HALTED and say so
        log.exception("rebuilding the journal from the exchange failed")
        reason = f"{damage}; rebuilding the journal from the exchange failed ({exc}): run `tradebot state rebuild`, then `tradebot resume`"
        await trading.halt_anew(reason, SOURCE)
        return reason
    held = (
        ", ".join(f"{p} {pos.volume}" for p, pos in sorted(executor.portfolio.positions().items())) or "none"
    )
    reason = (
        f"{damage}; {rebuilt.message}; positions now {held}. Check them against the exchange"
        " (`tradebot state check`), then `tradebot resume`"
    )
    await trading.halt_anew(reason, SOURCE)
    log.critical("state recovered at start: %s", reason)
    return reason
