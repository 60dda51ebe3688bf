"""Kraken WebSocket v2 at ``/v2`` (public and authenticated in one endpoint).

Channels: ``status``, ``heartbeat``, ``ticker``, ``ohlc``, ``book`` (with Kraken's CRC32
checksum of the top ten levels), ``trade``, ``instrument``, and with a token from
GetWebSocketsToken ``executions`` and ``balances``. Methods: ``ping``, ``subscribe``,
``unsubscribe``, ``add_order``, ``amend_order``, ``edit_order``, ``cancel_order``,
``cancel_all``, ``cancel_all_orders_after``, ``batch_add`` and ``batch_cancel``; trading methods
run the same code as their REST twins, so both see one account. Numbers are JSON numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tradebot.core.tasks import cancel_and_wait
from tradebot.simulator._catalog import PairInfo
from tradebot.simulator._market import OHLC_INTERVALS, CandleBar, MarketTrade, TickerStats
from tradebot.simulator._protocol import rfc3339
from tradebot.simulator._wsprivate import PrivateChannels, book_checksum

if TYPE_CHECKING:
    from tradebot.simulator._server import Simulator

__all__ = ["WebSocketHub"]

API_VERSION = "v2"
ENGINE_VERSION = "2.0.10"
OHLC_SNAPSHOT_BARS = 100
TRADE_SNAPSHOT = 50
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
_QUEUE_LIMIT = 5000


def _num(value: Any) -> float:
    return float(value)


def ticker_data(stats: TickerStats) -> dict[str, Any]:
    return {
        "symbol": stats.pair.wsname,
        "bid": _num(stats.bid),
        "bid_qty": _num(stats.bid_qty),
        "ask": _num(stats.ask),
        "ask_qty": _num(stats.ask_qty),
        "last": _num(stats.last),
        "volume": _num(stats.volume_24h),
        "vwap": _num(stats.vwap_24h),
        "low": _num(stats.low_24h),
        "high": _num(stats.high_24h),
        "change": _num(stats.change_24h),
        "change_pct": round(float(stats.change_pct_24h), 2),
        "timestamp": rfc3339(stats.time),
    }


def ohlc_data(pair: PairInfo, interval: int, bar: CandleBar, stamp: str) -> dict[str, Any]:
    return {
        "symbol": pair.wsname,
        "open": _num(bar.open),
        "high": _num(bar.high),
        "low": _num(bar.low),
        "close": _num(bar.close),
        "trades": bar.count,
        "volume": _num(bar.volume),
        "vwap": round(float(bar.vwap), pair.pair_decimals + 2),
        "interval_begin": rfc3339(datetime.fromtimestamp(bar.open_time, UTC)),
        "interval": interval,
        "timestamp": stamp,
    }


def trade_data(pair: PairInfo, trade: MarketTrade) -> dict[str, Any]:
    return {
        "symbol": pair.wsname,
        "side": trade.side,
        "price": _num(trade.price),
        "qty": _num(trade.qty),
        "ord_type": trade.ordertype,
        "trade_id": trade.trade_id,
        "timestamp": rfc3339(datetime.fromtimestamp(trade.time, UTC)),
    }


class _Client:
    """One connected socket: its subscriptions and an outbox drained by a writer task."""

    def __init__(self, ws: web.WebSocketResponse, connection_id: int) -> None:
        self.ws = ws
        self.id = connection_id
        self.tickers: set[str] = set()  # wsnames
        self.ohlc: set[tuple[str, int]] = set()  # (wsname, interval)
        self.books: dict[str, int] = {}  # wsname -> depth
        self.book_state: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self.trades: set[str] = set()
        self.instrument = False
        self.executions: dict[str, Any] | None = None  # subscription options
        self.balances = False
        self.sequence = 0
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=_QUEUE_LIMIT)

    def send(self, payload: dict[str, Any]) -> None:
        try:
            self.outbox.put_nowait(json.dumps(payload, separators=(",", ":")))
        except asyncio.QueueFull:
            # a client that cannot keep up is cut off, as the real exchange does
            asyncio.get_running_loop().create_task(self.ws.close(code=1008, message=b"slow consumer"))

    async def write_loop(self, heartbeat_s: float) -> None:
        while not self.ws.closed:
            try:
                async with asyncio.timeout(heartbeat_s):  # not wait_for: it can lose a cancellation
                    text = await self.outbox.get()
            except TimeoutError:
                text = '{"channel":"heartbeat"}'
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


class WebSocketHub:
    """Every WebSocket connection, and the fan-out of market ticks and status changes."""

    def __init__(self, sim: Simulator, *, heartbeat_s: float = 1.0) -> None:
        self._sim = sim
        self._heartbeat_s = heartbeat_s
        self._clients: set[_Client] = set()
        self._ids = itertools.count(1)
        self._trades_sent: dict[str, int] = {}  # pair key -> last public trade id broadcast
        self.private = PrivateChannels(sim, self)
        self.refuse_until = 0.0
        self.connections_total = 0

    def clients(self) -> list[_Client]:
        return list(self._clients)

    @property
    def connected(self) -> int:
        return len(self._clients)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._sim.clock.monotonic() < self.refuse_until:
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        client = _Client(ws, next(self._ids))
        self._clients.add(client)
        self.connections_total += 1
        writer = asyncio.create_task(client.write_loop(self._heartbeat_s))
        client.send(self._status_message(client))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_text(client, message.data)
                elif message.type == WSMsgType.BINARY:
                    client.send(self._error(None, None, "Malformed request"))
        finally:
            self._clients.discard(client)
            await cancel_and_wait(writer)
        return ws

    # --- requests -------------------------------------------------------------

    def _now(self) -> str:
        return rfc3339(self._sim.clock.now())

    def _error(self, method: str | None, req_id: Any, error: str, **extra: Any) -> dict[str, Any]:
        stamp = self._now()
        reply: dict[str, Any] = {"error": error, "success": False, "time_in": stamp, "time_out": stamp}
        if method is not None:
            reply["method"] = method
        if req_id is not None:
            reply["req_id"] = req_id
        reply.update(extra)
        return reply

    def _on_text(self, client: _Client, text: str) -> None:
        time_in = self._now()
        try:
            request = json.loads(text)
        except ValueError:
            client.send(self._error(None, None, "Malformed request"))
            return
        if not isinstance(request, dict):
            client.send(self._error(None, None, "Malformed request"))
            return
        method, req_id = request.get("method"), request.get("req_id")
        if method == "ping":
            reply = {"method": "pong", "time_in": time_in, "time_out": self._now()}
            if req_id is not None:
                reply["req_id"] = req_id
            client.send(reply)
            return
        if isinstance(method, str) and method in self.private.METHODS:
            params = request.get("params")
            if not isinstance(params, dict):
                client.send(self._error(method, req_id, "EGeneral:Invalid arguments"))
                return
            for reply in self.private.call(method, params, req_id, time_in):
                client.send(reply)
            return
        if method not in ("subscribe", "unsubscribe"):
            client.send(self._error(method if isinstance(method, str) else None, req_id, "Method not found"))
            return
        params = request.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            client.send(self._error(method, req_id, "Malformed request"))
            return
        channel = params["channel"]
        if channel in ("heartbeat", "status"):
            self._ack(client, method, req_id, time_in, {"channel": channel})
            return
        if channel in ("executions", "balances"):
            self.private.subscribe(client, method, params, req_id, time_in)
            return
        if channel == "instrument":
            self._instrument(client, method, params, req_id, time_in)
            return
        if channel not in ("ticker", "ohlc", "book", "trade"):
            client.send(self._error(method, req_id, f"Channel {channel} not supported"))
            return
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            client.send(self._error(method, req_id, "Malformed request"))
            return
        interval = params.get("interval", 1) if channel == "ohlc" else 0
        if channel == "ohlc" and interval not in OHLC_INTERVALS:
            client.send(self._error(method, req_id, "Subscription ohlc interval not supported"))
            return
        if channel == "book":
            interval = params.get("depth", 10)
            if interval not in BOOK_DEPTHS:
                client.send(self._error(method, req_id, "Subscription depth not supported"))
                return
        snapshot = params.get("snapshot", True) is not False
        for symbol in symbols:
            self._one_symbol(client, method, req_id, time_in, channel, symbol, interval, snapshot)

    def _one_symbol(
        self,
        client: _Client,
        method: str,
        req_id: Any,
        time_in: str,
        channel: str,
        symbol: str,
        interval: int,
        snapshot: bool,
    ) -> None:
        pair = self._sim.catalog.pair_by_wsname(symbol)
        if pair is None:
            client.send(self._error(method, req_id, f"Currency pair not supported {symbol}", symbol=symbol))
            return
        result: dict[str, Any] = {"channel": channel, "symbol": symbol}
        if channel == "ohlc":
            result["interval"] = interval
        elif channel == "book":
            result["depth"] = interval
        subs: set[Any] | dict[str, int]
        key: Any
        if channel == "ohlc":
            subs, key = client.ohlc, (symbol, interval)
        elif channel == "book":
            subs, key = client.books, symbol
        elif channel == "trade":
            subs, key = client.trades, symbol
        else:
            subs, key = client.tickers, symbol
        subscribed = key in subs
        if method == "unsubscribe":
            if not subscribed:
                client.send(self._error(method, req_id, "Subscription Not Found", symbol=symbol))
                return
            if isinstance(subs, dict):
                del subs[key]
                client.book_state.pop(symbol, None)
            else:
                subs.discard(key)
            self._ack(client, method, req_id, time_in, result)
            return
        if subscribed:
            client.send(self._error(method, req_id, "Already subscribed", symbol=symbol))
            return
        result["snapshot"] = snapshot
        self._ack(client, method, req_id, time_in, result)
        pm = self._sim.market[pair.key]
        if channel == "ohlc":
            client.ohlc.add((symbol, interval))
            if snapshot:
                stamp = self._now()
                bars = list(pm.candles[interval])[-OHLC_SNAPSHOT_BARS:]
                client.send(
                    {
                        "channel": "ohlc",
                        "type": "snapshot",
                        "timestamp": stamp,
                        "data": [ohlc_data(pair, interval, b, stamp) for b in bars],
                    }
                )
        elif channel == "book":
            client.books[symbol] = interval
            asks, bids = pm.depth(interval)
            client.book_state[symbol] = (dict(asks), dict(bids))
            # the book always starts with a snapshot: updates only make sense on top of one
            client.send(
                {
                    "channel": "book",
                    "type": "snapshot",
                    "data": [
                        {
                            "symbol": symbol,
                            "bids": [{"price": _num(p), "qty": _num(q)} for p, q in bids],
                            "asks": [{"price": _num(p), "qty": _num(q)} for p, q in asks],
                            "checksum": book_checksum(pair, asks, bids),
                            "timestamp": self._now(),
                        }
                    ],
                }
            )
        elif channel == "trade":
            client.trades.add(symbol)
            if snapshot:
                recent = list(pm.trades)[-TRADE_SNAPSHOT:]
                client.send(
                    {"channel": "trade", "type": "snapshot", "data": [trade_data(pair, t) for t in recent]}
                )
        else:
            client.tickers.add(symbol)
            if snapshot:
                stats = pm.stats(self._sim.clock.now())
                client.send({"channel": "ticker", "type": "snapshot", "data": [ticker_data(stats)]})

    def _instrument(
        self, client: _Client, method: str, params: dict[str, Any], req_id: Any, time_in: str
    ) -> None:
        if method == "unsubscribe":
            if not client.instrument:
                client.send(self._error(method, req_id, "Subscription Not Found"))
                return
            client.instrument = False
            self._ack(client, method, req_id, time_in, {"channel": "instrument"})
            return
        if client.instrument:
            client.send(self._error(method, req_id, "Already subscribed"))
            return
        snapshot = params.get("snapshot", True) is not False
        client.instrument = True
        self._ack(client, method, req_id, time_in, {"channel": "instrument", "snapshot": snapshot})
        if snapshot:
            client.send({"channel": "instrument", "type": "snapshot", "data": self.instrument_data()})

    def instrument_data(self) -> dict[str, Any]:
        catalog = self._sim.catalog
        return {
            "assets": [
                {
                    "id": a.code,
                    "status": "enabled",
                    "precision": a.decimals,
                    "precision_display": a.display_decimals,
                    "borrowable": False,
                    "collateral_value": 1.0 if a.code in ("USD", "EUR") else 0.0,
                    "margin_rate": 0.0,
                }
                for a in catalog.assets.values()
            ],
            "pairs": [
                {
                    "symbol": p.wsname,
                    "base": p.base.code,
                    "quote": p.quote.code,
                    "status": "online",
                    "qty_precision": p.lot_decimals,
                    "qty_increment": float(Decimal(1).scaleb(-p.lot_decimals)),
                    "price_precision": p.pair_decimals,
                    "cost_precision": p.quote.decimals + 1,
                    "marginable": False,
                    "has_index": True,
                    "cost_min": _num(p.costmin),
                    "tick_size": _num(p.tick_size),
                    "price_increment": _num(p.tick_size),
                    "qty_min": _num(p.ordermin),
                }
                for p in catalog.pairs.values()
            ],
        }

    def _ack(self, client: _Client, method: str, req_id: Any, time_in: str, result: dict[str, Any]) -> None:
        reply: dict[str, Any] = {
            "method": method,
            "result": result,
            "success": True,
            "time_in": time_in,
            "time_out": self._now(),
        }
        if req_id is not None:
            reply["req_id"] = req_id
        client.send(reply)

    # --- fan-out --------------------------------------------------------------

    def _status_message(self, client: _Client) -> dict[str, Any]:
        return {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "api_version": API_VERSION,
                    "connection_id": client.id,
                    "system": self._sim.status,
                    "version": ENGINE_VERSION,
                }
            ],
        }

    def broadcast_status(self) -> None:
        for client in list(self._clients):
            client.send(self._status_message(client))

    def broadcast_tick(self) -> None:
        """Send ticker, ohlc, book and trade updates for the tick just taken."""
        if not self._clients:
            self.mark_trades_sent()
            return
        now = self._sim.clock.now()
        stamp = rfc3339(now)
        tickers: dict[str, dict[str, Any]] = {}
        new_trades: dict[str, list[dict[str, Any]]] = {}
        for client in list(self._clients):
            for symbol in client.tickers:
                if symbol not in tickers:
                    pair = self._sim.catalog.pair_by_wsname(symbol)
                    assert pair is not None
                    tickers[symbol] = ticker_data(self._sim.market[pair.key].stats(now))
                client.send({"channel": "ticker", "type": "update", "data": [tickers[symbol]]})
            for symbol, depth in client.books.items():
                self._book_update(client, symbol, depth, stamp)
            for symbol in client.trades:
                pair = self._sim.catalog.pair_by_wsname(symbol)
                assert pair is not None
                fresh = new_trades.get(pair.key)
                if fresh is None:
                    last_id = self._trades_sent.get(pair.key, 0)
                    fresh = new_trades[pair.key] = [
                        trade_data(pair, t) for t in self._sim.market[pair.key].trades if t.trade_id > last_id
                    ]
                if fresh:
                    client.send({"channel": "trade", "type": "update", "data": fresh})
            for symbol, interval in client.ohlc:
                pair = self._sim.catalog.pair_by_wsname(symbol)
                assert pair is not None
                bar = self._sim.market[pair.key].candles[interval][-1]
                client.send(
                    {
                        "channel": "ohlc",
                        "type": "update",
                        "timestamp": stamp,
                        "data": [ohlc_data(pair, interval, bar, stamp)],
                    }
                )
        self.mark_trades_sent()

    def mark_trades_sent(self) -> None:
        for key, pm in self._sim.market.pairs.items():
            if pm.trades:
                self._trades_sent[key] = pm.trades[-1].trade_id

    def _book_update(self, client: _Client, symbol: str, depth: int, stamp: str) -> None:
        pair = self._sim.catalog.pair_by_wsname(symbol)
        assert pair is not None
        asks, bids = self._sim.market[pair.key].depth(depth)
        old_asks, old_bids = client.book_state.get(symbol, ({}, {}))
        new_asks, new_bids = dict(asks), dict(bids)

        def changes(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> list[dict[str, float]]:
            out = [{"price": _num(p), "qty": 0.0} for p in old if p not in new]
            out += [{"price": _num(p), "qty": _num(q)} for p, q in new.items() if old.get(p) != q]
            return out

        ask_changes, bid_changes = changes(old_asks, new_asks), changes(old_bids, new_bids)
        client.book_state[symbol] = (new_asks, new_bids)
        if not ask_changes and not bid_changes:
            return
        client.send(
            {
                "channel": "book",
                "type": "update",
                "data": [
                    {
                        "symbol": symbol,
                        "bids": bid_changes,
                        "asks": ask_changes,
                        "checksum": book_checksum(pair, asks, bids),
                        "timestamp": stamp,
                    }
                ],
            }
        )

    async def disconnect_all(self, refuse_s: float = 0.0) -> int:
        """Close every socket now; refuse new connections for ``refuse_s`` seconds."""
        self.refuse_until = max(self.refuse_until, self._sim.clock.monotonic() + refuse_s)
        clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(Exception):
                await client.ws.close(code=1001, message=b"server going away")
        return len(clients)
