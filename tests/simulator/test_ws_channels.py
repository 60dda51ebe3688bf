"""WebSocket v2: book (checksum, consistency with Depth), trade, instrument, executions, balances
and the trading methods, checked against what REST says about the same account."""

from __future__ import annotations

import asyncio
import zlib
from decimal import Decimal
from typing import Any

import aiohttp

from tradebot.simulator import Simulator

from .conftest import KrakenTestClient
from .test_ws import connect, receive, receive_until


def checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    def level(price: str, qty: str) -> str:
        return price.replace(".", "").lstrip("0") + qty.replace(".", "").lstrip("0")

    return zlib.crc32(
        "".join(level(*a) for a in asks[:10]).encode() + "".join(level(*b) for b in bids[:10]).encode()
    )


class LocalBook:
    """A client's copy of the book, kept as Kraken's docs say: apply, drop qty 0, cut to depth."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.asks: dict[str, str] = {}
        self.bids: dict[str, str] = {}

    def apply(self, entry: dict[str, Any]) -> None:
        for side, levels in ((self.asks, entry["asks"]), (self.bids, entry["bids"])):
            for level in levels:
                price, qty = f"{level['price']:.1f}", f"{level['qty']:.8f}"
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.asks = dict(sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))[: self.depth])
        self.bids = dict(sorted(self.bids.items(), key=lambda kv: -Decimal(kv[0]))[: self.depth])

    def checksum(self) -> int:
        return checksum(list(self.asks.items()), list(self.bids.items()))


async def test_book_stays_consistent_with_its_checksum_and_with_depth(
    session: aiohttp.ClientSession, sim: Simulator, kraken: KrakenTestClient
) -> None:
    ws = await connect(session, sim)
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}}
    )
    ack = await receive_until(ws, lambda m: m.get("method") == "subscribe")
    assert ack["success"] is True and ack["result"]["depth"] == 10
    snapshot = await receive_until(ws, lambda m: m.get("channel") == "book")
    assert snapshot["type"] == "snapshot"
    book = LocalBook(10)
    book.apply(snapshot["data"][0])
    assert book.checksum() == snapshot["data"][0]["checksum"]
    assert all(isinstance(level["price"], float) for level in snapshot["data"][0]["asks"])
    for _ in range(25):
        sim.step()
        update = await receive_until(ws, lambda m: m.get("channel") == "book")
        assert update["type"] == "update"
        book.apply(update["data"][0])
        assert book.checksum() == update["data"][0]["checksum"]
    depth = (await kraken.public("Depth", pair="XBTUSD", count=10))["result"]["XXBTZUSD"]
    assert [Decimal(p) for p, _, _ in depth["asks"]] == [Decimal(p) for p in book.asks]
    assert [Decimal(q) for _, q, _ in depth["bids"]] == [Decimal(q) for q in book.bids.values()]
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 7}}
    )
    refused = await receive_until(ws, lambda m: m.get("method") == "subscribe")
    assert refused["success"] is False
    await ws.close()


async def test_trade_and_instrument_channels(session: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.step(3)
    ws = await connect(session, sim)
    await ws.send_json({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}})
    snapshot = await receive_until(ws, lambda m: m.get("channel") == "trade")
    assert snapshot["type"] == "snapshot" and len(snapshot["data"]) == 3
    assert set(snapshot["data"][0]) == {"symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"}
    sim.step()
    update = await receive_until(ws, lambda m: m.get("channel") == "trade")
    assert update["type"] == "update" and len(update["data"]) == 1
    assert update["data"][0]["trade_id"] == snapshot["data"][-1]["trade_id"] + 1
    await ws.send_json({"method": "subscribe", "params": {"channel": "instrument"}})
    instrument = await receive_until(ws, lambda m: m.get("channel") == "instrument")
    pairs = {p["symbol"]: p for p in instrument["data"]["pairs"]}
    assert pairs["BTC/USD"]["price_precision"] == 1 and pairs["BTC/USD"]["qty_precision"] == 8
    assert {a["id"] for a in instrument["data"]["assets"]} >= {"BTC", "USD", "EUR"}
    await ws.close()


async def token(kraken: KrakenTestClient) -> str:
    result = await kraken.private("GetWebSocketsToken")
    assert result["error"] == [] and result["result"]["expires"] == 900
    value: str = result["result"]["token"]
    return value


async def call(
    ws: aiohttp.ClientWebSocketResponse,
    method: str,
    req_id: int,
    *,
    inbox: list[Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Send one request and wait for its reply; other messages go to ``inbox`` when given."""
    await ws.send_json({"method": method, "params": params, "req_id": req_id})
    for _ in range(200):
        message = await receive(ws)
        if message.get("method") == method and message.get("req_id") == req_id:
            return message
        if inbox is not None:
            inbox.append(message)
    raise AssertionError(f"no reply to {method}")


