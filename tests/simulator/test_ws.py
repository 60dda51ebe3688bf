"""WebSocket v2: status on connect, subscribe acks, ticker/ohlc, heartbeat, ping, forced disconnects."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from tradebot.simulator import Simulator

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: dict[str, Any] = message.json()
    return data


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Any, limit: int = 50
) -> dict[str, Any]:
    for _ in range(limit):
        data = await receive(ws)
        if predicate(data):
            return data
    raise AssertionError("expected message never came")


async def connect(session: aiohttp.ClientSession, sim: Simulator) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(sim.ws_url)
    status = await receive(ws)
    assert status["channel"] == "status" and status["type"] == "update"
    assert status["data"][0]["system"] == "online" and status["data"][0]["api_version"] == "v2"
    return ws


async def test_ticker_subscribe_ack_snapshot_updates(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    await ws.send_json(
        {
            "method": "subscribe",
            "params": {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"]},
            "req_id": 7,
        }
    )
    acks = []
    snapshots = []
    while len(acks) < 2 or len(snapshots) < 2:
        data = await receive(ws)
        if data.get("method") == "subscribe":
            acks.append(data)
        elif data.get("channel") == "ticker":
            snapshots.append(data)
    for ack in acks:
        assert ack["success"] is True and ack["req_id"] == 7
        assert ack["result"]["channel"] == "ticker" and ack["result"]["symbol"] in ("BTC/USD", "ETH/USD")
        assert RFC3339.match(ack["time_in"]) and RFC3339.match(ack["time_out"])
    assert {s["type"] for s in snapshots} == {"snapshot"}
    tick = snapshots[0]["data"][0]
    for key in (
        "bid",
        "bid_qty",
        "ask",
        "ask_qty",
        "last",
        "volume",
        "vwap",
        "low",
        "high",
        "change",
        "change_pct",
    ):
        assert isinstance(tick[key], (int, float)), key
    assert tick["bid"] < tick["ask"] and RFC3339.match(tick["timestamp"])
    sim.step()
    update = await receive_until(ws, lambda d: d.get("channel") == "ticker")
    assert update["type"] == "update" and update["data"][0]["symbol"] in ("BTC/USD", "ETH/USD")
    await ws.close()


async def test_ohlc_subscription(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    await ws.send_json(
        {
            "method": "subscribe",
            "params": {"channel": "ohlc", "symbol": ["BTC/USD"], "interval": 5},
            "req_id": 1,
        }
    )
    ack = await receive(ws)
    assert ack["success"] and ack["result"] == {
        "channel": "ohlc",
        "symbol": "BTC/USD",
        "interval": 5,
        "snapshot": True,
    }
    snapshot = await receive(ws)
    assert snapshot["channel"] == "ohlc" and snapshot["type"] == "snapshot" and len(snapshot["data"]) > 1
    bar = snapshot["data"][-1]
    assert bar["interval"] == 5 and RFC3339.match(bar["interval_begin"])
    sim.step()
    update = await receive_until(ws, lambda d: d.get("channel") == "ohlc")
    assert update["type"] == "update" and update["data"][0]["symbol"] == "BTC/USD"
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "ohlc", "symbol": ["BTC/USD"], "interval": 7}}
    )
    error = await receive_until(ws, lambda d: d.get("method") == "subscribe")
    assert error["success"] is False and "interval" in error["error"]
    await ws.close()


async def test_errors_unsubscribe_and_ping(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["XBT/XYZ"]}, "req_id": 2}
    )
    error = await receive(ws)
    assert error["success"] is False and error["req_id"] == 2 and "XBT/XYZ" in error["error"]
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "trades-of-the-moon", "symbol": ["BTC/USD"]}}
    )
    assert (await receive(ws))["success"] is False
    await ws.send_str("{not json")
    assert (await receive(ws))["success"] is False
    await ws.send_json({"method": "ping", "req_id": 3})
    pong = await receive(ws)
    assert pong["method"] == "pong" and pong["req_id"] == 3
    await ws.send_json(
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"], "snapshot": False}}
    )
    assert (await receive(ws))["success"] is True
    await ws.send_json(
        {"method": "unsubscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}, "req_id": 4}
    )
    unsub = await receive(ws)
    assert unsub["method"] == "unsubscribe" and unsub["success"] is True and unsub["req_id"] == 4
    sim.step(3)
    # nothing but heartbeats after unsubscribing
    assert (await receive(ws))["channel"] == "heartbeat"
    await ws.close()


async def test_heartbeat_when_idle(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    beats = [await receive(ws, timeout=1.0) for _ in range(2)]
    assert beats == [{"channel": "heartbeat"}] * 2
    await ws.close()


async def test_status_change_is_announced(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    sim.faults.add("status=maintenance")
    status = await receive_until(ws, lambda d: d.get("channel") == "status")
    assert status["data"][0]["system"] == "maintenance"
    await ws.close()


async def test_stale_feed_sends_only_heartbeats(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    await ws.send_json({"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}})
    await receive(ws)  # ack
    await receive(ws)  # snapshot
    sim.faults.add("stale")
    sim.step(3)
    assert (await receive(ws))["channel"] == "heartbeat"
    await ws.close()


async def test_forced_disconnect_and_refusal(session: aiohttp.ClientSession, sim: Simulator) -> None:
    ws = await connect(session, sim)
    sim.faults.add("ws_disconnect=0.4")
    message = await ws.receive(timeout=2)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(sim.ws_url)
    assert refused.value.status == 503
    await asyncio.sleep(0.5)
    again = await connect(session, sim)
    await again.close()
    assert sim.faults.describe() == []
