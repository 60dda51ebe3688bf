"""REST client against a scripted server on 127.0.0.1: signing, error mapping, retries, breakers."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from tradebot.core.errors import (
    AuthError,
    BadDataError,
    CircuitOpen,
    ConnectionFailed,
    DNSError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidNonce,
    MarketClosed,
    RateLimited,
    RequestTimeout,
    UnknownPair,
)
from tradebot.exchanges.kraken.auth import sign
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.resilience.breaker import BreakerState

from .conftest import make_exchange
from .fake_kraken import API_KEY, API_SECRET, FakeKraken


def make(server: FakeKraken, tmp_path: Path, **overrides: object) -> KrakenExchange:
    return make_exchange(server.base_url, tmp_path, **overrides)


def test_signature_matches_krakens_worked_example() -> None:
    body = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    assert sign("/0/private/AddOrder", 1616492376594, body, API_SECRET) == (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
    )


async def test_public_and_private_calls(server: FakeKraken, tmp_path: Path) -> None:
    ex = make(server, tmp_path)
    try:
        (ticker,) = await ex.ticker(["BTC/USD"])
        assert ticker.pair == "BTC/USD" and ticker.bid == Decimal("30300.00000") and ticker.ask > ticker.bid
        balances = await ex.balances()
        assert balances.get("USD") == Decimal("171288.6158") and balances.get("BTC") == Decimal(
            "1011.19088779"
        )
        assert not balances.stale
        assert (await ex.system_status()).online
        assert (await ex.server_time()).year == 2023
        candles = await ex.ohlc("BTC/USD", 1)
        assert len(candles) == 3 and candles[0].open == Decimal("30306.1")
    finally:
        await ex.close()
    assert server.bad_signatures == 0
    _, headers, params = next(r for r in server.requests if r[0] == "Balance")
    assert headers["API-Key"] == API_KEY and "nonce" in params
    assert ex.rest.sessions_created == 1  # one pooled session for every call


async def test_public_only_without_keys(server: FakeKraken) -> None:
    ex = KrakenExchange(KrakenConfig(base_url=server.base_url, min_spacing_s=0.0))
    try:
        assert (await ex.ticker(["BTC/USD"]))[0].pair == "BTC/USD"
        with pytest.raises(AuthError, match="no API key"):
            await ex.balances()
    finally:
        await ex.close()


def test_secrets_never_in_repr() -> None:
    ex = KrakenExchange(KrakenConfig(), api_key=API_KEY, api_secret=API_SECRET)
    text = repr(ex) + repr(ex.rest) + repr(ex.rest._credentials) + repr(ex.config)
    assert API_KEY not in text and API_SECRET not in text


@pytest.mark.parametrize(
    ("kraken_error", "cls", "retried"),
    [
        ("EService:Unavailable", ExchangeUnavailable, True),
        ("EService:Busy", ExchangeUnavailable, True),
        ("EGeneral:Internal error", ExchangeUnavailable, True),
        ("EService:Deadline elapsed", ExchangeUnavailable, True),
        ("EAPI:Rate limit exceeded", RateLimited, True),
        ("EService: Throttled: 1", RateLimited, True),
        ("EAPI:Invalid nonce", InvalidNonce, True),
        ("EService:Market in cancel_only mode", MarketClosed, True),
        ("EGeneral:Temporary lockout", RateLimited, False),  # 15 min: not waited out inside a call
        ("EAPI:Invalid key", AuthError, False),
        ("EAPI:Invalid signature", AuthError, False),
        ("EGeneral:Permission denied", AuthError, False),
        ("EOrder:Insufficient funds", InsufficientFunds, False),
        ("EQuery:Unknown asset pair", UnknownPair, False),
    ],
)
async def test_every_documented_error_maps_to_its_class(
    server: FakeKraken, tmp_path: Path, kraken_error: str, cls: type[Exception], retried: bool
) -> None:
    ex = make(server, tmp_path, breaker_min_calls=20, breaker_window=20)
    for _ in range(3):
        server.then("Balance", ("json", {"error": [kraken_error]}))
    try:
        with pytest.raises(cls) as info:
            await ex.rest.private("Balance")
    finally:
        await ex.close()
    assert "private/Balance" in str(info.value)
    assert server.count("Balance") == (3 if retried else 1)
    assert API_SECRET not in str(info.value) and API_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("action", "cls", "text"),
    [
        (
            ("status", 502, b"<html><head><title>api.kraken.com | 502: Bad gateway</title></head></html>"),
            ExchangeUnavailable,
            "HTTP 502",
        ),
        (("status", 503, b"Service Unavailable"), ExchangeUnavailable, "HTTP 503"),
        (
            ("raw", b'{"error":[],"result":{"XXBTZUSD":{"a":["1'),
            ExchangeUnavailable,
            "malformed or truncated JSON",
        ),
        (("raw", b"<html>maintenance</html>"), ExchangeUnavailable, "not JSON"),
        (("drop",), ConnectionFailed, "connection"),
        (("hang", 0.8), RequestTimeout, "timed out"),
    ],
)
async def test_transport_faults_map_and_are_retried(
    server: FakeKraken, tmp_path: Path, action: tuple[object, ...], cls: type[Exception], text: str
) -> None:
    ex = make(server, tmp_path, request_timeout_s=0.3, breaker_min_calls=20, breaker_window=20)
    server.then("Ticker", action)
    try:
        (ticker,) = await ex.ticker(["BTC/USD"])  # retried after the fault
        assert ticker.pair == "BTC/USD"
        server.then("Ticker", *[action] * 6)  # aiohttp itself re-sends a GET once on a dropped keep-alive
        before = ex.retry_stats.of("public/Ticker").attempts
        with pytest.raises(cls, match=text) as info:
            await ex.ticker(["BTC/USD"])
        assert "public/Ticker" in str(info.value)
        server.script["Ticker"].clear()
        assert ex.retry_stats.of("public/Ticker").attempts - before == 3  # retried up to the limit
    finally:
        await ex.close()
    assert ex.retry_stats.of("public/Ticker").failures == 1


async def test_bad_data_is_rejected_at_the_boundary(server: FakeKraken, tmp_path: Path) -> None:
    ex = make(server, tmp_path)
    bad = {
        "nan": {"XXBTZUSD": {"a": ["NaN", "1", "1"], "b": ["1", "1", "1"], "c": ["1", "1"], "v": ["1", "1"]}},
        "negative": {
            "XXBTZUSD": {"a": ["-5", "1", "1"], "b": ["1", "1", "1"], "c": ["1", "1"], "v": ["1", "1"]}
        },
        "missing": {"XXBTZUSD": {"b": ["1", "1", "1"], "c": ["1", "1"], "v": ["1", "1"]}},
        "type": {"XXBTZUSD": {"a": "30000", "b": ["1", "1", "1"], "c": ["1", "1"], "v": ["1", "1"]}},
        "unknown": {"ZZZZZZ": {"a": ["1", "1", "1"], "b": ["1", "1", "1"], "c": ["1", "1"], "v": ["1", "1"]}},
    }
    expected = {
        "nan": "XXBTZUSD.a[0] is not finite",
        "negative": "XXBTZUSD.a[0] is negative",
        "missing": "XXBTZUSD is missing field 'a'",
        "type": "XXBTZUSD.a is not a list",
        "unknown": "ZZZZZZ is a pair this client does not know",
    }
    try:
        for name, result in bad.items():
            server.then("Ticker", ("json", {"error": [], "result": result}))
            with pytest.raises(BadDataError, match=expected[name].replace("[", r"\[").replace("]", r"\]")):
                await ex.ticker(["BTC/USD"])
        with pytest.raises(UnknownPair):
            await ex.ticker(["NOPE/USD"])
    finally:
        await ex.close()
    assert server.count("Ticker") == len(bad)  # bad data is permanent: never retried


async def test_dns_failure_names_dns_and_the_host(tmp_path: Path) -> None:
    ex = KrakenExchange(
        KrakenConfig(
            base_url="http://nonexistent.invalid:1",
            min_spacing_s=0.0,
            connect_timeout_s=3.0,
            request_timeout_s=3.0,
        ),
    )
    try:
        with pytest.raises((DNSError, RequestTimeout)) as info:
            await ex.server_time()
        ex.flush_dns()
    finally:
        await ex.close()
    if isinstance(info.value, DNSError):
        assert "DNS" in str(info.value) and "nonexistent.invalid" in str(info.value)
        assert info.value.transient
    assert ex.retry_stats.of("public/Time").attempts == 3


async def test_connection_refused_is_connection_failed(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    ex = KrakenExchange(KrakenConfig(base_url=f"http://127.0.0.1:{port}", min_spacing_s=0.0))
    try:
        with pytest.raises(ConnectionFailed, match="could not connect"):
            await ex.server_time()
    finally:
        await ex.close()


async def test_breaker_opens_fails_fast_half_opens_and_closes(server: FakeKraken, tmp_path: Path) -> None:
    ex = make(server, tmp_path)
    page = ("status", 503, b"<title>down</title>")
    seen: list[tuple[str, str]] = []
    ex.breakers.add_listener(lambda t: seen.append((t.previous.value, t.current.value)))
    try:
        server.then("Ticker", *[page] * 4)
        with pytest.raises(ExchangeUnavailable):
            await ex.ticker(["BTC/USD"])  # 3 attempts, all failures
        with pytest.raises((ExchangeUnavailable, CircuitOpen)):
            await ex.ticker(["BTC/USD"])  # the 4th failure trips it, the retry fast-fails
        assert ex.breakers["public"].state is BreakerState.OPEN
        calls = server.count("Ticker")
        with pytest.raises(CircuitOpen):
            await ex.ticker(["BTC/USD"])
        assert server.count("Ticker") == calls  # no request while open
        # private endpoints have their own breaker
        assert (await ex.balances()).get("USD") > 0
        await asyncio.sleep(0.25)
        assert ex.breakers["public"].state is BreakerState.HALF_OPEN
        await ex.ticker(["BTC/USD"])
        await ex.ticker(["BTC/USD"])
        assert ex.breakers["public"].state is BreakerState.CLOSED
    finally:
        await ex.close()
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_reconnect_makes_a_new_session(server: FakeKraken, tmp_path: Path) -> None:
    ex = make(server, tmp_path)
    try:
        await ex.ticker(["BTC/USD"])
        old = ex.rest.session
        await ex.reconnect()
        assert ex.rest.session is not old and old.closed
        await ex.ticker(["BTC/USD"])
        ex.flush_dns()
    finally:
        await ex.close()
    assert ex.rest.sessions_created == 2
