"""The REST client's fast paths keep every safety property of the slow ones.

Limiter fast path: still rate-limited and spaced. Cached public URLs: never confused
between parameter values. The shared JSON decoder: decodes exactly as ``json.loads``.
Responses read without aiohttp's context manager: connections always go back to the pool.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebot.core.errors import BadDataError, CircuitOpen, ExchangeUnavailable, RequestTimeout, TradebotError
from tradebot.exchanges.kraken import client as client_module
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.exchanges.kraken.pairs import PairInfo, PairRegistry
from tradebot.exchanges.kraken.parse import parse_ticker
from tradebot.resilience.ratelimit import RateTier, RequestRateLimiter

from .conftest import make_exchange
from .fake_kraken import API_KEY, API_SECRET, TICKER, FakeKraken


async def test_public_calls_still_keep_the_minimum_spacing(server: FakeKraken, tmp_path: Path) -> None:
    limiter = RequestRateLimiter.build(None, min_spacing_s=0.05)
    ex = KrakenExchange(KrakenConfig(base_url=server.base_url), rate_limiter=limiter)
    try:
        start = time.monotonic()
        for _ in range(5):
            await ex.ticker(["BTC/USD"])
        elapsed = time.monotonic() - start
    finally:
        await ex.close()
    assert elapsed >= 4 * 0.05 - 0.005  # 5 call starts, at least 4 gaps


async def test_private_calls_still_add_their_cost_to_the_counter(server: FakeKraken, tmp_path: Path) -> None:
    limiter = RequestRateLimiter.build(RateTier("slow", 4, 0.001), min_spacing_s=0.0, margin=0.0)
    ex = KrakenExchange(
        KrakenConfig(base_url=server.base_url),
        api_key=API_KEY,
        api_secret=API_SECRET,
        state_dir=tmp_path,
        rate_limiter=limiter,
    )
    try:
        for _ in range(4):
            await ex.rest.private("Balance")
        assert limiter.counter is not None and limiter.counter.level == pytest.approx(4, abs=0.01)
        # the counter is full: the fifth call has to wait in line (the fast path must not let it through)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ex.rest.private("Balance"), 0.2)
    finally:
        await ex.close()
    assert server.count("Balance") == 4


async def test_open_breaker_fails_fast_before_the_limiter_and_any_request(
    server: FakeKraken, tmp_path: Path
) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    breaker = ex.breakers["public"]
    while breaker.state.value != "open":
        breaker.record(breaker.acquire(), RequestTimeout("test"))
    try:
        with pytest.raises(CircuitOpen):
            await ex.ticker(["BTC/USD"])
    finally:
        await ex.close()
    assert server.count("Ticker") == 0
    assert ex.rest.requests_sent == 0


def test_public_urls_are_cached_only_where_values_cannot_be_confused() -> None:
    rest = KrakenExchange(KrakenConfig(base_url="http://127.0.0.1:1")).rest
    route = rest._route(False, "OHLC")
    first = rest._public_url(route, {"pair": "XBTUSD", "interval": "1"})
    assert rest._public_url(route, {"pair": "XBTUSD", "interval": "1"}) is first  # strings: cached
    assert str(first) == "http://127.0.0.1:1/0/public/OHLC?pair=XBTUSD&interval=1"
    # 1, 1.0 and True are one dict key, yet encode differently: never served from the cache
    assert str(rest._public_url(route, {"interval": 1})).endswith("?interval=1")
    assert str(rest._public_url(route, {"interval": True})).endswith("?interval=True")
    assert str(rest._public_url(route, {"interval": 1.0})).endswith("?interval=1.0")
    assert str(rest._public_url(route, {True: "x"})).endswith("?True=x")
    # values are quoted, and another method never gets this method's URL
    assert str(rest._public_url(route, {"pair": "A B&C"})).endswith("?pair=A+B%26C")
    ticker_url = rest._public_url(rest._route(False, "Ticker"), {"pair": "XBTUSD", "interval": "1"})
    assert "/Ticker?" in str(ticker_url)
    assert str(rest._public_url(route, {})) == "http://127.0.0.1:1/0/public/OHLC"
    for i in range(3 * client_module._PUBLIC_URL_CACHE_SIZE):
        rest._public_url(route, {"pair": f"P{i}"})
    assert len(rest._public_urls) <= client_module._PUBLIC_URL_CACHE_SIZE  # bounded


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"error": [], "result": {"x": "1.5"}}).encode(),
        codecs.BOM_UTF8 + b'{"error":[],"result":{"x":"1.5"}}',
        '{"error":[],"result":{"x":"1.5"}}'.encode("utf-16"),
        '{"error":[],"result":{"x":"1.5"}}'.encode("utf-16-le"),
        '{"error":[],"result":{"x":"1.5"}}'.encode("utf-32"),
        b' \n{"error":[],"result":{"x":"1.5"}}',
        b'{"error":[],"result":{"x":"1.5"}} \r\n\t',
        b'{"error":[],"result":{"x":1.5, "y": 3}}',
        b'["not", "an", "envelope"]',
    ],
)
def test_answers_decode_as_json_loads_decodes_them(raw: bytes) -> None:
    rest = KrakenExchange(KrakenConfig(base_url="http://127.0.0.1:1")).rest
    expected = json.loads(raw, parse_float=Decimal)
    try:
        got = rest._decode("public/Test", 200, raw, trading=False)
    except BadDataError:
        assert not isinstance(expected, dict)  # not an envelope: refused, typed
        return
    assert got == expected["result"]
    if isinstance(got.get("x"), Decimal):
        assert got["x"] == Decimal("1.5")  # JSON floats become Decimals, exactly


_json_texts = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
).map(lambda result: json.dumps({"error": [], "result": result}))
_around = st.text(alphabet=" \t\r\n\x0c\x0b\xa0x}{,\x00", max_size=4)


@given(_around, _json_texts, _around)
def test_any_answer_decodes_exactly_as_json_loads_would(before: str, text: str, after: str) -> None:
    """Whatever comes before or after the object: json.loads's result, or a typed error where it fails."""
    raw = (before + text + after).encode()
    rest = KrakenExchange(KrakenConfig(base_url="http://127.0.0.1:1")).rest
    try:
        expected = json.loads(raw, parse_float=Decimal)
    except ValueError:
        with pytest.raises(TradebotError):
            rest._decode("public/Test", 200, raw, trading=False)
        return
    assert repr(rest._decode("public/Test", 200, raw, trading=False)) == repr(expected["result"])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"error":[],"result":{"x":"1',
        b"\xff\xfe\x00",
        b"{\x00\x00\x00",
        b"{\xff}",
        # something after the object; a form feed is whitespace to Python, not to JSON
        b'{"error":[],"result":{}}x',
        b'{"error":[],"result":{}} {}',
        b'{"error":[],"result":{}}\x0c',
    ],
)
def test_undecodable_answers_are_typed_errors(raw: bytes) -> None:
    rest = KrakenExchange(KrakenConfig(base_url="http://127.0.0.1:1")).rest
    with pytest.raises(ExchangeUnavailable):
        rest._decode("public/Test", 200, raw, trading=False)


