"""ccxt's Kraken classes (REST: ``ccxt.async_support.kraken``; WebSocket v2: ``ccxt.pro.kraken``)
against the simulator, configured with nothing but the simulator's URLs and credentials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tradebot.simulator import Simulator

ccxt = pytest.importorskip("ccxt.async_support", reason="ccxt is a test dependency (pip install -e '.[dev]')")
ccxtpro = pytest.importorskip("ccxt.pro")

SYMBOL = "BTC/USD"


def config(sim: Simulator) -> dict[str, Any]:
    return {
        "apiKey": sim.api_key,
        "secret": sim.api_secret,
        "enableRateLimit": False,  # the simulator enforces Kraken's own limits
        "urls": {
            "api": {
                "public": sim.base_url,
                "private": sim.base_url,
                "ws": {"publicV2": sim.ws_url, "privateV2": sim.ws_url},
            }
        },
    }


@pytest.fixture
async def rest(sim: Simulator) -> AsyncIterator[Any]:
    exchange = ccxt.kraken(config(sim))
    try:
        yield exchange
    finally:
        await exchange.close()


@pytest.fixture
async def pro(sim: Simulator) -> AsyncIterator[Any]:
    exchange = ccxtpro.kraken(config(sim))
    try:
        yield exchange
    finally:
        await exchange.close()


async def test_public_rest(rest: Any, sim: Simulator) -> None:
    markets = await rest.load_markets()
    assert markets[SYMBOL]["id"] == "XXBTZUSD" and markets[SYMBOL]["precision"]["price"] == 0.1
    currencies = await rest.fetch_currencies()
    assert {"BTC", "USD", "EUR"} <= set(currencies)
    assert currencies["USD"]["id"] == "ZUSD" and currencies["USD"]["info"]["altname"] == "USD"
    assert abs(await rest.fetch_time() - sim.clock.now().timestamp() * 1000) < 5000
    assert (await rest.fetch_status())["status"] == "ok"
    ticker = await rest.fetch_ticker(SYMBOL)
    assert ticker["bid"] < ticker["ask"]
    book = await rest.fetch_order_book(SYMBOL, limit=10)
    assert len(book["bids"]) == 10 and book["bids"][0][0] < book["asks"][0][0]
    while sim.market["XXBTZUSD"].ticks < 3:
        await asyncio.sleep(0.05)
    trades = await rest.fetch_trades(SYMBOL)
    assert trades and all(t["side"] in ("buy", "sell") and t["price"] > 0 for t in trades)
    candles = await rest.fetch_ohlcv(SYMBOL, "1m")
    assert len(candles) == 720 and all(len(c) == 6 for c in candles)
    spread = await rest.publicGetSpread({"pair": "XBTUSD"})
    assert spread["result"]["XXBTZUSD"]


async def test_private_rest_order_life_cycle(rest: Any, sim: Simulator) -> None:
    await rest.load_markets()
    balance = await rest.fetch_balance()
    assert balance["USD"]["free"] == 100000 and balance["BTC"]["total"] == 1
    bid = sim.market["XXBTZUSD"].bid
    low = float(bid - 500)
    resting = await rest.create_order(
        SYMBOL, "limit", "buy", 0.01, low, {"postOnly": True, "clientOrderId": "cc-1"}
    )
    open_orders = await rest.fetch_open_orders(SYMBOL)
    assert [o["id"] for o in open_orders] == [resting["id"]]
    assert open_orders[0]["postOnly"] is True and open_orders[0]["clientOrderId"] in ("cc-1", "0")
    amended = await rest.edit_order(resting["id"], SYMBOL, "limit", "buy", 0.02, low + 1)
    assert amended["info"]["amend_id"]  # AmendOrder answers with the amend id only
    fetched = await rest.fetch_order(resting["id"])
    assert fetched["amount"] == 0.02 and fetched["price"] == low + 1
    # post-only above the ask: Kraken cancels it
    crossing = await rest.create_order(
        SYMBOL, "limit", "buy", 0.01, float(sim.market["XXBTZUSD"].ask + 500), {"postOnly": True}
    )
    assert (await rest.fetch_order(crossing["id"]))["status"] == "canceled"
    by_cost = await rest.create_market_buy_order_with_cost(SYMBOL, 500)
    spent = await rest.fetch_order(by_cost["id"])
    assert spent["status"] == "closed" and 499 <= spent["cost"] <= 500
    market_buy = await rest.create_order(SYMBOL, "market", "buy", 0.05)
    filled = await rest.fetch_order(market_buy["id"], None, {"trades": True})
    assert filled["status"] == "closed" and filled["filled"] == 0.05
    my_trades = await rest.fetch_my_trades(SYMBOL)
    assert any(t["order"] == market_buy["id"] for t in my_trades)
    order_trades = await rest.fetch_order_trades(
        market_buy["id"], SYMBOL, None, None, {"trades": filled["info"]["trades"]}
    )
    assert sum(t["amount"] for t in order_trades) == pytest.approx(0.05)
    stop = await rest.create_order(
        SYMBOL, "market", "sell", 0.01, None, {"stopLossPrice": float(bid * Decimal("0.8"))}
    )
    take = await rest.create_order(
        SYMBOL, "market", "sell", 0.01, None, {"takeProfitPrice": float(bid * Decimal("1.2"))}
    )
    trail = await rest.create_order(SYMBOL, "market", "sell", 0.01, None, {"trailingPercent": "5"})
    types = {o["id"]: o["info"]["descr"]["ordertype"] for o in await rest.fetch_open_orders(SYMBOL)}
    assert (
        types[stop["id"]] == "stop-loss"
        and types[take["id"]] == "take-profit"
        and types[trail["id"]] == "trailing-stop"
    )
    ioc = await rest.create_order(SYMBOL, "limit", "buy", 0.01, low, {"timeInForce": "IOC"})
    assert (await rest.fetch_order(ioc["id"]))["status"] == "canceled"
    by_ids = await rest.fetch_orders_by_ids([resting["id"], market_buy["id"]])
    assert {o["id"] for o in by_ids} == {resting["id"], market_buy["id"]}
    await rest.cancel_order(stop["id"])
    await rest.cancel_orders([take["id"], trail["id"]])
    closed = await rest.fetch_closed_orders(SYMBOL)
    assert {stop["id"], take["id"], trail["id"], crossing["id"]} <= {o["id"] for o in closed}
    switch = await rest.cancel_all_orders_after(10000)
    assert switch["result"]["triggerTime"] != "0"
    await rest.cancel_all_orders()
    assert await rest.fetch_open_orders(SYMBOL) == []
    await rest.cancel_all_orders_after(0)
    assert sim.dead_mans_switch is None


async def test_private_rest_batches_fees_ledger(rest: Any, sim: Simulator) -> None:
    await rest.load_markets()
    bid = float(sim.market["XXBTZUSD"].bid)
    created = await rest.create_orders(
        [
            {"symbol": SYMBOL, "type": "limit", "side": "buy", "amount": 0.01, "price": bid - 400},
            {"symbol": SYMBOL, "type": "limit", "side": "buy", "amount": 0.01, "price": bid - 450},
        ]
    )
    assert len(created) == 2 and all(o["id"] for o in created)
    assert len(await rest.fetch_open_orders(SYMBOL)) == 2
    await rest.cancel_orders([o["id"] for o in created])
    fee = await rest.fetch_trading_fee(SYMBOL)
    assert fee["taker"] == pytest.approx(0.004) and fee["maker"] == pytest.approx(0.0025)
    await rest.create_order(SYMBOL, "market", "sell", 0.01)
    ledger = await rest.fetch_ledger()
    assert {e["currency"] for e in ledger} >= {"BTC", "USD"}
    by_id = await rest.fetch_ledger_entries_by_ids([ledger[-1]["id"]])
    assert [e["id"] for e in by_id] == [ledger[-1]["id"]]
    trade_balance = await rest.privatePostTradeBalance()
    assert float(trade_balance["result"]["eb"]) > 100000
    token = await rest.privatePostGetWebSocketsToken()
    assert token["result"]["token"] and token["result"]["expires"] == 900


async def test_websocket_public_channels(pro: Any, sim: Simulator) -> None:
    ticker = await asyncio.wait_for(pro.watch_ticker(SYMBOL), 5)
    assert ticker["bid"] < ticker["ask"]
    book = await asyncio.wait_for(pro.watch_order_book(SYMBOL), 5)
    for _ in range(3):  # updates applied on top of the snapshot keep a sane book
        book = await asyncio.wait_for(pro.watch_order_book(SYMBOL), 5)
    assert len(book["bids"]) == 10 and book["bids"][0][0] < book["asks"][0][0]
    pm = sim.market["XXBTZUSD"]
    assert book["asks"][0][0] == pytest.approx(float(pm.ask), abs=200)
    trades = await asyncio.wait_for(pro.watch_trades(SYMBOL), 5)
    assert trades and trades[-1]["symbol"] == SYMBOL
    candles = await asyncio.wait_for(pro.watch_ohlcv(SYMBOL, "1m"), 5)
    assert candles and len(candles[-1]) == 6


async def test_websocket_private_channels_and_trading(pro: Any, sim: Simulator) -> None:
    await pro.load_markets()
    balance = await asyncio.wait_for(pro.watch_balance(), 5)
    assert balance["USD"]["total"] == 100000
    orders_watch = asyncio.ensure_future(pro.watch_orders())
    await asyncio.sleep(0.2)
    low = float(sim.market["XXBTZUSD"].bid - 500)
    placed = await asyncio.wait_for(pro.create_order_ws(SYMBOL, "limit", "buy", 0.01, low), 5)
    assert placed["id"].startswith("O")
    seen = await asyncio.wait_for(orders_watch, 5)
    assert placed["id"] in {o["id"] for o in seen}
    amended = await asyncio.wait_for(
        pro.edit_order_ws(placed["id"], SYMBOL, "limit", "buy", 0.02, low + 1), 5
    )
    assert amended["id"] == placed["id"]
    assert sim.account.orders[placed["id"]].volume == Decimal("0.02")
    cancelled = await asyncio.wait_for(pro.cancel_order_ws(placed["id"]), 5)
    assert cancelled["success"] is True
    assert sim.account.orders[placed["id"]].status == "canceled"
    trades_watch = asyncio.ensure_future(pro.watch_my_trades())
    await asyncio.sleep(0.2)
    bought = await asyncio.wait_for(pro.create_order_ws(SYMBOL, "market", "buy", 0.01), 5)
    my_trades = await asyncio.wait_for(trades_watch, 5)
    assert my_trades[-1]["order"] == bought["id"] and my_trades[-1]["amount"] == pytest.approx(0.01)
    second = await asyncio.wait_for(pro.create_order_ws(SYMBOL, "limit", "buy", 0.01, low), 5)
    everything = await asyncio.wait_for(pro.cancel_all_orders_ws(), 5)
    assert everything["result"]["count"] == 1
    assert sim.account.orders[second["id"]].status == "canceled"
