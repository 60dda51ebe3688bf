"""The order executor: every order placed exactly once, every fill recorded exactly once.

For each order:

1. The intent is journalled under its client order id (status PENDING) and the attempt
   count is made durable *before* the request leaves the bot.
2. The exchange's answer is recorded. An answer that proves the order was not placed
   (invalid order, insufficient funds, rate limited, circuit open ...) marks it REJECTED.
3. Any other failure (timeout, dropped connection, 5xx, garbled answer) leaves the
   outcome unknown: the order is looked up by its client id, never blindly resent. It is
   resent, with the same client id, only when lookups made at least ``not_found_grace_s``
   after the send prove it does not exist. If lookups keep failing it stays UNKNOWN and
   the tracking loop resolves it later.
4. Working orders are polled until final; growth of the filled volume becomes a
   :class:`Fill` (trade id ``<client id>:<filled volume>``), recorded with the order's new
   state and the portfolio update in one transaction, so a crash can neither lose nor
   double-count it.

Reconcile rules at start-up (every non-final journal entry is looked up by client id):

- found on the exchange: adopt its state and fills;
- never sent (attempt count 0): REJECTED, "not placed";
- sent but not acknowledged, and not found once the grace period after the send has
  passed: REJECTED, "not placed". It is **not** resent: the signal is stale and the
  strategy will signal again if it still wants the trade;
- acknowledged before but not found now: UNKNOWN with an error, still counted as
  exposure, never guessed at;
- lookup failed: left as it is and tracked until a lookup succeeds.

Open orders on the exchange that the journal does not know are reported as orphans and
left alone. Together this ends with no order lost and none placed twice after a kill -9
at any point.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import (
    AuthError,
    CircuitOpen,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    MarketClosed,
    OrderNotFound,
    RateLimited,
    TradebotError,
    UnknownPair,
)
from tradebot.core.exchange import Exchange
from tradebot.core.markets import MarketBook
from tradebot.core.models import Fill, OrderInfo, OrderRequest, OrderStatus, OrderType, Side
from tradebot.core.order_ids import OrderIds
from tradebot.core.portfolio import Portfolio
from tradebot.core.store import JournalEntry, StateStore
from tradebot.core.trading_state import OrderHeld, OrderWireGate

__all__ = ["FLATTEN_STRATEGY", "OrderExecutor", "OrdersClosed", "ReconcileReport"]

log = logging.getLogger("tradebot.executor")
trades_log = logging.getLogger("tradebot.trades")
"""One line per execution: side, volume, pair, price, fee, strategy and order."""

ZERO = Decimal(0)
FLATTEN_STRATEGY = "flatten"

NOT_PLACED: tuple[type[BaseException], ...] = (
    InvalidOrder,
    InsufficientFunds,
    UnknownPair,
    AuthError,
    RateLimited,
    InvalidNonce,
    MarketClosed,
    CircuitOpen,
    OrderHeld,
)
"""Errors that prove the exchange did not accept the order (or that it was never sent)."""

OrderCallback = Callable[[OrderInfo], Awaitable[None] | None]
FillCallback = Callable[[Fill], Awaitable[None] | None]


@attrs.frozen
class ReconcileReport:
    """What :meth:`OrderExecutor.reconcile` found."""

    checked: int
    updated: tuple[str, ...]
    not_placed: tuple[str, ...]
    unresolved: tuple[str, ...]
    orphans: tuple[OrderInfo, ...]

    @property
    def message(self) -> str:
        return (
            f"reconciled {self.checked} unfinished orders: {len(self.updated)} updated, "
            f"{len(self.not_placed)} not placed, {len(self.unresolved)} unresolved, "
            f"{len(self.orphans)} unknown open orders on the exchange"
        )


class OrdersClosed(TradebotError):
    """The bot is stopping: no new order is sent from the moment a stop began."""


class _Unresolved(Exception):
    """Lookups kept failing; the order's fate is still unknown."""


