"""A lost state rebuilt from the exchange: its fills are the exchange's trades, one for one.

Real simulator, real Kraken client, real SQLite stores. A bot's orders (a market order, a
limit order filled in parts by the market, one left resting) are on the exchange; its state
is lost (a new, empty store: what a wiped folder or a damaged file leaves). The start-up
recovery rebuilds the journal: every fill in the portfolio then equals one of the
simulator's trades (volume, price, fee), positions equal the trades' sum, the bot is HALTED,
and ``state check`` finds nothing to report. A journal whose fills differ from the trades is
reported naming the order and the figures.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace

import pytest

from tradebot.core.executor import OrderExecutor
from tradebot.core.models import OrderRequest, OrderType, Side, TradingState
from tradebot.core.order_ids import OrderIds
from tradebot.core.portfolio import Portfolio
from tradebot.core.state_rebuild import check_state, recover_at_start
from tradebot.core.store import StateStore
from tradebot.core.trading_state import TradingStateMachine
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.simulator import Simulator, run_simulator

IDS = OrderIds("rebuild-trades")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(seed=11, tick_interval_s=0, rate_tier="pro") as simulator:
        yield simulator


@pytest.fixture
async def ex(sim: Simulator, tmp_path: Path) -> AsyncIterator[KrakenExchange]:
    exchange = KrakenExchange(
        KrakenConfig(
            base_url=sim.base_url,
            ws_url=sim.ws_url,
            min_spacing_s=0.0,
            order_lookup_delay_s=0.0,
            rate_tier="pro",
        ),
        api_key=sim.api_key,
        api_secret=sim.api_secret,
        state_dir=tmp_path / "k",
    )
    await exchange.start()
    try:
        yield exchange
    finally:
        await exchange.close()


async def _trade(sim: Simulator, ex: KrakenExchange) -> None:
    """This bot's orders on the exchange, with more than one trade for one of them."""
    await ex.place_order(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.01"), IDS.new()))
    await ex.place_order(OrderRequest("ETH/USD", Side.BUY, OrderType.MARKET, D("8"), IDS.new()))
    eth = sim.market["XETHZUSD"]
    # a big sell resting just above the ask: the market trades it in parts as it moves up
    price = (eth.ask * D("1.0005")).quantize(D("0.01"))
    await ex.place_order(OrderRequest("ETH/USD", Side.SELL, OrderType.LIMIT, D("5"), IDS.new(), price=price))
    for _ in range(400):
        resting = [o for o in sim.account.orders.values() if o.pair.key == "XETHZUSD" and o.side == "sell"]
        if resting and len(resting[0].trades) >= 2:
            break
        sim.step(5)
        await asyncio.sleep(0)
    await ex.place_order(
        OrderRequest(
            "BTC/USD",
            Side.BUY,
            OrderType.LIMIT,
            D("0.001"),
            IDS.new(),
            price=(sim.market["XXBTZUSD"].bid * D("0.5")).quantize(D("0.1")),
        )
    )


def _sim_trades(sim: Simulator) -> list[tuple[str, D, D, D]]:
    return sorted(
        (t["ordertxid"], D(t["vol"]), D(t["price"]), D(t["fee"])) for t in sim.account.trades.values()
    )


@pytest.mark.timeout(30)
async def test_a_lost_state_is_rebuilt_with_the_exchanges_trades_as_its_fills(
    sim: Simulator, ex: KrakenExchange, tmp_path: Path
) -> None:
    await _trade(sim, ex)
    assert max(len(o.trades) for o in sim.account.orders.values()) >= 2, "no order traded in parts"

    store = StateStore(tmp_path / "state")  # the state is gone: a new, empty store
    try:
        portfolio = Portfolio(store, quote="USD", starting_cash=D(0))
        executor = OrderExecutor(ex, store, portfolio, not_found_grace_s=0.2, lookup_backoff_s=0.05)
        trading = TradingStateMachine(store=store)
        reason = await recover_at_start(
            SimpleNamespace(store=store, exchange=ex, trading=trading), executor, IDS
        )
        assert reason is not None and trading.state is TradingState.HALTED
        assert "fills equal the exchange's trades" in reason, reason

        fills = sorted((f.exchange_order_id, f.volume, f.price, f.fee) for f in store.fills())
        assert fills == _sim_trades(sim)  # one fill per trade: volume, price and fee as traded
        assert {f.trade_id for f in store.fills()} == set(sim.account.trades)
        for pair, key in (("BTC/USD", "XXBTZUSD"), ("ETH/USD", "XETHZUSD")):
            signed = sum(
                (
                    D(t["vol"]) if t["type"] == "buy" else -D(t["vol"])
                    for t in sim.account.trades.values()
                    if t["pair"] == key
                ),
                D(0),
            )
            assert portfolio.position(pair).volume == signed
        assert portfolio.cash == sim.account.balances["USD"]
        report = await check_state(store, ex, IDS, None)
        assert report.clean, report.lines()

        # a journal whose fills differ from the trades (a fee and a volume changed) is reported
        txid = next(o.txid for o in sim.account.orders.values() if len(o.trades) >= 2)
        cid = next(o.cl_ord_id for o in sim.account.orders.values() if o.txid == txid)
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE fills SET fee = '9.99' WHERE exchange_order_id = ?", (txid,))
        report = await check_state(store, ex, IDS, None)
    finally:
        store.close()
    assert not report.clean
    (line,) = report.fill_differences
    assert (
        line.startswith(f"{cid} (") and "fee " in line and "in the journal" in line and "charged" in line
    ), line
    assert any("fills differ from the exchange's trades" in out for out in report.lines())
