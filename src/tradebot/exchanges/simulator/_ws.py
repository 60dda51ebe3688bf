"""Kraken WebSocket v2 at ``/v2``: status, heartbeat, ticker and ohlc channels."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tradebot.exchanges.simulator._catalog import PairInfo
from tradebot.exchanges.simulator._market import OHLC_INTERVALS, CandleBar, TickerStats
from tradebot.exchanges.simulator._protocol import rfc3339

if TYPE_CHECKING:
    from tradebot.exchanges.simulator._server import Simulator

__all__ = ["WebSocketHub"]

API_VERSION = "v2"
ENGINE_VERSION = "2.0.10"
OHLC_SNAPSHOT_BARS = 100
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


class _Client:
    """One connected socket: its subscriptions and an outbox drained by a writer task."""

    def __init__(self, ws: web.WebSocketResponse, connection_id: int) -> None:
        self.ws = ws
        self.id = connection_id
        self.tickers: set[str] = set()  # wsnames
        self.ohlc: set[tuple[str, int]] = set()  # (wsname, interval)
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
                text = await asyncio.wait_for(self.outbox.get(), timeout=heartbeat_s)
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
        self.refuse_until = 0.0
        self.connections_total = 0

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
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
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
        if channel not in ("ticker", "ohlc"):
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
            key = (symbol, interval)
            subscribed = key in client.ohlc
        else:
            subscribed = symbol in client.tickers
        if method == "unsubscribe":
            if not subscribed:
                client.send(self._error(method, req_id, "Subscription Not Found", symbol=symbol))
                return
            if channel == "ohlc":
                client.ohlc.discard((symbol, interval))
            else:
                client.tickers.discard(symbol)
            self._ack(client, method, req_id, time_in, result)
            return
        if subscribed:
            client.send(self._error(method, req_id, "Already subscribed", symbol=symbol))
            return
        result["snapshot"] = snapshot
        self._ack(client, method, req_id, time_in, result)
        if channel == "ohlc":
            client.ohlc.add((symbol, interval))
            if snapshot:
                stamp = self._now()
                bars = list(self._sim.market[pair.key].candles[interval])[-OHLC_SNAPSHOT_BARS:]
                client.send(
                    {
                        "channel": "ohlc",
                        "type": "snapshot",
                        "timestamp": stamp,
                        "data": [ohlc_data(pair, interval, b, stamp) for b in bars],
                    }
                )
        else:
            client.tickers.add(symbol)
            if snapshot:
                stats = self._sim.market[pair.key].stats(self._sim.clock.now())
                client.send({"channel": "ticker", "type": "snapshot", "data": [ticker_data(stats)]})

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
        """Send ticker and ohlc updates for the tick just taken."""
        if not self._clients:
            return
        now = self._sim.clock.now()
        stamp = rfc3339(now)
        tickers: dict[str, dict[str, Any]] = {}
        for client in list(self._clients):
            for symbol in client.tickers:
                if symbol not in tickers:
                    pair = self._sim.catalog.pair_by_wsname(symbol)
                    assert pair is not None
                    tickers[symbol] = ticker_data(self._sim.market[pair.key].stats(now))
                client.send({"channel": "ticker", "type": "update", "data": [tickers[symbol]]})
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

    async def disconnect_all(self, refuse_s: float = 0.0) -> int:
        """Close every socket now; refuse new connections for ``refuse_s`` seconds."""
        self.refuse_until = max(self.refuse_until, self._sim.clock.monotonic() + refuse_s)
        clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(Exception):
                await client.ws.close(code=1001, message=b"server going away")
        return len(clients)