async def test_every_answer_hands_its_connection_back(server: FakeKraken, tmp_path: Path) -> None:
    """With a pool of one connection, a response never released would stall the next call."""
    ex = make_exchange(
        server.base_url,
        tmp_path,
        pool_limit=1,
        request_timeout_s=1.0,
        breaker_min_calls=20,
        breaker_window=20,
    )
    faults = [
        ("status", 503, b"<title>down</title>"),
        ("raw", b'{"error":[],"result":{"XXBTZUSD":{"a":["1'),
        ("raw", b"<html>maintenance</html>"),
        ("json", {"error": ["EQuery:Unknown asset pair"]}),
        ("json", {"error": [], "result": {"XXBTZUSD": {"a": ["NaN"]}}}),
        ("drop",),
    ]
    try:
        for fault in faults * 2:
            server.then("Ticker", fault)
            try:
                # each fault ends in one of our typed errors (or a retry that worked), never a stall
                with contextlib.suppress(TradebotError):
                    await asyncio.wait_for(ex.ticker(["BTC/USD"]), 3.0)
            except TimeoutError:  # pragma: no cover - the failure this test is about
                pytest.fail(f"a call stalled after {fault[0]}: a connection was not released")
        for _ in range(20):
            (ticker,) = await asyncio.wait_for(ex.ticker(["BTC/USD"]), 3.0)
            assert ticker.bid == Decimal(TICKER["XXBTZUSD"]["b"][0])
        assert await asyncio.wait_for(ex.rest.private("Balance"), 3.0)
    finally:
        await ex.close()


def test_pair_lookups_see_a_re_registered_pair() -> None:
    registry = PairRegistry()
    assert registry.info("btc/usd").altname == "XBTUSD"
    assert registry.info("btc/usd") is registry.info("BTC/USD")
    registry.add(PairInfo("BTC/USD", "XBTUSDNEW", "XXBTZUSD"))
    assert registry.info("btc/usd").altname == "XBTUSDNEW"  # not the remembered old one


def test_an_answer_nested_too_deeply_is_bad_data_not_a_crash() -> None:
    rest = KrakenExchange(KrakenConfig(base_url="http://127.0.0.1:1")).rest
    with pytest.raises(BadDataError, match="nested too deeply"):
        rest._decode("public/Ticker", 200, b'{"error":[],"result":' + b"[" * 200_000, trading=False)


@pytest.mark.parametrize(
    "cell",
    ["1_000", "\u0663\u0660\u0660", "1e999999999999999999", "1e-999999999999999999", "2E+19", "1e-25"],
)
def test_prices_decimal_would_misread_are_refused_on_both_paths(cell: str) -> None:
    """Underscores, other scripts' digits and absurd exponents all parse as Decimal; none is a price."""
    registry = PairRegistry()
    row = {"a": [cell, "1", "1"], "b": ["1", "1", "1"], "c": ["1", "1"], "v": ["1", "1"]}
    with pytest.raises(BadDataError, match=r"XXBTZUSD"):
        parse_ticker({"XXBTZUSD": row}, registry, datetime.now(UTC))


def test_prices_within_range_still_parse() -> None:
    registry = PairRegistry()
    row = {
        "a": ["30300.1", "1", "1"],
        "b": ["0.000000000001", "1", "1"],
        "c": ["1e3", "1"],
        "v": ["1", "5e17"],
    }
    (ticker,) = parse_ticker({"XXBTZUSD": row}, registry, datetime.now(UTC))
    assert (ticker.ask, ticker.bid, ticker.last, ticker.volume) == (
        Decimal("30300.1"),
        Decimal("1E-12"),
        Decimal("1E+3"),
        Decimal("5E+17"),
    )