async def test_private_channels_need_a_token(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "executions", "token": "forged"}, "req_id": 1}
    )
    reply = await receive_until(ws, lambda m: m.get("method") == "subscribe")
    assert reply["success"] is False and reply["error"] == "ESession:Invalid session"
    reply = await call(ws, "add_order", 2, order_type="market", side="buy", order_qty=0.01, symbol="BTC/USD")
    assert reply["success"] is False and reply["error"] == "ESession:Invalid session"
    assert sim.account.orders == {}
    await ws.close()


async def test_executions_and_balances_report_what_rest_shows(
    session: aiohttp.ClientSession, sim: Simulator, kraken: KrakenTestClient
) -> None:
    tok = await token(kraken)
    ws = await connect(session, sim)
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "executions", "token": tok, "snap_trades": True}}
    )
    ack = await receive_until(ws, lambda m: m.get("method") == "subscribe")
    assert ack["success"] is True
    snapshot = await receive_until(ws, lambda m: m.get("channel") == "executions")
    assert snapshot["type"] == "snapshot" and snapshot["data"] == []
    await ws.send_json({"method": "subscribe", "params": {"channel": "balances", "token": tok}})
    balances = await receive_until(ws, lambda m: m.get("channel") == "balances")
    assert {b["asset"]: b["balance"] for b in balances["data"]}["USD"] == 100000.0

    pm = sim.market["XXBTZUSD"]
    inbox: list[dict[str, Any]] = []
    # trading over the socket and over REST lands on the same account
    placed = await call(
        ws,
        "add_order",
        10,
        token=tok,
        inbox=inbox,
        order_type="market",
        side="buy",
        order_qty=0.1,
        symbol="BTC/USD",
        cl_ord_id="ws-1",
    )
    assert placed["success"] is True and placed["result"]["cl_ord_id"] == "ws-1", placed
    resting = await call(
        ws,
        "add_order",
        11,
        token=tok,
        inbox=inbox,
        order_type="limit",
        side="buy",
        order_qty=0.01,
        symbol="BTC/USD",
        limit_price=float(pm.bid - 100),
        post_only=True,
    )
    rest_placed = await kraken.private(
        "AddOrder", pair="XBTUSD", type="sell", ordertype="stop-loss", volume="0.01", price=str(pm.bid - 500)
    )
    amended = await call(
        ws, "amend_order", 12, token=tok, inbox=inbox, order_id=resting["result"]["order_id"], order_qty=0.02
    )
    assert amended["success"] is True and amended["result"]["amend_id"]
    edited = await call(
        ws,
        "edit_order",
        13,
        token=tok,
        inbox=inbox,
        order_id=rest_placed["result"]["txid"][0],
        symbol="BTC/USD",
        order_qty=0.02,
    )
    assert (
        edited["success"] is True
        and edited["result"]["original_order_id"] == rest_placed["result"]["txid"][0]
    )
    refused = await call(
        ws,
        "add_order",
        14,
        token=tok,
        inbox=inbox,
        order_type="market",
        side="buy",
        order_qty=500,
        symbol="BTC/USD",
    )
    assert refused["success"] is False and refused["error"] == "EOrder:Insufficient funds"
    malformed = await call(
        ws,
        "add_order",
        15,
        token=tok,
        inbox=inbox,
        order_type="limit",
        side="buy",
        order_qty="lots",
        symbol="BTC/USD",
    )
    assert malformed["success"] is False and malformed["error"].startswith("EGeneral:Invalid arguments")
    batch = await call(
        ws,
        "batch_add",
        16,
        token=tok,
        inbox=inbox,
        symbol="BTC/USD",
        orders=[
            {"order_type": "limit", "side": "buy", "order_qty": 0.01, "limit_price": float(pm.bid - 200)},
            {"order_type": "limit", "side": "buy", "order_qty": 0.01, "limit_price": float(pm.bid - 300)},
        ],
    )
    assert batch["success"] is True and len(batch["result"]) == 2
    cancelled = await call(
        ws, "cancel_order", 17, token=tok, inbox=inbox, order_id=[batch["result"][0]["order_id"]]
    )
    assert cancelled["success"] is True and cancelled["result"] == {
        "order_id": batch["result"][0]["order_id"]
    }
    switch = await call(ws, "cancel_all_orders_after", 18, token=tok, inbox=inbox, timeout=60)
    assert switch["success"] is True and switch["result"]["triggerTime"] != "0"
    assert sim.dead_mans_switch is not None
    everything = await call(ws, "cancel_all", 19, token=tok, inbox=inbox)
    open_now = len([o for o in sim.account.orders.values() if o.status == "canceled"])
    assert everything["success"] is True and everything["result"]["count"] >= 3 and open_now >= 4

    # collect the update stream until the last cancel is reported
    reports: list[dict[str, Any]] = []
    ledger_updates: list[dict[str, Any]] = []
    quiet_until = asyncio.get_running_loop().time() + 0.5  # heartbeats do not count as news
    while (left := quiet_until - asyncio.get_running_loop().time()) > 0:
        try:
            inbox.append(await receive(ws, timeout=left))
        except TimeoutError:
            break
        if inbox[-1].get("channel") in ("executions", "balances"):
            quiet_until = asyncio.get_running_loop().time() + 0.5
    for message in inbox:
        if message.get("channel") == "executions":
            assert len(message["data"]) == 1 and message["sequence"] > 0
            reports.extend(message["data"])
        elif message.get("channel") == "balances" and message["type"] == "update":
            ledger_updates.extend(message["data"])
    await ws.close()

    # every order REST knows appears in the stream, ending in the status REST reports
    rest_orders = (await kraken.private("ClosedOrders"))["result"]["closed"]
    assert (await kraken.private("OpenOrders"))["result"]["open"] == {}
    final: dict[str, dict[str, Any]] = {}
    for report in reports:
        final.setdefault(report["order_id"], {}).update(report)
    assert set(final) == set(rest_orders)
    status_names = {"closed": "filled", "canceled": "canceled"}
    for txid, info in rest_orders.items():
        assert final[txid]["order_status"] == status_names[info["status"]], txid
        assert final[txid]["cum_qty"] == float(info["vol_exec"])
    # every fill REST knows is one trade report, with the same price and quantity
    rest_trades = (await kraken.private("TradesHistory"))["result"]["trades"]
    trade_reports = {r["exec_id"]: r for r in reports if r["exec_type"] == "trade"}
    assert set(trade_reports) == set(rest_trades)
    for txid, trade in rest_trades.items():
        assert trade_reports[txid]["last_price"] == float(trade["price"])
        assert trade_reports[txid]["last_qty"] == float(trade["vol"])
    assert {r["exec_type"] for r in reports} >= {
        "pending_new",
        "new",
        "trade",
        "filled",
        "canceled",
        "amended",
    }
    # balance updates end at the balances REST reports
    rest_balances = (await kraken.private("Balance"))["result"]
    last_balance = {u["asset"]: u["balance"] for u in ledger_updates}
    assert last_balance["USD"] == float(rest_balances["ZUSD"]) and last_balance["BTC"] == float(
        rest_balances["XXBT"]
    )


