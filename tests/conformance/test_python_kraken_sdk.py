"""python-kraken-sdk (REST: ``kraken.spot.Market/User/Trade``; WebSocket v2: ``SpotWSClient`` and
``SpotOrderBookClient``, which checks Kraken's book checksum) against the simulator, configured
with nothing but the simulator's URLs and credentials."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from tradebot.simulator import Simulator, run_simulator

spot = pytest.importorskip(
    "kraken.spot", reason="python-kraken-sdk is a test dependency (pip install -e '.[dev]')"
)


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The SDK's REST clients are synchronous: run them off the loop the simulator runs on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def clients(sim: Simulator) -> tuple[Any, Any, Any]:
    kw = {"key": sim.api_key, "secret": sim.api_secret, "url": sim.base_url}
    return spot.Market(url=sim.base_url), spot.User(**kw), spot.Trade(**kw)


async def test_rest_market_data(sim: Simulator) -> None:
    market, _, _ = clients(sim)
    assert (await call(market.get_system_status))["status"] == "online"
    assets = await call(market.get_assets)
    assert assets["ZUSD"]["altname"] == "USD" and assets["ZEUR"]["altname"] == "EUR"
    pairs = await call(market.get_asset_pairs, pair="XBTUSD")
    assert pairs["XXBTZUSD"]["wsname"] == "BTC/USD"
    ticker = await call(market.get_ticker, pair="XBTUSD")
    assert Decimal(ticker["XXBTZUSD"]["b"][0]) < Decimal(ticker["XXBTZUSD"]["a"][0])
    book = await call(market.get_order_book, pair="XBTUSD", count=5)
    assert len(book["XXBTZUSD"]["asks"]) == 5
    while sim.market["XXBTZUSD"].ticks < 3:
        await asyncio.sleep(0.05)
    trades = await call(market.get_recent_trades, pair="XBTUSD")
    assert trades["XXBTZUSD"] and all(isinstance(row[0], str) for row in trades["XXBTZUSD"])
    spreads = await call(market.get_recent_spreads, pair="XBTUSD")
    assert spreads["XXBTZUSD"]
    ohlc = await call(market.get_ohlc, pair="XBTUSD", interval=5)
    assert len(ohlc["XXBTZUSD"]) == 720


async def test_rest_account_and_trading(sim: Simulator) -> None:
    _, user, trade = clients(sim)
    balances = await call(user.get_balances)
    assert Decimal(balances["ZUSD"]["balance"]) == 100000
    assert Decimal((await call(user.get_trade_balance))["eb"]) > 100000
    bid = sim.market["XXBTZUSD"].bid
    low = str(bid - 500)
    limit = await call(
        trade.create_order,
        ordertype="limit",
        side="buy",
        pair="XBTUSD",
        volume="0.01",
        price=low,
        oflags=["post"],
        cl_ord_id="sdk-1",
    )
    txid = limit["txid"][0]
    amended = await call(trade.amend_order, txid=txid, order_qty="0.02")
    assert amended["amend_id"]
    amends = await call(user.get_order_amends, order_id=txid)
    assert amends["count"] == 2
    edited = await call(trade.edit_order, txid=txid, pair="XBTUSD", volume="0.03", price=str(bid - 400))
    assert edited["originaltxid"] == txid and edited["status"] == "ok"
    stop = await call(
        trade.create_order,
        ordertype="stop-loss-limit",
        side="sell",
        pair="XBTUSD",
        volume="0.01",
        price=str(bid - 1000),
        price2=str(bid - 1100),
    )
    trailing = await call(
        trade.create_order, ordertype="trailing-stop", side="sell", pair="XBTUSD", volume="0.01", price="+2%"
    )
    gtd = await call(
        trade.create_order,
        ordertype="limit",
        side="buy",
        pair="XBTUSD",
        volume="0.01",
        price=low,
        timeinforce="GTD",
        expiretm="+3600",
    )
    batch = await call(
        trade.create_order_batch,
        orders=[
            {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": low},
            {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": str(bid - 600)},
        ],
        pair="XBTUSD",
    )
    assert len(batch["orders"]) == 2
    open_orders = (await call(user.get_open_orders))["open"]
    assert {edited["txid"], stop["txid"][0], trailing["txid"][0], gtd["txid"][0]} <= set(open_orders)
    assert open_orders[edited["txid"]]["oflags"].startswith("post")
    assert open_orders[gtd["txid"][0]]["expiretm"] > 0
    info = await call(user.get_orders_info, txid=[stop["txid"][0]])
    assert info[stop["txid"][0]]["descr"]["ordertype"] == "stop-loss-limit"
    cancelled = await call(trade.cancel_order_batch, orders=[o["txid"] for o in batch["orders"]])
    assert cancelled["count"] == 2
    await call(trade.cancel_order, txid=trailing["txid"][0])
    market_buy = await call(trade.create_order, ordertype="market", side="buy", pair="XBTUSD", volume="0.02")
    history = (await call(user.get_trades_history))["trades"]
    fill_ids = [t for t, v in history.items() if v["ordertxid"] == market_buy["txid"][0]]
    assert fill_ids
    trades_info = await call(user.get_trades_info, txid=fill_ids)
    assert sum(Decimal(t["vol"]) for t in trades_info.values()) == Decimal("0.02")
    ledgers = (await call(user.get_ledgers_info))["ledger"]
    assert {e["refid"] for e in ledgers.values()} >= set(fill_ids)
    volume = await call(user.get_trade_volume, pair="XBTUSD")
    assert Decimal(volume["volume"]) > 0 and volume["fees"]["XXBTZUSD"]["fee"] == "0.4000"
    switch = await call(trade.cancel_all_orders_after_x, timeout=30)
    assert switch["triggerTime"] != "0"
    assert (await call(trade.cancel_all_orders))["count"] == 3
    assert (await call(user.get_open_orders))["open"] == {}
    await call(trade.cancel_all_orders_after_x, timeout=0)


def first(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data") or [{}]
    return data[0] if isinstance(data, list) else {}


class Collector:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while asyncio.get_running_loop().time() < deadline:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            await asyncio.sleep(0.02)
        raise AssertionError("expected message never came")


@pytest.fixture
async def ws(sim: Simulator) -> AsyncIterator[tuple[Any, Collector]]:
    collector = Collector()
    root = sim.base_url.replace("http://", "ws://")  # the SDK appends /v2
    client = spot.SpotWSClient(
        key=sim.api_key,
        secret=sim.api_secret,
        callback=collector,
        rest_url=sim.base_url,
        ws_url=root,
        auth_ws_url=root,
    )
    await client.start()
    try:
        yield client, collector
    finally:
        await client.close()


async def test_websocket_channels_and_methods(ws: tuple[Any, Collector], sim: Simulator) -> None:
    client, inbox = ws
    for params in (
        {"channel": "book", "symbol": ["BTC/USD"]},
        {"channel": "trade", "symbol": ["BTC/USD"]},
        {"channel": "ticker", "symbol": ["BTC/USD"]},
        {"channel": "instrument"},
        {"channel": "executions"},
        {"channel": "balances"},
    ):
        await client.subscribe(params=params)
        ack = await inbox.wait_for(
            lambda m, c=params["channel"]: (
                m.get("method") == "subscribe" and m.get("result", {}).get("channel") == c
            )
        )
        assert ack["success"] is True, ack
    await inbox.wait_for(lambda m: m.get("channel") == "book" and m.get("type") == "update")
    await inbox.wait_for(lambda m: m.get("channel") == "trade" and m.get("type") == "update")
    await inbox.wait_for(lambda m: m.get("channel") == "instrument")
    low = float(sim.market["XXBTZUSD"].bid - 500)
    await client.send_message(
        message={
            "method": "add_order",
            "req_id": 1,
            "params": {
                "order_type": "limit",
                "side": "buy",
                "order_qty": 0.01,
                "symbol": "BTC/USD",
                "limit_price": low,
                "post_only": True,
            },
        }
    )
    added = await inbox.wait_for(lambda m: m.get("method") == "add_order")
    assert added["success"] is True, added
    order_id = added["result"]["order_id"]
    await inbox.wait_for(
        lambda m: (
            m.get("channel") == "executions"
            and first(m).get("order_id") == order_id
            and first(m).get("exec_type") == "new"
        )
    )
    await client.send_message(
        message={"method": "amend_order", "req_id": 2, "params": {"order_id": order_id, "order_qty": 0.02}}
    )
    assert (await inbox.wait_for(lambda m: m.get("method") == "amend_order"))["success"] is True
    await client.send_message(
        message={
            "method": "edit_order",
            "req_id": 3,
            "params": {"order_id": order_id, "symbol": "BTC/USD", "order_qty": 0.03},
        }
    )
    edited = await inbox.wait_for(lambda m: m.get("method") == "edit_order")
    assert edited["success"] is True and edited["result"]["original_order_id"] == order_id
    new_id = edited["result"]["order_id"]
    await client.send_message(
        message={
            "method": "batch_add",
            "req_id": 4,
            "params": {
                "symbol": "BTC/USD",
                "orders": [
                    {"order_type": "limit", "side": "buy", "order_qty": 0.01, "limit_price": low - 10},
                    {
                        "order_type": "stop-loss",
                        "side": "sell",
                        "order_qty": 0.01,
                        "triggers": {"price": low - 20},
                    },
                ],
            },
        }
    )
    batch = await inbox.wait_for(lambda m: m.get("method") == "batch_add")
    assert batch["success"] is True and len(batch["result"]) == 2
    await client.send_message(
        message={"method": "cancel_order", "req_id": 5, "params": {"order_id": [new_id]}}
    )
    assert (await inbox.wait_for(lambda m: m.get("method") == "cancel_order"))["result"] == {
        "order_id": new_id
    }
    await client.send_message(
        message={
            "method": "batch_cancel",
            "req_id": 6,
            "params": {"orders": [batch["result"][0]["order_id"]]},
        }
    )
    assert (await inbox.wait_for(lambda m: m.get("method") == "batch_cancel"))["result"] == {"count": 1}
    await client.send_message(
        message={"method": "cancel_all_orders_after", "req_id": 7, "params": {"timeout": 60}}
    )
    assert (await inbox.wait_for(lambda m: m.get("method") == "cancel_all_orders_after"))["success"] is True
    await client.send_message(message={"method": "cancel_all", "req_id": 8, "params": {}})
    assert (await inbox.wait_for(lambda m: m.get("method") == "cancel_all"))["result"] == {"count": 1}
    await client.send_message(
        message={
            "method": "add_order",
            "req_id": 9,
            "params": {"order_type": "market", "side": "buy", "order_qty": 0.01, "symbol": "BTC/USD"},
        }
    )
    bought = (await inbox.wait_for(lambda m: m.get("method") == "add_order" and m.get("req_id") == 9))[
        "result"
    ]["order_id"]
    fill = await inbox.wait_for(
        lambda m: m.get("channel") == "executions" and first(m).get("exec_type") == "trade"
    )
    assert fill["data"][0]["order_id"] == bought and fill["data"][0]["last_qty"] == 0.01
    update = await inbox.wait_for(lambda m: m.get("channel") == "balances" and m.get("type") == "update")
    assert update["data"][0]["asset"] in ("BTC", "USD")
    assert all(o.status != "open" for o in sim.account.orders.values())


@pytest.fixture
def threaded_sim() -> Iterator[Simulator]:
    """A simulator on its own thread and loop: SpotOrderBookClient makes a blocking REST call from
    inside its message handler, which would stall a simulator sharing the test's loop."""
    ready: queue.Queue[Simulator] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with run_simulator(tick_interval_s=0.05, heartbeat_s=0.5, seed=3) as simulator:
            ready.put(simulator)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


