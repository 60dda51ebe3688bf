"""A tiny scripted Kraken REST server on 127.0.0.1 for unit-level tests of the client.

Each method answers from a script of actions (first in, first out) and then from its
default handler. Actions: ``("json", obj)``, ``("status", code, body)``, ``("raw", bytes)``,
``("drop",)`` (close without answering), ``("hang", seconds)``, ``("execute_then_drop",)``
(run the default handler, then close without answering), ``("execute_then_hang", s)``.
Also a WebSocket v2 endpoint ``/v2`` sending ticker/ohlc updates, with switches to refuse,
go silent or close every socket.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tradebot.exchanges.kraken.auth import verify

API_KEY = "test-key-0123"
API_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="

TICKER = {
    "XXBTZUSD": {
        "a": ["30300.10000", "1", "1.000"],
        "b": ["30300.00000", "1", "1.000"],
        "c": ["30303.20000", "0.00067643"],
        "v": ["4083.67", "4412.73"],
        "p": ["30706.77", "30689.13"],
        "t": [34619, 38907],
        "l": ["29868.3", "29868.3"],
        "h": ["31631.0", "31631.0"],
        "o": "30502.80000",
    }
}


class FakeKraken:
    """Scripted REST server; inspect ``requests``, ``nonces`` and ``orders``."""

    def __init__(self) -> None:
        self.script: dict[str, deque[tuple[Any, ...]]] = defaultdict(deque)
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.nonces: list[int] = []
        self.bad_signatures = 0
        self.orders: dict[str, dict[str, Any]] = {}  # txid -> order
        self.add_order_calls: dict[str, int] = defaultdict(int)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.ws_url = ""
        # WebSocket v2
        self.ws_refuse = False  # answer upgrades with HTTP 503
        self.ws_silent = False  # send nothing at all (not even heartbeats)
        self.ws_interval = 0.02  # seconds between ticker updates
        self.ws_connections = 0
        self.ws_subscriptions: list[dict[str, Any]] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._ws_tasks: set[asyncio.Task[None]] = set()

    def then(self, method: str, *actions: tuple[Any, ...]) -> None:
        self.script[method].extend(actions)

    async def __aenter__(self) -> FakeKraken:
        app = web.Application()
        app.router.add_route("*", "/0/{scope}/{method}", self._handle)
        app.router.add_get("/v2", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v2"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self.close_sockets()
        await self._runner.cleanup()

    async def close_sockets(self) -> None:
        """Close every WebSocket from the server side."""
        for ws in list(self._sockets):
            await ws.close()

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.ws_refuse:
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connections += 1
        self._sockets.add(ws)
        symbols: list[str] = []
        ohlc: list[tuple[str, int]] = []

        async def feed() -> None:
            price = 30000
            while not ws.closed:
                await asyncio.sleep(self.ws_interval)
                if self.ws_silent:
                    continue
                price += 1
                if not symbols:
                    await ws.send_json({"channel": "heartbeat"})
                    continue
                data = [
                    {
                        "symbol": s,
                        "bid": price - 0.5,
                        "bid_qty": 1.5,
                        "ask": price + 0.5,
                        "ask_qty": 2.0,
                        "last": price,
                        "volume": 123.4,
                        "vwap": price,
                        "low": 29000,
                        "high": 31000,
                        "change": 1.0,
                        "change_pct": 0.01,
                    }
                    for s in symbols
                ]
                await ws.send_json({"channel": "ticker", "type": "update", "data": data})
                for sym, interval in ohlc:
                    await ws.send_json(
                        {
                            "channel": "ohlc",
                            "type": "update",
                            "data": [
                                {
                                    "symbol": sym,
                                    "open": price - 2,
                                    "high": price + 1,
                                    "low": price - 3,
                                    "close": price,
                                    "vwap": price,
                                    "trades": 5,
                                    "volume": 1.25,
                                    "interval_begin": "2023-10-04T16:24:00.000000Z",
                                    "interval": interval,
                                    "timestamp": "2023-10-04T16:24:30.000000Z",
                                }
                            ],
                        }
                    )

        task = asyncio.create_task(feed())
        self._ws_tasks.add(task)
        try:
            await ws.send_json(
                {"channel": "status", "type": "update", "data": [{"system": "online", "api_version": "v2"}]}
            )
            async for msg in ws:
                req = msg.json()
                self.ws_subscriptions.append(req)
                params = req["params"]
                if params["channel"] == "ticker":
                    symbols.extend(s for s in params["symbol"] if s not in symbols)
                elif params["channel"] == "ohlc":
                    ohlc.extend((s, params["interval"]) for s in params["symbol"])
                await ws.send_json(
                    {
                        "method": "subscribe",
                        "success": True,
                        "req_id": req.get("req_id"),
                        "result": {"channel": params["channel"]},
                    }
                )
        finally:
            task.cancel()
            self._ws_tasks.discard(task)
            self._sockets.discard(ws)
        return ws

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        raw = await request.read()
        params = dict(request.query)
        params.update(parse_qsl(raw.decode()))
        self.requests.append((method, dict(request.headers), params))
        if request.match_info["scope"] == "private":
            nonce = params.get("nonce", "")
            if not verify(request.path, nonce, raw.decode(), API_SECRET, request.headers.get("API-Sign", "")):
                self.bad_signatures += 1
                return web.json_response({"error": ["EAPI:Invalid signature"]})
            self.nonces.append(int(nonce))
        if method == "AddOrder":
            self.add_order_calls[params.get("cl_ord_id", "")] += 1
        if self.script[method]:
            action = self.script[method].popleft()
            kind = action[0]
            if kind == "json":
                return web.json_response(action[1])
            if kind == "status":
                return web.Response(status=action[1], body=action[2], content_type="text/html")
            if kind == "raw":
                return web.Response(status=200, body=action[1], content_type="application/json")
            if kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=499)
            if kind == "hang":
                await asyncio.sleep(action[1])
                return web.json_response({"error": [], "result": {}})
            if kind == "execute_then_hang":
                self._default(method, params)
                await asyncio.sleep(action[1])
                return web.json_response({"error": [], "result": {}})
            if kind == "execute_then_drop":
                self._default(method, params)
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=499)
            raise AssertionError(f"unknown action {kind}")
        return web.json_response(self._default(method, params))

    def _default(self, method: str, params: dict[str, str]) -> dict[str, Any]:
        if method == "Time":
            return {
                "error": [],
                "result": {"unixtime": 1688669448, "rfc1123": "Thu, 06 Jul 23 18:50:48 +0000"},
            }
        if method == "SystemStatus":
            return {"error": [], "result": {"status": "online", "timestamp": "2023-07-06T18:52:00Z"}}
        if method == "Ticker":
            return {"error": [], "result": TICKER}
        if method == "OHLC":
            rows = [
                [1688671200 + 60 * i, "30306.1", "30306.2", "30305.7", "30305.7", "30306.1", "3.39", 23]
                for i in range(3)
            ]
            return {"error": [], "result": {"XXBTZUSD": rows, "last": 1688671320}}
        if method == "Balance":
            return {"error": [], "result": {"ZUSD": "171288.6158", "XXBT": "1011.1908877900"}}
        if method == "AddOrder":
            cl = params.get("cl_ord_id")
            if cl and any(o["cl_ord_id"] == cl and o["status"] == "open" for o in self.orders.values()):
                return {"error": ["EOrder:Duplicate order"]}
            txid = f"O{next(self._ids):05d}-AAAAA-BBBBBB"
            self.orders[txid] = {
                "cl_ord_id": cl,
                "status": "open",
                "opentm": 1688666559.8974,
                "vol": params["volume"],
                "vol_exec": "0",
                "fee": "0",
                "price": "0",
                "descr": {
                    "pair": params["pair"],
                    "type": params["type"],
                    "ordertype": params["ordertype"],
                    "price": params.get("price", "0"),
                },
            }
            return {"error": [], "result": {"descr": {"order": "..."}, "txid": [txid]}}
        if method in ("OpenOrders", "ClosedOrders"):
            want = "open" if method == "OpenOrders" else "closed"
            cl = params.get("cl_ord_id")
            found = {
                t: o
                for t, o in self.orders.items()
                if (o["status"] == "open") == (want == "open") and (cl is None or o["cl_ord_id"] == cl)
            }
            return {"error": [], "result": {want: found}}
        if method == "CancelOrder":
            cl = params.get("cl_ord_id")
            hits = [o for o in self.orders.values() if o["cl_ord_id"] == cl and o["status"] == "open"]
            if not hits:
                return {"error": ["EOrder:Unknown order"]}
            for o in hits:
                o["status"] = "canceled"
            return {"error": [], "result": {"count": len(hits)}}
        return {"error": ["EGeneral:Unknown method"]}

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.requests if m == method)
