"""Public REST endpoints answer with Kraken's shapes, codes and errors."""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.core.clock import FakeClock
from tradebot.simulator import Simulator, SimulatorConfig
from tradebot.simulator._protocol import KrakenRejection
from tradebot.simulator._rest import _ticker_row, kraken_body, public_ticker

from .conftest import KrakenTestClient


async def test_time_and_system_status(kraken: KrakenTestClient) -> None:
    time_ = await kraken.public("Time")
    assert time_["error"] == []
    assert isinstance(time_["result"]["unixtime"], int)
    assert time_["result"]["rfc1123"].endswith("+0000")
    status = await kraken.public("SystemStatus")
    assert status["result"]["status"] == "online"
    assert status["result"]["timestamp"].endswith("Z")


async def test_assets_use_legacy_codes(kraken: KrakenTestClient) -> None:
    result = (await kraken.public("Assets"))["result"]
    assert {"XXBT", "ZUSD", "XETH"} <= set(result)
    assert result["XXBT"]["altname"] == "XBT"
    assert (await kraken.public("Assets", asset="NOPE"))["error"] == ["EQuery:Unknown asset"]


async def test_asset_pairs_accept_every_spelling(kraken: KrakenTestClient) -> None:
    for name in ("XXBTZUSD", "XBTUSD"):
        result = (await kraken.public("AssetPairs", pair=name))["result"]
        assert list(result) == ["XXBTZUSD"]
    # asked for by its WebSocket name, the pair comes back under that name (as clients expect)
    assert list((await kraken.public("AssetPairs", pair="BTC/USD"))["result"]) == ["BTC/USD"]
    info = result["XXBTZUSD"]
    assert info["altname"] == "XBTUSD" and info["wsname"] == "BTC/USD"
    assert info["base"] == "XXBT" and info["quote"] == "ZUSD"
    assert isinstance(info["pair_decimals"], int) and isinstance(info["lot_decimals"], int)
    for key in ("ordermin", "costmin", "tick_size"):
        assert isinstance(info[key], str) and Decimal(info[key]) > 0
    assert info["status"] == "online"
    everything = (await kraken.public("AssetPairs"))["result"]
    assert {"XXBTZUSD", "XETHZUSD"} <= set(everything)


async def test_ticker_shape(kraken: KrakenTestClient) -> None:
    result = (await kraken.public("Ticker", pair="XBTUSD,ETH/USD"))["result"]
    assert set(result) == {"XXBTZUSD", "XETHZUSD"}
    ticker = result["XXBTZUSD"]
    assert len(ticker["a"]) == 3 and len(ticker["b"]) == 3 and len(ticker["c"]) == 2
    for key in ("v", "p", "l", "h"):
        assert len(ticker[key]) == 2 and all(isinstance(x, str) for x in ticker[key])
    assert all(isinstance(x, int) for x in ticker["t"])
    assert Decimal(ticker["b"][0]) < Decimal(ticker["a"][0])
    assert isinstance(ticker["o"], str)


async def test_unknown_pair(kraken: KrakenTestClient) -> None:
    assert (await kraken.public("Ticker", pair="FOOBAR"))["error"] == ["EQuery:Unknown asset pair"]
    assert (await kraken.public("OHLC", pair="FOOBAR"))["error"] == ["EQuery:Unknown asset pair"]


async def test_ohlc(kraken: KrakenTestClient, sim: Simulator) -> None:
    for interval in (1, 5, 15, 30, 60, 240, 1440, 10080, 21600):
        result = (await kraken.public("OHLC", pair="XBTUSD", interval=interval))["result"]
        rows = result["XXBTZUSD"]
        assert 0 < len(rows) <= 720
        assert isinstance(result["last"], int)
        time_, open_, high, low, close, _vwap, _volume, count = rows[-1]
        assert isinstance(time_, int) and isinstance(count, int)
        assert Decimal(low) <= Decimal(open_) <= Decimal(high)
        assert Decimal(low) <= Decimal(close) <= Decimal(high)
        assert all(r[0] % (interval * 60) == 0 for r in rows)
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    last = (await kraken.public("OHLC", pair="XBTUSD"))["result"]["last"]
    since = (await kraken.public("OHLC", pair="XBTUSD", since=last))["result"]
    assert len(since["XXBTZUSD"]) <= 2
    assert (await kraken.public("OHLC", pair="XBTUSD", interval=7))["error"] == ["EGeneral:Invalid arguments"]
    assert (await kraken.public("OHLC", pair="XBTUSD", interval="x"))["error"] == [
        "EGeneral:Invalid arguments"
    ]