class OrderExecutor:
    """Places, tracks, cancels and reconciles orders through one idempotent path.

    ``on_order`` / ``on_fill`` (plain or async callables) hear of every order change and
    every fill; a failing callback is logged and never undoes what was recorded.
    """

    def __init__(
        self,
        exchange: Exchange,
        store: StateStore,
        portfolio: Portfolio,
        *,
        clock: Clock | None = None,
        poll_interval_s: float = 2.0,
        not_found_grace_s: float = 5.0,
        max_send_attempts: int = 3,
        lookup_attempts: int = 4,
        lookup_backoff_s: float = 0.5,
        on_order: OrderCallback | None = None,
        on_fill: FillCallback | None = None,
        order_ids: OrderIds | None = None,
        wire_gate: OrderWireGate | None = None,
    ) -> None:
        self.exchange = exchange
        self._exchange_checks_at_wire = bool(getattr(exchange, "checks_orders_at_wire", False))
        """Declared by the exchange (read once): its ``place_order`` reads the trading state again
        where the order is taken (see :func:`tradebot.core.trading_state.order_at_wire`)."""
        self.order_ids = order_ids
        """Makes this bot's client order ids (flatten orders); None: plain UUIDs."""
        self.wire_gate = wire_gate
        """Checks the trading state again where each order is sent (see :class:`OrderWireGate`)."""
        self.store = store
        self.portfolio = portfolio
        self._clock = clock or SystemClock()
        self.poll_interval_s = poll_interval_s
        self.not_found_grace_s = not_found_grace_s
        self.max_send_attempts = max_send_attempts
        self.lookup_attempts = lookup_attempts
        self.lookup_backoff_s = lookup_backoff_s
        self.on_order = on_order
        self.on_fill = on_fill
        self.markets: MarketBook | None = None
        """The exchange's market rules: flatten orders are fitted to them (the bot sets it)."""
        self._inflight: set[str] = set()
        self._sent_mono: dict[str, float] = {}
        self._missing_logged: set[str] = set()
        self.closed_reason: str | None = None
        """Set by :meth:`close_for_new_orders`: why :meth:`submit` sends nothing any more."""

    # --- placing -------------------------------------------------------------------

    async def submit(self, request: OrderRequest, *, strategy: str = "", reason: str = "") -> OrderInfo:
        """Journal ``request``, send it, and return the order as far as it is known.

        A client order id that is already journalled is never sent again: its recorded
        state is returned. The result may be UNKNOWN when the exchange could not be asked;
        the tracking loop resolves it.
        """
        if self.closed_reason is not None:
            raise OrdersClosed(f"order for {request.pair} not sent: {self.closed_reason}")
        cid = request.client_order_id
        existing = self.store.get_order(cid)
        if existing is not None:
            log.warning(
                "order %s is already journalled (%s); not sending it again", cid, existing.status.value
            )
            return existing.to_order_info()
        now = self._clock.now()
        entry = JournalEntry(
            client_order_id=cid,
            pair=request.pair,
            side=request.side,
            order_type=request.order_type,
            volume=request.volume,
            price=request.price,
            status=OrderStatus.PENDING,
            created_at=now,
            updated_at=now,
            strategy=strategy,
            reason=reason,
        )
        self._inflight.add(cid)
        try:
            if not self.store.journal_order(entry):
                raise AssertionError("client order id journalled concurrently")  # get_order said it was free
            return await self._send(request)
        finally:
            self._inflight.discard(cid)

    def close_for_new_orders(self, reason: str) -> None:
        """From now on :meth:`submit` sends nothing (the bot is stopping); tracking goes on."""
        if self.closed_reason is None:
            self.closed_reason = reason

    async def _send(self, request: OrderRequest) -> OrderInfo:
        cid = request.client_order_id
        attempts = 0
        while True:
            attempts += 1
            self.store.update_order(cid, attempts=attempts, sent_at=self._clock.now())
            self._sent_mono[cid] = self._clock.monotonic()
            try:
                info = await self._place(request)
            except OrderHeld as exc:
                return await self._mark_not_placed(cid, f"not placed: {exc}")
            except NOT_PLACED as exc:
                return await self._mark_not_placed(
                    cid, f"rejected by the exchange ({type(exc).__name__}): {exc}"
                )
            except asyncio.CancelledError:
                self.store.update_order(cid, status=OrderStatus.UNKNOWN, last_error="cancelled while sending")
                raise
            except Exception as exc:  # noqa: BLE001 - any other failure leaves the outcome unknown
                log.warning(
                    "order %s: outcome unknown after %s: %s; looking it up", cid, type(exc).__name__, exc
                )
                self.store.update_order(
                    cid, status=OrderStatus.UNKNOWN, last_error=f"{type(exc).__name__}: {exc}"
                )
                self.store.incr_counter("executor.outcome_unknown")
                try:
                    found = await self._find_after_send(cid)
                except _Unresolved as unresolved:
                    log.error(
                        "order %s: still unknown (%s); tracking it until a lookup succeeds", cid, unresolved
                    )
                    return self._entry(cid).to_order_info()
                if found is not None:
                    return await self._apply_and_emit(cid, found, force_emit=True)
                if attempts >= self.max_send_attempts:
                    return await self._mark_not_placed(
                        cid, f"not placed: {attempts} attempts, none arrived: {exc}"
                    )
                log.warning("order %s: proven not placed; resending with the same client id", cid)
                self.store.incr_counter("executor.resent")
                continue
            return await self._apply_and_emit(cid, info, force_emit=True)

    async def _place(self, request: OrderRequest) -> OrderInfo:
        gate = self.wire_gate
        if gate is None:
            return await self.exchange.place_order(request)
        with gate.sending(
            request, self.reduces_exposure, exchange_checks_at_wire=self._exchange_checks_at_wire
        ):
            return await self.exchange.place_order(request)

    def reduces_exposure(self, request: OrderRequest) -> bool:
        """Whether ``request`` only reduces the pair's position (what a HALT still lets go)."""
        held = self.portfolio.position(request.pair).volume
        if held == 0:
            return False
        return (held > 0) == (request.side is Side.SELL) and request.volume <= abs(held)

    async def adopt(self, info: OrderInfo, *, reason: str, trades: Sequence[Fill] = ()) -> OrderInfo:
        """Journal an order of this bot found on the exchange but not in the journal (a lost
        state), with its fills, through the same path as orders the bot tracks itself.

        ``trades``: the exchange's trades of this order. When the journal has recorded no fill
        of it yet, each trade becomes one fill with the exchange's volume, price, fee and trade
        id, so the portfolio holds exactly what the exchange executed; what the order says is
        filled beyond them is recorded as one fill at its average price.
        """
        cid = info.client_order_id
        if not cid:
            raise ValueError("only an order with a client order id can be adopted")
        if self.store.get_order(cid) is None:
            created = info.created_at or self._clock.now()
            self.store.journal_order(
                JournalEntry(
                    client_order_id=cid,
                    pair=info.pair,
                    side=info.side,
                    order_type=info.order_type,
                    volume=info.volume,
                    price=info.price if info.order_type is OrderType.LIMIT else None,
                    status=OrderStatus.PENDING,
                    created_at=created,
                    updated_at=self._clock.now(),
                    exchange_order_id=info.exchange_order_id,
                    reason=reason,
                    attempts=1,
                    sent_at=created,
                )
            )
        if trades and self._entry(cid).filled_volume == 0:
            await self._record_trades(cid, trades)
        return await self._apply_and_emit(cid, info)

    async def _record_trades(self, cid: str, trades: Sequence[Fill]) -> None:
        """Each of the exchange's trades of order ``cid`` as one fill, oldest first."""
        filled, cost, fee = ZERO, ZERO, ZERO
        for trade in sorted(trades, key=lambda t: (t.time, t.trade_id)):
            fill = attrs.evolve(trade, client_order_id=cid)
            filled, cost, fee = filled + trade.volume, cost + trade.volume * trade.price, fee + trade.fee
            with self.store.transaction() as tx:
                tx.update_order(
                    cid,
                    filled_volume=filled,
                    avg_fill_price=cost / filled,
                    fee=fee,
                    exchange_order_id=trade.exchange_order_id,
                    updated_at=self._clock.now(),
                )
                recorded = self.portfolio.apply_fill(fill, tx)
            if recorded is not None:
                trades_log.info(
                    "trade (from the exchange's history): %s %s %s @ %s, fee %s, order %s",
                    fill.side.value,
                    fill.volume,
                    fill.pair,
                    fill.price,
                    fill.fee,
                    cid,
                )
                await self._call(self.on_fill, fill, "on_fill")

    async def _lookup(self, cid: str) -> OrderInfo | None:
        """``order_by_client_id`` with retries; raises :class:`_Unresolved` when every try failed."""
        last: BaseException | None = None
        for attempt in range(self.lookup_attempts):
            try:
                return await self.exchange.order_by_client_id(cid)
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then reported
                last = exc
                log.info("lookup of order %s failed (%s); retrying", cid, exc)
                await self._clock.sleep(self.lookup_backoff_s * 2**attempt)
        raise _Unresolved(f"lookup failed {self.lookup_attempts} times: {last}")

    def _since_send(self, cid: str, entry: JournalEntry) -> float:
        mono = self._sent_mono.get(cid)
        if mono is not None:
            return self._clock.monotonic() - mono
        if entry.sent_at is None:
            return float("inf")
        return (self._clock.now() - entry.sent_at).total_seconds()

    async def _find_after_send(self, cid: str) -> OrderInfo | None:
        """The order, or None once lookups after the grace period prove it absent."""
        while True:
            found = await self._lookup(cid)
            if found is not None:
                return found
            waited = self._since_send(cid, self._entry(cid))
            if waited >= self.not_found_grace_s:
                return None
            # a request still in flight may land after our lookup: ask again later
            await self._clock.sleep(self.not_found_grace_s - waited)

    async def _mark_not_placed(self, cid: str, why: str) -> OrderInfo:
        log.error("order %s: %s", cid, why)
        self.store.update_order(cid, status=OrderStatus.REJECTED, last_error=why)
        info = self._entry(cid).to_order_info()
        await self._emit_order(info)
        return info

    # --- applying what the exchange says ---------------------------------------------

    def _entry(self, cid: str) -> JournalEntry:
        entry = self.store.get_order(cid)
        if entry is None:
            raise OrderNotFound("no journal entry for that client order id", client_order_id=cid)
        return entry

    def _apply(self, cid: str, info: OrderInfo) -> tuple[JournalEntry, bool, Fill | None]:
        """Merge the exchange's view into the journal (synchronous, so never interleaved)."""
        cur = self._entry(cid)
        status: OrderStatus = (
            OrderStatus.OPEN if info.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN) else info.status
        )
        if cur.status.is_final and not status.is_final:
            status = cur.status  # a final state is never undone
        delta = info.filled_volume - cur.filled_volume
        fill: Fill | None = None
        filled, avg, fee = cur.filled_volume, cur.avg_fill_price, cur.fee
        if delta < 0:
            log.error(
                "order %s: exchange reports less filled (%s) than recorded (%s)",
                cid,
                info.filled_volume,
                filled,
            )
        elif delta > 0:
            new_avg = info.avg_fill_price or info.price or cur.price or self.portfolio.mark_price(cur.pair)
            if new_avg is None:
                log.error("order %s: filled %s but no price is known; will retry", cid, delta)
                status = cur.status
            else:
                prior_cost = (cur.avg_fill_price or ZERO) * cur.filled_volume
                price = (new_avg * info.filled_volume - prior_cost) / delta
                if price <= 0:
                    price = new_avg
                fill = Fill(
                    trade_id=f"{cid}:{info.filled_volume}",
                    client_order_id=cid,
                    exchange_order_id=info.exchange_order_id or cur.exchange_order_id,
                    pair=cur.pair,
                    side=cur.side,
                    price=price,
                    volume=delta,
                    fee=max(info.fee - cur.fee, ZERO),
                    time=self._clock.now(),
                )
                filled, avg, fee = info.filled_volume, new_avg, max(info.fee, cur.fee)
        exchange_id = info.exchange_order_id or cur.exchange_order_id
        changed = (status, filled, exchange_id) != (cur.status, cur.filled_volume, cur.exchange_order_id)
        if changed:
            with self.store.transaction() as tx:
                tx.update_order(
                    cid,
                    status=status,
                    filled_volume=filled,
                    avg_fill_price=avg,
                    fee=fee,
                    exchange_order_id=exchange_id,
                    updated_at=self._clock.now(),
                )
                if fill is not None and self.portfolio.apply_fill(fill, tx) is None:
                    fill = None  # recorded before (cannot happen while filled volume is journalled)
        if status.is_final:
            self._sent_mono.pop(cid, None)
        return self._entry(cid), changed, fill

    async def _apply_and_emit(self, cid: str, info: OrderInfo, *, force_emit: bool = False) -> OrderInfo:
        return (await self._apply_emit_changed(cid, info, force_emit=force_emit))[0]

    async def _apply_emit_changed(
        self, cid: str, info: OrderInfo, *, force_emit: bool = False
    ) -> tuple[OrderInfo, bool]:
        entry, changed, fill = self._apply(cid, info)
        if fill is not None:
            trades_log.info(
                "trade: %s %s %s @ %s, fee %s, strategy %s, order %s (%s)",
                fill.side.value,
                fill.volume,
                fill.pair,
                fill.price,
                fill.fee,
                entry.strategy or "-",
                cid,
                entry.status.value,
                extra={
                    "pair": fill.pair,
                    "side": fill.side.value,
                    "volume": str(fill.volume),
                    "price": str(fill.price),
                    "fee": str(fill.fee),
                    "strategy": entry.strategy,
                    "client_order_id": cid,
                    "trade_id": fill.trade_id,
                },
            )
        out = entry.to_order_info()
        if changed or force_emit:
            await self._emit_order(out)
        if fill is not None:
            await self._call(self.on_fill, fill, "on_fill")
        return out, changed

    async def _emit_order(self, info: OrderInfo) -> None:
        await self._call(self.on_order, info, "on_order")

    async def _call(self, callback: Callable[[Any], Any] | None, arg: Any, name: str) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a report listener never undoes what was recorded
            log.exception("%s callback failed", name)

    # --- tracking ----------------------------------------------------------------------

    async def _check(self, entry: JournalEntry, *, may_wait: bool) -> str:
        """Look one unfinished order up and settle what can be settled. Returns the outcome."""
        cid = entry.client_order_id
        try:
            info = await self.exchange.order_by_client_id(cid)
        except Exception as exc:  # noqa: BLE001 - stays tracked; the next round asks again
            log.info("lookup of order %s failed: %s", cid, exc)
            return "unresolved"
        if info is not None:
            self._missing_logged.discard(cid)
            _, changed = await self._apply_emit_changed(cid, info)
            return "updated" if changed else "unchanged"
        if entry.exchange_order_id is not None:
            if cid not in self._missing_logged:
                self._missing_logged.add(cid)
                log.error("order %s was acknowledged (%s) but is not found now", cid, entry.exchange_order_id)
                self.store.update_order(
                    cid, status=OrderStatus.UNKNOWN, last_error="acknowledged order not found on the exchange"
                )
            return "unresolved"
        waited = self._since_send(cid, entry)
        if waited < self.not_found_grace_s:
            if not may_wait:
                return "pending"
            await self._clock.sleep(self.not_found_grace_s - waited)
            return await self._check(self._entry(cid), may_wait=False)
        why = (
            "not placed: never sent (the bot stopped before sending)"
            if entry.attempts == 0
            else "not placed: not found on the exchange"
        )
        await self._mark_not_placed(cid, why)
        self.store.incr_counter("executor.not_placed")
        return "not_placed"

    async def poll_once(self) -> int:
        """Look up every unfinished order not being sent right now; return how many changed."""
        changed = 0
        for entry in self.store.non_final_orders():
            if entry.client_order_id in self._inflight:
                continue
            if await self._check(entry, may_wait=False) in ("updated", "not_placed"):
                changed += 1
        return changed

    async def run(self) -> None:
        """Poll unfinished orders every ``poll_interval_s`` until cancelled."""
        while True:
            try:
                await self.poll_once()
            except TradebotError:
                log.exception("order tracking round failed; trying again next round")
            await self._clock.sleep(self.poll_interval_s)

    async def reconcile(self) -> ReconcileReport:
        """Bring every unfinished journal entry in line with the exchange (call at start-up)."""
        entries = self.store.non_final_orders()
        outcomes: dict[str, list[str]] = {"updated": [], "not_placed": [], "unresolved": []}
        for entry in entries:
            outcome = await self._check(entry, may_wait=True)
            outcomes.setdefault(outcome, []).append(entry.client_order_id)
        orphans: list[OrderInfo] = []
        try:
            orphans = [
                info
                for info in await self.exchange.open_orders()
                if info.client_order_id is None or self.store.get_order(info.client_order_id) is None
            ]
        except Exception as exc:  # noqa: BLE001 - orphans are advisory; the journal is reconciled
            log.warning("could not list open orders to find unknown ones: %s", exc)
        for info in orphans:
            log.warning(
                "open order %s (client id %s) on the exchange is not in the journal; leaving it alone",
                info.exchange_order_id,
                info.client_order_id,
            )
        report = ReconcileReport(
            checked=len(entries),
            updated=tuple(outcomes["updated"]),
            not_placed=tuple(outcomes["not_placed"]),
            unresolved=tuple(outcomes["unresolved"]),
            orphans=tuple(orphans),
        )
        log.info("%s", report.message)
        return report

    # --- cancelling and flattening -------------------------------------------------------

    async def cancel(self, client_order_id: str) -> bool:
        """Cancel an order by client id (always allowed, whatever the trading state).

        True when the exchange cancelled it. The order is then looked up so fills made
        before the cancel are recorded.
        """
        entry = self._entry(client_order_id)
        if entry.status.is_final:
            return False
        try:
            cancelled = await self.exchange.cancel_order(client_order_id)
        except OrderNotFound:
            cancelled = False
        try:
            info = await self._lookup(client_order_id)
        except _Unresolved as exc:
            log.warning("order %s: cancel sent but state unknown (%s); tracking it", client_order_id, exc)
            return cancelled
        if info is not None:
            await self._apply_and_emit(client_order_id, info)
        return cancelled

    def working_orders(self, pair: str | None = None) -> list[JournalEntry]:
        """Unfinished journal entries (optionally of one pair)."""
        return [e for e in self.store.non_final_orders() if pair is None or e.pair == pair]

    def pending_exposure(self, pair: str) -> Decimal:
        """Signed unfilled volume of the pair's unfinished orders (for the risk gate)."""
        return sum((e.signed_remaining for e in self.working_orders(pair)), ZERO)

    async def flatten(self, pair: str, *, reason: str = "flatten") -> OrderInfo | None:
        """Close the pair's position with a market order through the normal path.

        Other working orders of the pair are cancelled first. Idempotent: while a flatten
        order of the pair is still working, it is returned instead of placing another.
        None when there is nothing to close, or only dust. With :attr:`markets` set the
        volume is fitted to the pair's rules (rounded down to the lot), and
        :class:`~tradebot.core.markets.MarketRuleError` says why when it cannot be sent.
        """
        working = self.working_orders(pair)
        for entry in working:
            if entry.strategy == FLATTEN_STRATEGY:
                return entry.to_order_info()
        for entry in working:
            await self.cancel(entry.client_order_id)
        volume = self.portfolio.position(pair).volume
        if volume == 0:
            return None
        side = Side.SELL if volume > 0 else Side.BUY
        size = abs(volume)
        if self.markets is not None:
            mark = self.portfolio.mark_price(pair)
            if self.markets.is_dust(pair, volume, mark):
                log.info(
                    "%s: %s left is dust (below the pair's minimum order); nothing to flatten", pair, volume
                )
                return None
            size, _ = self.markets.fit(
                pair=pair,
                side=side,
                order_type=OrderType.MARKET,
                volume=size,
                reference_price=mark,
                reduces=True,
            )
        request = OrderRequest(
            pair=pair,
            side=side,
            order_type=OrderType.MARKET,
            volume=size,
            client_order_id=self.order_ids.new() if self.order_ids is not None else str(uuid.uuid4()),
        )
        log.warning("flattening %s: %s %s (%s)", pair, request.side.value, request.volume, reason)
        return await self.submit(request, strategy=FLATTEN_STRATEGY, reason=reason)

    async def flatten_all(self, *, reason: str = "flatten") -> list[OrderInfo]:
        """:meth:`flatten` every pair with a position or a working order."""
        pairs = sorted(set(self.portfolio.positions()) | {e.pair for e in self.working_orders()})
        results = []
        for pair in pairs:
            info = await self.flatten(pair, reason=reason)
            if info is not None:
                results.append(info)
        return results
