"""Plugin registration, config validation, error mapping and boundary parsing (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.core.context import BotContext
from tradebot.core.errors import (
    BadDataError,
    ConfigError,
    ConnectionFailed,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
)
from tradebot.core.models import Candle, OrderStatus, Side, Ticker
from tradebot.exchanges.kraken import plugin
from tradebot.exchanges.kraken.config import KrakenConfig, endpoint_cost
from tradebot.exchanges.kraken.errors import definitely_not_placed, map_kraken_error
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.exchanges.kraken.pairs import PairRegistry, asset_from_kraken
from tradebot.exchanges.kraken.parse import parse_ohlc, parse_orders, parse_ws_ticker
from tradebot.exchanges.kraken.ws import MarketDataStream

from .fake_kraken import API_KEY, API_SECRET


def test_plugin_registers_kraken_and_takes_secrets_from_the_context(tmp_path: Path) -> None:
    (spec,) = plugin.tradebot_register_exchanges()
    assert spec.name == "kraken" and spec.config_cls is KrakenConfig and spec.description
    context = BotContext(
        settings=None,
        plugins=None,
        state_dir=tmp_path,  # type: ignore[arg-type]
        extras={"secrets": {"kraken_api_key": API_KEY, "kraken_api_secret": API_SECRET}},
    )
    ex = spec.factory(KrakenConfig(), context)
    assert isinstance(ex, KrakenExchange) and ex.rest.has_credentials
    assert ex.rest.nonces.path == tmp_path / "kraken_nonce"
    public_only = spec.factory(KrakenConfig(), BotContext(settings=None, plugins=None))  # type: ignore[arg-type]
    assert not public_only.rest.has_credentials


def test_half_a_key_pair_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="both"):
        KrakenExchange(KrakenConfig(), api_key=API_KEY)


def test_config_defaults_and_validation() -> None:
    cfg = KrakenConfig()
    assert cfg.base_url == "https://api.kraken.com" and cfg.ws_url == "wss://ws.kraken.com/v2"
    assert cfg.min_spacing_s == 0.15 and cfg.rest_tier.max_counter == 15
    assert KrakenConfig(rate_tier="pro").rest_tier.decay_per_s == 1.0
    with pytest.raises(ValueError, match="rate_tier must be one of"):
        KrakenConfig(rate_tier="gold")
    with pytest.raises(ValueError, match="min_spacing_s must be between"):
        KrakenConfig(min_spacing_s=-1)
    with pytest.raises(ValueError, match="min_calls must be <= window_size"):
        KrakenConfig(breaker_window=3, breaker_min_calls=5)
    assert (
        endpoint_cost("TradesHistory") == 2
        and endpoint_cost("Balance") == 1
        and endpoint_cost("AddOrder") == 0
    )


def test_error_mapping_details() -> None:
    throttled = map_kraken_error(["EService: Throttled: 1000030"], endpoint="private/Balance", now=1000000)
    assert isinstance(throttled, RateLimited) and throttled.retry_after_s == 30
    lockout = map_kraken_error(["EGeneral:Temporary lockout"], endpoint="private/Balance")
    assert isinstance(lockout, RateLimited) and lockout.retry_after_s == 900
    assert isinstance(
        map_kraken_error(["EGeneral:Invalid arguments:volume"], endpoint="private/AddOrder", trading=True),
        InvalidOrder,
    )
    assert isinstance(
        map_kraken_error(["EOrder:Unknown order"], endpoint="private/CancelOrder"), OrderNotFound
    )
    odd = map_kraken_error(["EFoo:Never seen"], endpoint="public/Time")
    assert type(odd) is ExchangeError and not odd.transient and "EFoo:Never seen" in str(odd)
    # which AddOrder failures prove there is no order
    assert definitely_not_placed(map_kraken_error(["EOrder:Insufficient funds"], endpoint="private/AddOrder"))
    assert not definitely_not_placed(map_kraken_error(["EService:Unavailable"], endpoint="private/AddOrder"))
    assert not definitely_not_placed(ConnectionFailed("reset"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=600), max_size=30))
def test_error_texts_from_the_exchange_are_safe_to_log(errors: list[str]) -> None:
    """Whatever the error list holds, the message fits one log line, is bounded and encodes."""
    exc = map_kraken_error(errors, endpoint="private/AddOrder", trading=True)
    for text in (str(exc), str(exc.context.get("kraken_error", ""))):
        text.encode("utf-8")  # no lone surrogates left
        assert not any(ord(c) < 32 or ord(c) == 127 for c in text)
        assert len(text) < 11 * 210 + 200


def test_error_text_keeps_its_meaning_when_cleaned() -> None:
    forged = map_kraken_error(
        ["EOrder:Insufficient funds:\n2026-12-01 CRITICAL forged line\ud800"], endpoint="x"
    )
    assert isinstance(forged, InsufficientFunds) and "\n" not in str(forged) and "forged line?" in str(forged)
    many = map_kraken_error([f"EFoo:{i}" for i in range(25)], endpoint="x")
    assert "EFoo:9; and 15 more" in str(many)


def test_asset_codes() -> None:
    assert asset_from_kraken("XXBT") == "BTC" and asset_from_kraken("ZUSD") == "USD"
    assert asset_from_kraken("XXDG") == "DOGE" and asset_from_kraken("DOT.S") == "DOT.S"
    assert asset_from_kraken("XBT.F") == "BTC.F" and asset_from_kraken("SOL") == "SOL"
    reg = PairRegistry()
    assert reg.info("XBT/USD").pair == "BTC/USD" and reg.from_kraken("XXBTZUSD") is reg.info("BTC/USD")


def test_ohlc_and_orders_are_validated() -> None:
    reg = PairRegistry()
    bad_ohlc = {"XXBTZUSD": [[1688671200, "100", "90", "95", "99", "97", "1", 3]], "last": 0}
    with pytest.raises(BadDataError, match=r"XXBTZUSD\[0\] has inconsistent OHLC"):
        parse_ohlc(bad_ohlc, reg, 1)
    with pytest.raises(BadDataError, match=r"XXBTZUSD\[0\]\[7\] is not an integer"):
        parse_ohlc({"XXBTZUSD": [[1688671200, "1", "1", "1", "1", "1", "1", "x"]]}, reg, 1)
    order = {
        "cl_ord_id": "c1",
        "status": "closed",
        "opentm": 1688666559.8974,
        "vol": "1.25",
        "vol_exec": "1.25",
        "fee": "0.5",
        "price": "30010.0",
        "descr": {"pair": "XBTUSD", "type": "sell", "ordertype": "limit", "price": "30000.0"},
    }
    (info,) = parse_orders({"closed": {"OABC": order}}, reg, "private/ClosedOrders", "closed")
    assert (
        info.status is OrderStatus.CLOSED
        and info.side is Side.SELL
        and info.avg_fill_price == Decimal("30010.0")
    )
    overfilled = dict(order, vol_exec="2")
    with pytest.raises(BadDataError, match="vol_exec exceeds the order volume"):
        parse_orders({"closed": {"OABC": overfilled}}, reg, "private/ClosedOrders", "closed")


def test_ws_ticker_validation() -> None:
    reg = PairRegistry()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    good = {
        "symbol": "BTC/USD",
        "bid": Decimal("1"),
        "ask": Decimal("2"),
        "last": Decimal("1.5"),
        "volume": 3,
        "timestamp": "2023-09-25T09:04:31.742648Z",
    }
    ticker = parse_ws_ticker(good, reg, now)
    assert ticker.time.year == 2023 and ticker.mid == Decimal("1.5")
    with pytest.raises(BadDataError, match="crossed book"):
        parse_ws_ticker(dict(good, bid=Decimal("3")), reg, now)
    assert parse_ws_ticker({k: v for k, v in good.items() if k != "timestamp"}, reg, now).time == now


async def test_bad_socket_messages_are_counted_and_dropped() -> None:
    async def never(*_: object) -> list[Ticker]:
        raise AssertionError("no REST in this test")

    stream = MarketDataStream(
        pairs=["BTC/USD"],
        ohlc_interval=1,
        config=KrakenConfig(),
        registry=PairRegistry(),
        session=lambda: None,
        poll_tickers=never,
        poll_ohlc=never,
    )  # type: ignore[arg-type]
    tick = {"symbol": "BTC/USD", "bid": 1.0, "ask": 2.0, "last": 1.5, "volume": 3.0}
    stream._on_text("not json")
    stream._on_text(json.dumps({"channel": "ticker", "data": [dict(tick, bid="NaN")]}))
    stream._on_text(json.dumps({"channel": "ticker", "data": [dict(tick, symbol="NOPE/USD")]}))
    stream._on_text(json.dumps({"channel": "ticker", "data": "oops"}))
    stream._on_text(json.dumps({"channel": "heartbeat"}))
    stream._on_text(json.dumps({"channel": "ticker", "type": "update", "data": [tick]}))
    stream._on_text(
        json.dumps(
            {
                "channel": "ohlc",
                "data": [
                    {
                        "symbol": "BTC/USD",
                        "open": 1,
                        "high": 2,
                        "low": 1,
                        "close": 2,
                        "volume": 1,
                        "interval": 1,
                        "trades": 2,
                        "interval_begin": "2023-10-04T16:24:00Z",
                    }
                ],
            }
        )
    )
    assert stream.stats.bad_messages == 4 and stream.stats.messages == 7
    first, second = stream._queue.get_nowait(), stream._queue.get_nowait()
    assert isinstance(first, Ticker) and first.bid == Decimal("1.0")
    assert isinstance(second, Candle) and second.close == Decimal("2")