async def test_depth(kraken: KrakenTestClient) -> None:
    book = (await kraken.public("Depth", pair="XBTUSD", count=5))["result"]["XXBTZUSD"]
    assert len(book["asks"]) == 5 and len(book["bids"]) == 5
    asks = [Decimal(a[0]) for a in book["asks"]]
    bids = [Decimal(b[0]) for b in book["bids"]]
    assert asks == sorted(asks) and bids == sorted(bids, reverse=True) and bids[0] < asks[0]


async def test_unknown_method_and_post_for_public(
    kraken: KrakenTestClient, session: aiohttp.ClientSession, sim: Simulator
) -> None:
    assert (await kraken.public("Nope"))["error"] == ["EGeneral:Unknown method"]
    async with session.post(
        f"{sim.base_url}/0/public/Ticker",
        data="pair=XBTUSD",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert list((await resp.json())["result"]) == ["XXBTZUSD"]
    async with session.get(f"{sim.base_url}/0/private/Balance") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"] == ["EGeneral:Invalid arguments"]
    # a method asked for under the other scope is unknown there, as on Kraken
    for path in ("/0/private/Ticker", "/0/public/Balance"):
        async with session.post(sim.base_url + path) as resp:
            assert resp.status == 404, path
            assert (await resp.json())["error"] == ["EGeneral:Unknown method"], path
    # a known method spelled with an escape is still that method
    async with session.get(f"{sim.base_url}/0/public/%54icker?pair=XBTUSD") as resp:
        assert list((await resp.json())["result"]) == ["XXBTZUSD"]
    # every request is counted under the method it named, known, unknown or under the wrong scope
    assert sim.stats.requests["Nope"] == 1
    assert sim.stats.requests["Ticker"] == 3
    assert sim.stats.requests["Balance"] == 2


async def test_ticker_answers_a_pair_asked_twice_once(kraken: KrakenTestClient) -> None:
    result = (await kraken.public("Ticker", pair="XBTUSD,XXBTZUSD,BTC/USD"))["result"]
    assert list(result) == ["XXBTZUSD"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(["step", "tick-second", "half-second", "day", "ask"]), min_size=1, max_size=25)
)
def test_cached_ticker_answer_is_always_the_one_computed_afresh(ops: list[str]) -> None:
    """Rendered rows are reused between market moves; they must never show stale figures."""
    clock = FakeClock()
    sim = Simulator(SimulatorConfig(tick_interval_s=0), clock=clock)
    pairs = ["XXBTZUSD", "XETHZUSD"]

    def fresh() -> dict[str, object]:
        now = clock.now()
        ts = int(now.timestamp())
        out = {}
        for key in pairs:
            market = sim.market[key]
            stats = market._compute_stats(now, ts, market.candles[15])
            out[key] = _ticker_row(stats, market.pair.pair_decimals)
        return json.loads(json.dumps(out))

    for op in [*ops, "ask"]:
        if op == "step":
            sim.step()
        elif op == "tick-second":
            clock._t += 1.0
        elif op == "half-second":
            clock._t += 0.5
        elif op == "day":
            clock._t += 86_400.0
        answer = json.loads(kraken_body([], public_ticker(sim, {"pair": "XBTUSD,ETHUSD"})))
        assert answer == {"error": [], "result": fresh()}


def test_ticker_answers_kept_are_bounded_and_unknown_pairs_never_kept() -> None:
    sim = Simulator(SimulatorConfig(tick_interval_s=0), clock=FakeClock())
    for i in range(200):  # as many pair texts as a careless caller could send
        public_ticker(sim, {"pair": " " * i + "XBTUSD,ETH/USD"})
        assert len(sim.ticker_answers) <= 64
    assert all(len(text) <= 256 for text in sim.ticker_answers)  # a long text is answered, never kept
    kept = next(iter(sim.ticker_answers))
    sim.step()
    assert json.loads(kraken_body([], public_ticker(sim, {"pair": kept}))) == json.loads(
        kraken_body([], public_ticker(sim, {"pair": kept + " "}))  # full: answered afresh, not kept
    )
    assert kept + " " not in sim.ticker_answers
    assert sim.ticker_answers[kept][1][1] == [m.ticks for m in sim.ticker_answers[kept][0]]  # refreshed
    roomy = Simulator(SimulatorConfig(tick_interval_s=0), clock=FakeClock())
    public_ticker(roomy, {"pair": " " * 300 + "XBTUSD"})
    assert not roomy.ticker_answers  # room left, but a text this long is never kept
    with pytest.raises(KrakenRejection) as rejected:
        public_ticker(sim, {"pair": "NOPE"})
    assert rejected.value.error == "EQuery:Unknown asset pair"
    assert "NOPE" not in sim.ticker_answers
