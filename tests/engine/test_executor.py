"""Order executor: journal-before-send, exactly-once under lost responses, reconcile, fills."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.core.clock import FakeClock
from tradebot.core.errors import ConnectionFailed, InsufficientFunds, OrderOutcomeUnknown, RequestTimeout
from tradebot.core.executor import OrderExecutor
from tradebot.core.models import (
    Balances,
    Fill,
    OrderInfo,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    SystemStatus,
)
from tradebot.core.portfolio import Portfolio
from tradebot.core.store import JournalEntry, StateStore


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


class FakeExchange:
    """An in-memory exchange whose failures a test scripts per call."""

    name = "fake"

    def __init__(self) -> None:
        self.orders: dict[str, OrderInfo] = {}
        self.placements: Counter[str] = Counter()
        self.place_script: list[str] = []  # per call: ok | drop_response | lose_request | reject | crash_*
        self.lookup_failures = 0
        self.store: StateStore | None = None
        self.journal_seen: list[JournalEntry | None] = []
        self._n = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def server_time(self) -> datetime:
        return datetime.now(UTC)

    async def system_status(self) -> SystemStatus:
        return SystemStatus("online", datetime.now(UTC))

    async def balances(self) -> Balances:
        return Balances({}, datetime.now(UTC))

    def _book(self, req: OrderRequest) -> OrderInfo:
        self._n += 1
        self.placements[req.client_order_id] += 1
        info = OrderInfo(
            client_order_id=req.client_order_id,
            exchange_order_id=f"O{self._n}",
            pair=req.pair,
            side=req.side,
            order_type=req.order_type,
            volume=req.volume,
            filled_volume=D(0),
            status=OrderStatus.OPEN,
            price=req.price,
        )
        self.orders[req.client_order_id] = info
        return info

    async def place_order(self, request: OrderRequest) -> OrderInfo:
        if self.store is not None:
            self.journal_seen.append(self.store.get_order(request.client_order_id))
        action = self.place_script.pop(0) if self.place_script else "ok"
        if action == "crash_before_send":
            raise Crash
        if action == "lose_request":
            raise ConnectionFailed("connection reset")
        if action == "reject":
            raise InsufficientFunds("EOrder:Insufficient funds")
        if request.client_order_id in self.orders:
            raise AssertionError("duplicate client order id sent")
        info = self._book(request)
        if action == "drop_response":
            raise OrderOutcomeUnknown("response lost")
        if action == "timeout":
            raise RequestTimeout("timed out")
        if action == "crash_after_send":
            raise Crash
        return info

    def fill(self, cid: str, volume: str, price: str, fee: str = "0", final: bool | None = None) -> None:
        o = self.orders[cid]
        filled = o.filled_volume + D(volume)
        avg = ((o.avg_fill_price or D(0)) * o.filled_volume + D(price) * D(volume)) / filled
        done = filled >= o.volume if final is None else final
        self.orders[cid] = OrderInfo(
            o.client_order_id,
            o.exchange_order_id,
            o.pair,
            o.side,
            o.order_type,
            o.volume,
            filled,
            OrderStatus.CLOSED if done else OrderStatus.OPEN,
            o.price,
            avg,
            o.fee + D(fee),
        )

    async def cancel_order(self, client_order_id: str) -> bool:
        o = self.orders.get(client_order_id)
        if o is None or o.status is not OrderStatus.OPEN:
            return False
        self.orders[client_order_id] = OrderInfo(
            o.client_order_id,
            o.exchange_order_id,
            o.pair,
            o.side,
            o.order_type,
            o.volume,
            o.filled_volume,
            OrderStatus.CANCELED,
            o.price,
            o.avg_fill_price,
            o.fee,
        )
        return True

    async def open_orders(self) -> Sequence[OrderInfo]:
        return [o for o in self.orders.values() if o.status is OrderStatus.OPEN]

    async def order_by_client_id(self, client_order_id: str) -> OrderInfo | None:
        if self.lookup_failures > 0:
            self.lookup_failures -= 1
            raise ConnectionFailed("lookup failed")
        return self.orders.get(client_order_id)

    def market_data(self, pairs: Sequence[str], *, ohlc_interval: int | None = None) -> AsyncIterator[Any]:
        raise NotImplementedError  # not used by the executor


def req(cid: str = "c1", side: Side = Side.BUY, vol: str = "1", pair: str = "BTC/USD") -> OrderRequest:
    return OrderRequest(pair, side, OrderType.MARKET, D(vol), cid)


class Rig:
    def __init__(self, path: Path, ex: FakeExchange | None = None, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.store = StateStore(path, clock=self.clock)
        self.ex = ex or FakeExchange()
        self.ex.store = self.store
        self.pf = Portfolio(self.store, starting_cash=D(100000), clock=self.clock)
        self.orders: list[OrderInfo] = []
        self.fills: list[Fill] = []

        async def on_fill(f: Fill) -> None:
            self.fills.append(f)

        self.exe = OrderExecutor(
            self.ex,
            self.store,
            self.pf,
            clock=self.clock,
            not_found_grace_s=0.0,
            lookup_backoff_s=0.0,
            on_order=self.orders.append,
            on_fill=on_fill,
        )


async def test_journalled_before_send_then_fills_recorded_once(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    info = await r.exe.submit(req(), strategy="sma", reason="cross")
    seen = r.ex.journal_seen[0]
    assert seen is not None and seen.status is OrderStatus.PENDING and seen.attempts == 1
    assert info.status is OrderStatus.OPEN and info.exchange_order_id == "O1"
    assert r.exe.pending_exposure("BTC/USD") == D(1)
    r.ex.fill("c1", "0.4", "100", fee="0.1")
    assert await r.exe.poll_once() == 1
    r.ex.fill("c1", "0.6", "110", fee="0.2")
    await r.exe.poll_once()
    assert await r.exe.poll_once() == 0
    assert [(f.volume, f.price, f.fee) for f in r.fills] == [
        (D("0.4"), D(100), D("0.1")),
        (D("0.6"), D(110), D("0.2")),
    ]
    pos = r.pf.position("BTC/USD")
    assert pos.volume == D(1) and pos.avg_price == D("106.3")
    entry = r.store.get_order("c1")
    assert entry is not None and entry.status is OrderStatus.CLOSED and entry.strategy == "sma"
    assert r.exe.pending_exposure("BTC/USD") == 0
    assert [o.status for o in r.orders] == [OrderStatus.OPEN, OrderStatus.OPEN, OrderStatus.CLOSED]


@pytest.mark.parametrize("failure", ["drop_response", "timeout"])
async def test_lost_response_is_resolved_by_lookup_not_resend(tmp_path: Path, failure: str) -> None:
    r = Rig(tmp_path)
    r.ex.place_script = [failure]
    r.ex.lookup_failures = 2  # the first lookups fail too
    info = await r.exe.submit(req())
    assert info.status is OrderStatus.OPEN and r.ex.placements["c1"] == 1
    entry = r.store.get_order("c1")
    assert entry is not None and entry.attempts == 1 and entry.exchange_order_id == "O1"


async def test_lost_request_is_resent_with_same_client_id_once_proven_absent(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.ex.place_script = ["lose_request"]
    info = await r.exe.submit(req())
    assert info.status is OrderStatus.OPEN and r.ex.placements["c1"] == 1
    assert r.store.get_order("c1").attempts == 2  # type: ignore[union-attr]
    assert r.store.get_counter("executor.resent") == 1


async def test_resend_waits_for_the_grace_period(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.exe.not_found_grace_s = 5.0
    r.ex.place_script = ["lose_request"]
    import asyncio

    task = asyncio.create_task(r.exe.submit(req()))
    await r.clock.advance(1)
    assert not task.done() and r.ex.placements["c1"] == 0
    await r.clock.advance(5)
    info = await task
    assert info.status is OrderStatus.OPEN and r.ex.placements["c1"] == 1


async def test_gives_up_after_max_attempts(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.ex.place_script = ["lose_request"] * 3
    info = await r.exe.submit(req())
    assert info.status is OrderStatus.REJECTED and r.ex.placements["c1"] == 0
    assert "not placed: 3 attempts" in r.store.get_order("c1").last_error  # type: ignore[union-attr]


async def test_unresolvable_stays_unknown_and_polling_resolves(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.ex.place_script = ["drop_response"]
    r.ex.lookup_failures = 10
    info = await r.exe.submit(req())
    assert info.status is OrderStatus.UNKNOWN
    assert r.exe.pending_exposure("BTC/USD") == D(1)  # still counted as exposure
    r.ex.lookup_failures = 0
    await r.exe.poll_once()
    assert r.store.get_order("c1").status is OrderStatus.OPEN  # type: ignore[union-attr]
    assert r.ex.placements["c1"] == 1


async def test_rejection_is_final_and_never_resent(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.ex.place_script = ["reject"]
    info = await r.exe.submit(req())
    assert info.status is OrderStatus.REJECTED and r.orders[-1].status is OrderStatus.REJECTED
    again = await r.exe.submit(req())
    assert again.status is OrderStatus.REJECTED and len(r.ex.journal_seen) == 1


async def test_same_client_id_is_never_sent_twice(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    await r.exe.submit(req())
    await r.exe.submit(req())
    assert len(r.ex.journal_seen) == 1


async def _crash_run(tmp_path: Path, script: list[str], after: Any = None) -> tuple[Rig, FakeExchange]:
    """Run a submit that 'dies' at a scripted point, then start a new bot on the same files."""
    ex = FakeExchange()
    first = Rig(tmp_path, ex)
    ex.place_script = script
    with pytest.raises(Crash):
        await first.exe.submit(req())
    if after is not None:
        after(ex)
    # no close(): a killed process does not checkpoint or close anything
    clock = FakeClock(start=5000.0, wall=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=1))
    return Rig(tmp_path, ex, clock), ex


async def test_reconcile_after_death_before_send(tmp_path: Path) -> None:
    second, ex = await _crash_run(tmp_path, ["crash_before_send"])
    report = await second.exe.reconcile()
    assert report.not_placed == ("c1",) and ex.placements["c1"] == 0
    assert second.store.get_order("c1").status is OrderStatus.REJECTED  # type: ignore[union-attr]
    assert second.store.non_final_orders() == []


async def test_reconcile_after_death_between_send_and_answer(tmp_path: Path) -> None:
    second, ex = await _crash_run(tmp_path, ["crash_after_send"])
    report = await second.exe.reconcile()
    assert report.updated == ("c1",) and ex.placements["c1"] == 1
    entry = second.store.get_order("c1")
    assert entry is not None and entry.status is OrderStatus.OPEN and entry.exchange_order_id == "O1"
    ex.fill("c1", "1", "100")
    await second.exe.poll_once()
    assert second.pf.position("BTC/USD").volume == D(1)


async def test_reconcile_after_fill_while_down(tmp_path: Path) -> None:
    second, ex = await _crash_run(
        tmp_path, ["crash_after_send"], after=lambda e: e.fill("c1", "1", "100", "0.3")
    )
    await second.exe.reconcile()
    assert second.pf.position("BTC/USD").volume == D(1) and second.pf.cash == D(100000) - D("100.3")
    third = Rig(tmp_path, ex)
    await third.exe.reconcile()
    await third.exe.poll_once()
    assert len(third.store.fills()) == 1 and third.pf.position("BTC/USD").volume == D(1)


async def test_reconcile_sent_but_never_arrived(tmp_path: Path) -> None:
    # the request was being sent when the process died and never reached the exchange
    def vanish(ex: FakeExchange) -> None:
        del ex.orders["c1"]
        ex.placements.clear()

    second, ex = await _crash_run(tmp_path, ["crash_after_send"], after=vanish)
    report = await second.exe.reconcile()
    assert report.not_placed == ("c1",) and ex.placements["c1"] == 0  # not resent: the signal is stale


async def test_reconcile_waits_grace_for_recent_sends(tmp_path: Path) -> None:
    import asyncio

    r = Rig(tmp_path)
    now = r.clock.now()
    r.store.journal_order(
        JournalEntry(
            "c9",
            "BTC/USD",
            Side.BUY,
            OrderType.MARKET,
            D(1),
            OrderStatus.PENDING,
            now,
            now,
            attempts=1,
            sent_at=now,
        )
    )
    r.exe.not_found_grace_s = 10.0
    task = asyncio.create_task(r.exe.reconcile())
    await r.clock.advance(2)
    assert not task.done()
    r.ex._book(req("c9"))  # the in-flight request lands late
    await r.clock.advance(10)
    report = await task
    assert report.updated == ("c9",) and r.store.get_order("c9").status is OrderStatus.OPEN  # type: ignore[union-attr]


async def test_reconcile_reports_orphans_and_unresolved(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    await r.exe.submit(req("c1"))
    r.ex._book(req("stranger"))
    r.ex.lookup_failures = 1
    report = await r.exe.reconcile()
    assert report.unresolved == ("c1",) and [o.client_order_id for o in report.orphans] == ["stranger"]
    assert "1 unresolved" in report.message


async def test_cancel_records_fills_before_cancel(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    await r.exe.submit(req())
    r.ex.fill("c1", "0.25", "100")
    assert await r.exe.cancel("c1")
    entry = r.store.get_order("c1")
    assert entry is not None and entry.status is OrderStatus.CANCELED and entry.filled_volume == D("0.25")
    assert r.pf.position("BTC/USD").volume == D("0.25")
    assert not await r.exe.cancel("c1")  # already final


async def test_flatten_is_idempotent_and_closes(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    await r.exe.submit(req("c1", vol="2"))
    r.ex.fill("c1", "2", "100")
    await r.exe.poll_once()
    await r.exe.submit(req("c2", vol="1"))  # a working buy: cancelled by flatten
    first = await r.exe.flatten("BTC/USD", reason="halt: close")
    assert first is not None and first.side is Side.SELL and first.volume == D(2)
    assert r.store.get_order("c2").status is OrderStatus.CANCELED  # type: ignore[union-attr]
    again = await r.exe.flatten_all()
    assert [o.client_order_id for o in again] == [first.client_order_id]
    r.ex.fill(first.client_order_id, "2", "90")  # type: ignore[arg-type]
    await r.exe.poll_once()
    assert r.pf.position("BTC/USD").volume == 0
    assert await r.exe.flatten("BTC/USD") is None
    assert r.store.realized_pnl()[-1].pnl == D(-20)