async def test_garbage_requests_get_error_replies_and_the_socket_lives_on(
    session: aiohttp.ClientSession, sim: Simulator, kraken: KrakenTestClient
) -> None:
    import random

    tok = await token(kraken)
    rng = random.Random(3)
    methods = [
        "add_order",
        "amend_order",
        "edit_order",
        "cancel_order",
        "cancel_all",
        "cancel_all_orders_after",
        "batch_add",
        "batch_cancel",
        "subscribe",
        "unsubscribe",
        "nope",
    ]
    values: list[Any] = [
        None,
        0,
        -1,
        1e308,
        "x",
        "",
        [],
        {},
        [1, "a"],
        {"price": "x"},
        True,
        0.01,
        "BTC/USD",
        "limit",
        "market",
        "buy",
        "stop-loss",
        {"price": 1, "price_type": "pct"},
        tok,
    ]
    keys = [
        "order_type",
        "side",
        "order_qty",
        "symbol",
        "limit_price",
        "triggers",
        "order_id",
        "cl_ord_id",
        "orders",
        "timeout",
        "channel",
        "depth",
        "snapshot",
        "token",
        "time_in_force",
        "expire_time",
        "post_only",
    ]
    ws = await connect(session, sim)
    for req_id in range(1, 301):
        params = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 6))}
        if rng.random() < 0.7:
            params["token"] = tok
        await ws.send_json({"method": rng.choice(methods), "params": params, "req_id": req_id})
    await ws.send_json({"method": "ping", "req_id": 999})
    errors: list[str] = []

    def seen(message: dict[str, Any]) -> bool:
        if message.get("success") is False:
            errors.append(str(message.get("error")))
        return message.get("method") == "pong"

    pong = await receive_until(ws, seen, limit=5000)
    assert pong["req_id"] == 999
    assert errors and "EGeneral:Internal error" not in errors
    assert not ws.closed
    await ws.close()
