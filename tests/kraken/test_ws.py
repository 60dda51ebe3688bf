"""WebSocket v2 market data: parse, heartbeat staleness, reconnect + resubscribe, REST fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tradebot.core.errors import UnknownPair
from tradebot.core.models import Candle, Ticker
from tradebot.exchanges.kraken.exchange import KrakenExchange

from .conftest import make_exchange
from .fake_kraken import FakeKraken

MarketEvent = Ticker | Candle


def ws_exchange(server: FakeKraken, tmp_path: Path) -> KrakenExchange:
    return make_exchange(
        server.base_url,
        tmp_path,
        ws_url=server.ws_url,
        ws_heartbeat_timeout_s=0.3,
        ws_reconnect_initial_s=0.05,
        ws_reconnect_max_s=0.2,
        rest_fallback_after_s=0.2,
        rest_fallback_poll_s=0.05,
    )


async def collect_until(
    stream: AsyncIterator[MarketEvent], done: Callable[[list[MarketEvent]], bool], timeout: float = 5.0
) -> list[MarketEvent]:
    events: list[MarketEvent] = []

    async def run() -> None:
        async for event in stream:
            events.append(event)
            if done(events):
                return

    await asyncio.wait_for(run(), timeout)
    return events


async def test_tickers_and_candles_from_the_socket(server: FakeKraken, tmp_path: Path) -> None:
    ex = ws_exchange(server, tmp_path)
    stream = ex.market_data(["BTC/USD", "ETH/USD"], ohlc_interval=1)
    try:
        events = await collect_until(
            stream,
            lambda ev: (
                sum(isinstance(e, Candle) for e in ev) >= 2 and sum(isinstance(e, Ticker) for e in ev) >= 4
            ),
        )
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await ex.close()
    tickers = [e for e in events if isinstance(e, Ticker)]
    candles = [e for e in events if isinstance(e, Candle)]
    assert {t.pair for t in tickers} == {"BTC/USD", "ETH/USD"}
    assert all(t.bid < t.ask for t in tickers)
    assert candles[0].interval_min == 1 and candles[0].high >= candles[0].close
    channels = sorted(s["params"]["channel"] for s in server.ws_subscriptions)
    assert channels == ["ohlc", "ticker"]
    assert server.ws_subscriptions[0]["params"]["symbol"] == ["BTC/USD", "ETH/USD"]
    stats = ex.market_data_stats
    assert stats is not None and stats.connects == 1 and not stats.using_fallback


async def test_reconnects_and_resubscribes_after_server_close(server: FakeKraken, tmp_path: Path) -> None:
    ex = ws_exchange(server, tmp_path)
    stream = ex.market_data(["BTC/USD"])
    try:
        await collect_until(stream, lambda ev: len(ev) >= 3)
        await server.close_sockets()
        await collect_until(stream, lambda ev: server.ws_connections >= 2 and len(ev) >= 3)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await ex.close()
    stats = ex.market_data_stats
    assert stats is not None and stats.reconnects >= 1 and stats.connects >= 2
    assert [s["params"]["channel"] for s in server.ws_subscriptions].count("ticker") >= 2


async def test_silent_socket_is_detected_as_stale_and_replaced(server: FakeKraken, tmp_path: Path) -> None:
    ex = ws_exchange(server, tmp_path)
    stream = ex.market_data(["BTC/USD"])
    try:
        await collect_until(stream, lambda ev: len(ev) >= 2)
        server.ws_silent = True
        await asyncio.sleep(0.5)  # > heartbeat timeout 0.3 s
        server.ws_silent = False
        await collect_until(stream, lambda ev: server.ws_connections >= 2 and len(ev) >= 2)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await ex.close()
    stats = ex.market_data_stats
    assert stats is not None and stats.stale_sockets >= 1


async def test_rest_fallback_while_the_socket_is_down(server: FakeKraken, tmp_path: Path) -> None:
    server.ws_refuse = True
    ex = ws_exchange(server, tmp_path)
    stream = ex.market_data(["BTC/USD"], ohlc_interval=1)
    try:
        events = await collect_until(stream, lambda ev: sum(isinstance(e, Ticker) for e in ev) >= 3)
        stats = ex.market_data_stats
        assert stats is not None and stats.using_fallback and not stats.connected
        assert server.count("Ticker") >= 3 and server.count("OHLC") >= 1
        assert any(isinstance(e, Candle) for e in events)
        server.ws_refuse = False  # the socket comes back: polling stops
        await collect_until(stream, lambda ev: server.ws_connections >= 1 and len(ev) >= 3)
        await asyncio.sleep(0.1)
        polls = server.count("Ticker")
        await collect_until(stream, lambda ev: len(ev) >= 5)
        assert stats.connected and not stats.using_fallback
        assert server.count("Ticker") == polls
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await ex.close()


async def test_unknown_pair_is_refused_before_any_io(server: FakeKraken, tmp_path: Path) -> None:
    ex = ws_exchange(server, tmp_path)
    with pytest.raises(UnknownPair):
        ex.market_data(["NOPE/USD"])
    await ex.close()
    assert server.ws_connections == 0


async def test_close_ends_the_stream(server: FakeKraken, tmp_path: Path) -> None:
    ex = ws_exchange(server, tmp_path)
    stream = ex.market_data(["BTC/USD"])
    await collect_until(stream, lambda ev: len(ev) >= 1)
    await ex.close()
    rest = [e async for e in stream]  # ends instead of reconnecting forever
    assert len(rest) <= 1000
    assert ex.market_data_stats is not None and not ex.market_data_stats.connected
