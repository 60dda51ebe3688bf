"""Executor + Kraken exchange against the Kraken-compatible simulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from tradebot.core.executor import OrderExecutor
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side
from tradebot.core.portfolio import Portfolio
from tradebot.core.store import StateStore
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.simulator import Simulator, run_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(tick_interval_s=0, heartbeat_s=0.2) as simulator:
        yield simulator


async def _kraken(sim: Simulator, tmp_path: Path) -> KrakenExchange:
    ex = KrakenExchange(
        KrakenConfig(
            base_url=sim.base_url,
            ws_url=sim.ws_url,
            min_spacing_s=0.0,
            request_timeout_s=2.0,
            connect_timeout_s=1.0,
            order_lookup_delay_s=0.0,
        ),
        api_key=sim.api_key,
        api_secret=sim.api_secret,
        state_dir=tmp_path / "kraken",
    )
    await ex.start()
    return ex


async def _until_final(exe: OrderExecutor, store: StateStore, cid: str, sim: Simulator) -> None:
    for _ in range(50):
        await exe.poll_once()
        entry = store.get_order(cid)
        if entry is not None and entry.status.is_final:
            return
        sim.step()
        await asyncio.sleep(0.02)
    raise AssertionError(f"order {cid} did not become final: {store.get_order(cid)}")


async def test_accepted_order_with_dropped_response_is_placed_once(sim: Simulator, tmp_path: Path) -> None:
    sim.faults.add("drop_response,on=AddOrder,n=1")
    ex = await _kraken(sim, tmp_path)
    store = StateStore(tmp_path)
    pf = Portfolio(store, starting_cash=D(10000))
    exe = OrderExecutor(ex, store, pf, not_found_grace_s=0.2, lookup_backoff_s=0.05)
    try:
        cid = "6f1c9a52-1f7e-4c59-9d1e-2b8f0c7e4a11"
        info = await exe.submit(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.01"), cid))
        assert info.status in (OrderStatus.OPEN, OrderStatus.CLOSED, OrderStatus.UNKNOWN)
        await _until_final(exe, store, cid, sim)
        state = sim.state()
        assert state["orders_created"] == {cid: 1}
        assert state["add_order_calls"] == {cid: 1}
        assert ex.orders_resolved_by_lookup == 1  # the answer was really lost and found by lookup
        entry = store.get_order(cid)
        assert entry is not None and entry.status is OrderStatus.CLOSED and entry.filled_volume == D("0.01")
        assert pf.position("BTC/USD").volume == D("0.01") and len(store.fills()) == 1
        # a restart reconciles to the same picture and adds nothing
        report = await OrderExecutor(ex, store, pf).reconcile()
        assert report.checked == 0 and len(store.fills()) == 1
    finally:
        await ex.close()
        store.close()
