"""Kraken REST and WebSocket parsers: any answer gives a model or a typed error, never a crash."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebot.core.errors import TradebotError
from tradebot.core.models import Side
from tradebot.exchanges.kraken import parse
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.pairs import PairRegistry
from tradebot.exchanges.kraken.ws import MarketDataStream

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REG = PairRegistry()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e999",
            "NaN",
            "inf",
            "30300.1",
            "0.00000001",
            "abc",
            "XXBTZUSD",
            "BTC/USD",
            "open",
            "closed",
            "buy",
            "sell",
            "market",
            "limit",
            "online",
            "maintenance",
            "2023-09-25T09:04:31.742648Z",
            "-0",
            "1" * 40,
        ]
    ),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "XXBTZUSD",
                        "XETHZUSD",
                        "a",
                        "b",
                        "c",
                        "v",
                        "p",
                        "t",
                        "l",
                        "h",
                        "o",
                        "last",
                        "open",
                        "closed",
                        "descr",
                        "vol",
                        "vol_exec",
                        "status",
                        "cl_ord_id",
                        "txid",
                        "symbol",
                        "bid",
                        "ask",
                        "bid_qty",
                        "ask_qty",
                        "timestamp",
                        "unixtime",
                        "error",
                        "result",
                        "count",
                        "type",
                        "pair",
                        "price",
                        "cost",
                        "fee",
                        "interval_begin",
                        "interval",
                        "high",
                        "low",
                        "close",
                        "volume",
                        "opentm",
                    ]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=8,
        )
    ),
    max_leaves=30,
)


# near-valid shapes: a real answer with one part replaced by anything
def _ticker_like(v: Any) -> dict[str, Any]:
    return {
        "XXBTZUSD": {
            "a": [v, "1", "1.0"],
            "b": ["30300.0", v, "1"],
            "c": ["30303.2", "0.1"],
            "v": ["1", "2"],
            "p": ["1", "2"],
            "t": [1, 2],
            "l": ["1", "1"],
            "h": ["2", "2"],
            "o": v,
        }
    }


def _orders_like(v: Any) -> dict[str, Any]:
    return {
        "open": {
            "OUF4EM-FRGI2-MQMWZD": {
                "status": "open",
                "vol": "1.25",
                "vol_exec": v,
                "cl_ord_id": v,
                "opentm": 1.0,
                "descr": {"pair": "XBTUSD", "type": "buy", "ordertype": v, "price": "1"},
            }
        }
    }


answers = st.one_of(json_values, json_values.map(_ticker_like), json_values.map(_orders_like))


def _only_typed(fn: Any, *args: Any) -> None:
    with contextlib.suppress(TradebotError):
        fn(*args)


@given(answers)
def test_rest_parsers_raise_only_typed_errors(value: Any) -> None:
    _only_typed(parse.parse_envelope, value, "public/Ticker")
    _only_typed(parse.parse_time, value)
    _only_typed(parse.parse_system_status, value)
    _only_typed(parse.parse_ticker, value, REG, NOW)
    _only_typed(parse.parse_ohlc, value, REG, 1)
    _only_typed(parse.parse_balance, value)
    _only_typed(parse.parse_add_order, value)
    _only_typed(parse.parse_cancel, value)
    _only_typed(parse.parse_orders, value, REG, "private/OpenOrders", "open")
    _only_typed(parse.parse_orders, value, REG, "private/QueryOrders", None)


def _outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", repr(fn(*args)))  # repr: Decimal("1.0") == Decimal("1.00"), yet they differ
    except TradebotError as exc:
        return ("error", type(exc), str(exc))


# prices as Kraken may (or must never) send them: the fast path must agree on every one
numbers = st.one_of(
    scalars,
    st.sampled_from(
        [
            "30300.1",
            " 30300.1 ",
            "30300.1\n",
            "1_000.5",
            "+2",
            "-0",
            "-0.0",
            "0.0",
            "0E-8",
            "1e-3",
            "1E+3",
            "sNaN",
            "-inf",
            "Infinity",
            "\u0663",
            "0x10",
            "1.2.3",
            "",
            " ",
            "1|2",
            "|",
            "1|2|3|4",
        ]
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(allow_nan=False, allow_infinity=False),
)
price_lists = st.one_of(st.lists(numbers, max_size=3), numbers)


good_numbers = st.one_of(
    st.decimals(min_value=0, max_value=10**9, allow_nan=False, allow_infinity=False, places=8).map(str),
    st.sampled_from(["30300.1", "0.00000001", "1E+3", "0", "-0"]),
)


@st.composite
def tickers(draw: st.DrawFn) -> Any:
    """Mostly well-formed answers (bid <= ask or not), some with one field or one cell spoiled."""
    pairs = draw(
        st.lists(
            st.sampled_from(["XXBTZUSD", "XETHZUSD", "XBTUSD", "xxbtzusd", "ZZZZ", "BTC/USD"]),
            min_size=0,
            max_size=3,
        )
    )
    result: dict[str, Any] = {}
    for pair in pairs:
        entry: dict[str, Any] = {key: draw(st.lists(good_numbers, min_size=2, max_size=3)) for key in "abcv"}
        if draw(st.booleans()):
            key = draw(st.sampled_from("abcv"))
            spoil = draw(st.sampled_from(["cell", "field", "drop"]))
            if spoil == "cell":  # mostly the cell that is read: [0] of a, b, c and [1] of v
                cell = (1 if key == "v" else 0) if draw(st.integers(0, 3)) else draw(st.integers(0, 1))
                entry[key][cell] = draw(numbers)
            elif spoil == "field":
                entry[key] = draw(price_lists)
            else:
                del entry[key]
        result[pair] = entry
    return draw(st.sampled_from([result, result, result, draw(json_values)]))


@given(st.one_of(tickers(), answers))
def test_fast_ticker_path_agrees_with_the_checked_one(value: Any) -> None:
    """Same tickers for good data; for bad data the same typed error, naming the same place."""
    fast = _outcome(parse.parse_ticker, value, REG, NOW)
    assert fast == _outcome(parse._parse_ticker_checked, value, REG, NOW)


@pytest.mark.parametrize("key", ["a", "b", "c", "v"])
@pytest.mark.parametrize(
    "bad",
    [
        "-1",
        "-0.00000001",
        "NaN",
        "sNaN",
        "Infinity",
        "-inf",
        "",
        "x",
        1.5,
        True,
        None,
        "1|2",
        "|",
        "1|",
        "|1",
        "1|2|3|4",
    ],
)
def test_fast_ticker_path_lets_no_bad_cell_through(key: str, bad: Any) -> None:
    entry: dict[str, Any] = {"a": ["2", "1"], "b": ["1", "1"], "c": ["1.5", "1"], "v": ["3", "4"]}
    entry[key] = list(entry[key])
    entry[key][1 if key == "v" else 0] = bad
    value = {"XXBTZUSD": entry}
    outcome = _outcome(parse.parse_ticker, value, REG, NOW)
    assert outcome == _outcome(parse._parse_ticker_checked, value, REG, NOW)
    if bad != 1.5:  # a JSON float is a number the checked path accepts as a Decimal
        assert outcome[0] == "error" and outcome[1].__name__ == "BadDataError"


@given(
    st.one_of(
        answers,
        st.builds(lambda e, r: {"error": e, "result": r}, json_values, json_values),
        st.builds(lambda r: {"result": r}, json_values),
    )
)
def test_fast_envelope_path_agrees_with_the_checked_one(value: Any) -> None:
    fast = _outcome(parse.parse_envelope, value, "public/Ticker")
    assert fast == _outcome(parse._parse_envelope_checked, value, "public/Ticker")


@given(json_values)
def test_ws_item_parsers_raise_only_typed_errors(item: Any) -> None:
    _only_typed(parse.parse_ws_ticker, item, REG, NOW)
    _only_typed(parse.parse_ws_ohlc, item, REG)


def _stream() -> MarketDataStream:
    async def no_poll(*_a: Any) -> list[Any]:
        return []

    return MarketDataStream(
        pairs=["BTC/USD"],
        ohlc_interval=1,
        config=KrakenConfig(),
        registry=REG,
        session=lambda: None,  # type: ignore[arg-type,return-value]
        poll_tickers=no_poll,
        poll_ohlc=no_poll,
    )


ws_messages = st.one_of(
    st.text(max_size=200),
    json_values.map(lambda v: json.dumps(v, default=str)),
    st.builds(
        lambda ch, data: json.dumps({"channel": ch, "type": "update", "data": data}, default=str),
        st.sampled_from(["ticker", "ohlc", "heartbeat", "status", "book"]),
        json_values,
    ),
    st.builds(
        lambda bid: json.dumps(
            {
                "channel": "ticker",
                "type": "update",
                "data": [
                    {
                        "symbol": "BTC/USD",
                        "bid": bid,
                        "bid_qty": 1,
                        "ask": 30300.2,
                        "ask_qty": 1,
                        "last": 30300.1,
                        "volume": 5,
                        "timestamp": "2023-09-25T09:04:31.742648Z",
                    }
                ],
            },
            default=str,
        ),
        scalars,
    ),
)


@pytest.mark.timeout(60)
@given(st.lists(ws_messages, min_size=1, max_size=5))
def test_ws_messages_never_escape_the_stream(messages: list[str]) -> None:
    stream = _stream()
    for text in messages:
        stream._on_text(text)  # must swallow nothing silently: bad ones are counted
    assert stream.stats.messages == len(messages)
    assert stream.stats.events + stream.stats.bad_messages <= 1000 * len(messages)


def test_a_good_ws_ticker_is_parsed_and_a_bad_one_counted() -> None:
    stream = _stream()
    good = {
        "symbol": "BTC/USD",
        "bid": 30300.1,
        "bid_qty": 1,
        "ask": 30300.2,
        "ask_qty": 1,
        "last": 30300.1,
        "volume": 5,
        "timestamp": "2023-09-25T09:04:31.742648Z",
    }
    stream._on_text(json.dumps({"channel": "ticker", "type": "update", "data": [good]}))
    stream._on_text(json.dumps({"channel": "ticker", "type": "update", "data": [{**good, "bid": "NaN"}]}))
    assert stream.stats.events == 1 and stream.stats.bad_messages == 1
    assert Decimal(str(good["bid"])) > 0


_PAIR_ENTRY = {
    "altname": "XBTUSD",
    "wsname": "XBT/USD",
    "base": "XXBT",
    "quote": "ZUSD",
    "pair_decimals": 1,
    "lot_decimals": 8,
    "cost_decimals": 5,
    "ordermin": "0.00005",
    "costmin": "0.5",
    "tick_size": "0.1",
    "status": "online",
    "fees": [[0, 0.4], [10000, 0.35]],
    "fees_maker": [[0, 0.25], [10000, 0.2]],
}


@st.composite
def asset_pairs(draw: st.DrawFn) -> Any:
    """A real AssetPairs answer with one field of one entry replaced by anything, or dropped."""
    entry = dict(_PAIR_ENTRY)
    key = draw(st.sampled_from(sorted(_PAIR_ENTRY)))
    if draw(st.booleans()):
        del entry[key]
    else:
        entry[key] = draw(json_values)
    return draw(
        st.sampled_from(
            [
                {"XXBTZUSD": entry, "XETHZUSD": dict(_PAIR_ENTRY, altname="ETHUSD", wsname="ETH/USD")},
                {"XXBTZUSD": entry},
                draw(json_values),
            ]
        )
    )


@given(st.one_of(asset_pairs(), answers), st.decimals(min_value=0, max_value=10**8, allow_nan=False))
def test_market_rules_parser_keeps_good_entries_and_reports_bad_ones(value: Any, volume: Decimal) -> None:
    from tradebot.core.markets import MarketRules

    try:
        rules, problems = parse.parse_market_rules(value, REG, fee_volume=volume)
    except TradebotError:
        assert not isinstance(value, dict)  # only an answer that is not an object fails as a whole
        return
    assert all(isinstance(r, MarketRules) and r.tick_size > 0 and r.min_volume >= 0 for r in rules.values())
    for r in rules.values():  # every rule set found is usable: rounding works on it
        r.round_volume(Decimal("1.123456789"))
        r.round_price(Decimal("30300.17"), Side.BUY)
    assert all(isinstance(p, TradebotError) for p in problems)
    if (
        isinstance(value, dict)
        and "XETHZUSD" in value
        and value["XETHZUSD"] == dict(_PAIR_ENTRY, altname="ETHUSD", wsname="ETH/USD")
    ):
        assert "ETH/USD" in rules  # a bad BTC entry never costs the good ETH one