async def test_order_book_client_keeps_a_valid_checksummed_book(
    threaded_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SpotOrderBookClient checks every update's CRC32 against its own copy of the book and
    resubscribes on a mismatch. It takes no URL arguments: its WebSocket base URL is a class
    attribute, and it looks pair precisions up with a ``Market()`` at the default REST URL, so
    both base URLs are pointed at the simulator."""
    sim = threaded_sim
    monkeypatch.setattr(spot.Market, "URL", sim.base_url)
    updates: list[dict[str, Any]] = []

    class Book(spot.SpotOrderBookClient):  # type: ignore[misc]
        async def on_book_update(self, pair: str, message: dict[str, Any]) -> None:
            updates.append(message)

    Book.WS_URL = sim.base_url.replace("http://", "ws://")  # the client's base URL (it appends /v2)
    book = Book(depth=10)
    await book.start()
    try:
        await book.add_book(pairs=["BTC/USD"])
        deadline = asyncio.get_running_loop().time() + 10
        while len([u for u in updates if u.get("type") == "update"]) < 20:
            assert asyncio.get_running_loop().time() < deadline, "book updates never came"
            await asyncio.sleep(0.05)
        assert not [u for u in updates if "error" in u], "a checksum mismatch was reported"
        local = book.get(pair="BTC/USD")
        assert local["valid"] is True and len(local["bid"]) == 10 and len(local["ask"]) == 10
    finally:
        await book.close()
