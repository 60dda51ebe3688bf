"""The Kraken plugin's dead man's switch and executions channel, against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.simulator import Simulator, run_simulator

from .test_with_simulator import connect

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(
        seed=2, tick_interval_s=0.05, heartbeat_s=0.1, volatility=0, trend=0
    ) as simulator:
        yield simulator


def limit(cl: str, price: Decimal, volume: str = "0.01") -> OrderRequest:
    return OrderRequest(
        pair="BTC/USD",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        volume=Decimal(volume),
        client_order_id=cl,
        price=price,
    )


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_dead_mans_switch_is_refreshed_while_alive_and_fires_when_the_bot_is_gone(
    sim: Simulator, tmp_path: Path
) -> None:
    ex = connect(
        sim, tmp_path, dead_mans_switch_s=1, dead_mans_switch_refresh_s=0.2, executions_channel=False
    )
    await ex.start()
    low = sim.market["XXBTZUSD"].bid - 1000
    await ex.place_order(limit("dms-1", low))
    await wait_for(lambda: sim.dead_mans_switch is not None)
    assert ex.dead_mans_switch is not None and ex.dead_mans_switch.stats.arms >= 1
    await asyncio.sleep(1.5)  # longer than the timeout: only the refreshes keep the order alive
    assert [o.cl_ord_id for o in sim.account.open_orders()] == ["dms-1"]
    # the bot "dies": the refreshes stop without a goodbye
    await ex.dead_mans_switch.stop(disarm=False)
    stopped = asyncio.get_running_loop().time()
    await wait_for(lambda: not sim.account.open_orders(), timeout=3)
    assert asyncio.get_running_loop().time() - stopped <= 1.0 + 0.5
    order = sim.account.find(cl_ord_id="dms-1")[0]
    assert order.status == "canceled"
    await ex.rest.close()


async def test_clean_close_disarms_and_leaves_orders(sim: Simulator, tmp_path: Path) -> None:
    ex = connect(
        sim, tmp_path, dead_mans_switch_s=1, dead_mans_switch_refresh_s=0.2, executions_channel=False
    )
    await ex.start()
    await ex.place_order(limit("left-1", sim.market["XXBTZUSD"].bid - 1000))
    await wait_for(lambda: sim.dead_mans_switch is not None)
    await ex.close()
    assert sim.dead_mans_switch is None and ex.dead_mans_switch is not None
    assert ex.dead_mans_switch.stats.disarmed is True
    await asyncio.sleep(1.5)
    assert [o.cl_ord_id for o in sim.account.open_orders()] == ["left-1"]


async def test_switch_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="dead_mans_switch_refresh_s"):
        KrakenConfig(dead_mans_switch_s=10, dead_mans_switch_refresh_s=10)
    with pytest.raises(ValueError, match="dead_mans_switch_s must be between 0 and 86400"):
        KrakenConfig(dead_mans_switch_s=-1)
    KrakenConfig(dead_mans_switch_s=0, dead_mans_switch_refresh_s=100)  # off: any refresh


async def test_executions_channel_answers_lookups_and_rest_covers_when_it_is_down(
    sim: Simulator, tmp_path: Path
) -> None:
    ex = connect(sim, tmp_path, dead_mans_switch_s=0)
    await ex.start()
    try:
        pm = sim.market["XXBTZUSD"]
        price = pm.bid - 50
        await ex.place_order(limit("ex-1", price, "0.02"))
        assert ex.executions is not None
        await wait_for(lambda: ex.executions is not None and ex.executions.live)
        await wait_for(lambda: ex.executions is not None and ex.executions.lookup("ex-1") is not None)
        rest_calls = dict(sim.stats.requests)
        info = await ex.order_by_client_id("ex-1")
        assert info is not None and info.status is OrderStatus.OPEN and info.price == price
        assert dict(sim.stats.requests) == rest_calls  # answered from the stream, no REST call
        # the market comes down to the order: fills arrive on the channel
        pm._mid = float(price) * 0.999
        await wait_for(lambda: sim.account.find(cl_ord_id="ex-1")[0].status == "closed")
        await wait_for(
            lambda: (i := ex.executions.lookup("ex-1")) is not None and i.status is OrderStatus.CLOSED
        )  # type: ignore[union-attr]
        streamed = await ex.order_by_client_id("ex-1")
        ex.executions._orders.clear()  # forget: the next lookup must go to REST
        ex.executions._by_client_id.clear()
        from_rest = await ex.order_by_client_id("ex-1")
        assert streamed is not None and from_rest is not None
        for field in (
            "status",
            "volume",
            "filled_volume",
            "fee",
            "avg_fill_price",
            "exchange_order_id",
            "price",
        ):
            assert getattr(streamed, field) == getattr(from_rest, field), field
        assert streamed.fee > 0 and ex.executions.stats.lookups_served >= 2
        # the socket dies: lookups go to REST until a fresh snapshot is in
        await sim.ws.disconnect_all(refuse_s=1.0)
        await wait_for(lambda: not ex.executions.live)  # type: ignore[union-attr]
        deferred = ex.executions.stats.lookups_deferred
        again = await ex.order_by_client_id("ex-1")
        assert again is not None and again.status is OrderStatus.CLOSED
        assert ex.executions.stats.lookups_deferred == deferred + 1
        await wait_for(lambda: ex.executions.live, timeout=5)  # type: ignore[union-attr]
        assert ex.executions.stats.connects >= 2
    finally:
        await ex.close()


async def test_the_order_executor_tracks_a_fill_through_the_executions_channel(
    sim: Simulator, tmp_path: Path
) -> None:
    """The bot's order executor polls order look-ups; with the channel live, they cost no REST
    call, and the journal ends where the exchange is."""
    from tradebot.core.executor import OrderExecutor
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.store import StateStore

    ex = connect(sim, tmp_path / "kraken", dead_mans_switch_s=0)
    store = StateStore(tmp_path)
    executor = OrderExecutor(ex, store, Portfolio(store, starting_cash=Decimal(100000)), poll_interval_s=0.05)
    await ex.start()
    task = asyncio.ensure_future(executor.run())
    try:
        pm = sim.market["XXBTZUSD"]
        price = pm.bid - 50
        await executor.submit(limit("tracked-1", price, "0.02"))
        assert ex.executions is not None
        await wait_for(lambda: ex.executions is not None and ex.executions.lookup("tracked-1") is not None)
        lookups = lambda: sim.stats.requests["OpenOrders"] + sim.stats.requests["ClosedOrders"]  # noqa: E731
        before = lookups()
        served = ex.executions.stats.lookups_served
        await asyncio.sleep(0.3)  # several polling rounds
        assert lookups() == before and ex.executions.stats.lookups_served > served
        pm._mid = float(price) * 0.999
        await wait_for(
            lambda: (e := store.get_order("tracked-1")) is not None and e.status is OrderStatus.CLOSED
        )
        order = sim.account.find(cl_ord_id="tracked-1")[0]
        fills = store.fills("BTC/USD")
        assert sum(f.volume for f in fills) == order.vol_exec == Decimal("0.02")
        assert sum(f.fee for f in fills) == order.fee
        assert lookups() == before  # the fill itself came from the channel too
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ex.close()
        store.close()
