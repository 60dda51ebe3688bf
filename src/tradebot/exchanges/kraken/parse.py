"""Validation of every Kraken answer at the boundary.

Each parser turns a decoded JSON value into tradebot models or raises
:class:`~tradebot.core.errors.BadDataError` naming what is wrong and where
(``"Kraken public/Ticker: XXBTZUSD.a[0] is NaN"``), so nothing malformed travels deeper.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tradebot.api import (
    BadDataError,
    Candle,
    FeeSchedule,
    Fill,
    MarketRules,
    OrderInfo,
    OrderStatus,
    OrderType,
    PairStatus,
    Side,
    SystemStatus,
    Ticker,
)
from tradebot.exchanges.kraken.pairs import PairRegistry, asset_from_kraken

__all__ = [
    "decimal_field",
    "parse_add_order",
    "parse_asset_decimals",
    "parse_balance",
    "parse_cancel",
    "parse_envelope",
    "parse_history_page",
    "parse_market_rules",
    "parse_ohlc",
    "parse_order",
    "parse_orders",
    "parse_pair_rules",
    "parse_system_status",
    "parse_ticker",
    "parse_time",
    "parse_trade_volume",
    "parse_trades",
    "parse_ws_ohlc",
    "parse_ws_ticker",
    "timestamp",
]


class _Where:
    """Where in which answer a value sits, for error messages.

    The path is only spelled out when a value fails: every field of every answer gets a
    ``_Where``, and building its string eagerly would cost more than the check itself.
    """

    __slots__ = ("key", "parent", "source")

    def __init__(self, source: str, parent: _Where | None = None, key: object = None) -> None:
        self.source = source
        self.parent = parent
        self.key = key

    def __truediv__(self, key: object) -> _Where:
        return _Where(self.source, self, key)

    @property
    def path(self) -> str:
        keys = []
        node: _Where | None = self
        while node is not None and node.parent is not None:
            keys.append(node.key)
            node = node.parent
        out = ""
        for key in reversed(keys):
            out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
        return out

    def fail(self, problem: str) -> BadDataError:
        at = self.path or "result"
        return BadDataError(f"Kraken {self.source}: {at} {problem}", endpoint=self.source, field=at)


def _obj(value: Any, where: _Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.fail(f"is not an object (got {type(value).__name__})")
    return value


def _list(value: Any, where: _Where, *, min_len: int = 0) -> Sequence[Any]:
    if not isinstance(value, list):
        raise where.fail(f"is not a list (got {type(value).__name__})")
    if len(value) < min_len:
        raise where.fail(f"has {len(value)} elements, expected at least {min_len}")
    return value


def _get(obj: Mapping[str, Any], key: str, where: _Where) -> Any:
    if key not in obj:
        raise where.fail(f"is missing field {key!r}")
    return obj[key]


def _str(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.fail(f"is not a string (got {type(value).__name__})")
    return value


_MIN_ADJUSTED, _MAX_ADJUSTED = -24, 18
"""Decimal exponents a price or volume can have: 1e-24 to 9.99e18. Outside that range a
number is garbage (``1e999999999999999999`` parses, then overflows in the first sum)."""


def decimal_field(value: Any, where: _Where, *, positive: bool = False) -> Decimal:
    """A finite, non-negative Decimal (strictly positive with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise where.fail(f"is not a number (got {type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise where.fail(f"is not finite ({value!r})")
    if isinstance(value, str) and (not value.isascii() or "_" in value):
        # Decimal also reads "1_000" and digits of other scripts; Kraken sends neither
        raise where.fail(f"is not a plain decimal number ({value[:40]!r})")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise where.fail(f"is not a number ({str(value)[:40]!r})") from None
    if not number.is_finite():
        raise where.fail(f"is not finite ({value!r})")
    if number < 0:
        raise where.fail(f"is negative ({value!r})")
    if number and not _MIN_ADJUSTED <= number.adjusted() <= _MAX_ADJUSTED:
        raise where.fail(f"is out of range ({str(value)[:40]!r})")
    if positive and number == 0:
        raise where.fail("is zero where a positive price is required")
    return number


def _int(value: Any, where: _Where) -> int:
    if isinstance(value, bool):
        raise where.fail("is not an integer (got bool)")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)) and math.isfinite(value) and int(value) == value:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise where.fail(f"is not an integer ({str(value)[:40]!r})")


def timestamp(value: Any, where: _Where) -> datetime:
    """Unix seconds (int/float/str) or an RFC 3339 string -> aware UTC datetime."""
    if isinstance(value, str) and not value.replace(".", "", 1).isdigit():
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise where.fail(f"is not a timestamp ({value[:40]!r})") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    seconds = decimal_field(value, where)
    try:
        return datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, OSError, ValueError):
        raise where.fail(f"is out of range ({value!r})") from None


# --- envelope ----------------------------------------------------------------


def parse_envelope(body: Any, endpoint: str) -> tuple[list[str], Any]:
    """``{"error": [...], "result": ...}`` -> (errors, result)."""
    # Fast path for the common answer (no error, a result); anything else, even a valid
    # envelope with errors, takes the checked path below, which explains what is wrong.
    if type(body) is dict and "result" in body:
        errors = body.get("error")
        if type(errors) is list and not errors:
            return [], body["result"]
    return _parse_envelope_checked(body, endpoint)


def _parse_envelope_checked(body: Any, endpoint: str) -> tuple[list[str], Any]:
    where = _Where(endpoint)
    obj = _obj(body, where)
    errors = obj.get("error", [])
    if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
        raise (where / "error").fail("is not a list of strings")
    if errors:
        return list(errors), None
    if "result" not in obj:
        raise where.fail("has neither errors nor a 'result'")
    return [], obj["result"]


# --- public ------------------------------------------------------------------


def parse_time(result: Any) -> datetime:
    where = _Where("public/Time")
    return timestamp(_get(_obj(result, where), "unixtime", where), where / "unixtime")


def parse_system_status(result: Any) -> SystemStatus:
    where = _Where("public/SystemStatus")
    obj = _obj(result, where)
    status = _str(_get(obj, "status", where), where / "status")
    if status not in ("online", "maintenance", "cancel_only", "post_only", "limit_only"):
        raise (where / "status").fail(f"is not a known status ({status[:40]!r})")
    return SystemStatus(status=status, time=timestamp(_get(obj, "timestamp", where), where / "timestamp"))


def _pair_key(key: str, registry: PairRegistry, where: _Where) -> str:
    info = registry.from_kraken(key)
    if info is None:
        raise (where / key).fail("is a pair this client does not know")
    return info.pair


# What Kraken sends for a price or volume: ASCII digits, an optional fraction. Every string it
# matches is a finite, unsigned Decimal with an exponent within [-24, 18] (at most 19 integer
# and 24 fraction digits), so the fast path needs no check beyond the match. Anything else,
# valid or not, goes to the checked path.
_PLAIN = r"[0-9]{1,19}(?:\.[0-9]{1,24})?"
# a Ticker's four cells joined by "|", checked in one match: a "|" inside a cell adds a
# fifth part, which cannot match
_FOUR_PLAIN_DECIMALS = re.compile(rf"{_PLAIN}\|{_PLAIN}\|{_PLAIN}\|{_PLAIN}").fullmatch


def _fast_tickers(result: Any, registry: PairRegistry, now: datetime) -> list[Ticker] | None:
    """``parse_ticker`` for well-formed answers only: None as soon as anything is off.

    It builds no :class:`_Where` and raises nothing, so a valid answer costs only its
    checks; every check of :func:`_parse_ticker_checked` is made here too, or stricter.
    """
    if type(result) is not dict:
        return None
    plain4 = _FOUR_PLAIN_DECIMALS
    out = []
    for key, data in result.items():
        info = registry.from_kraken(key) if type(key) is str else None
        if info is None or type(data) is not dict:
            return None
        a, b, c, v = data.get("a"), data.get("b"), data.get("c"), data.get("v")
        if type(a) is not list or type(b) is not list or type(c) is not list or type(v) is not list:
            return None
        if not a or not b or not c or len(v) < 2:
            return None
        a0, b0, c0, v1 = a[0], b[0], c[0], v[1]
        if type(a0) is not str or type(b0) is not str or type(c0) is not str or type(v1) is not str:
            return None
        if plain4(f"{a0}|{b0}|{c0}|{v1}") is None:
            return None
        ask, bid, last, volume = Decimal(a0), Decimal(b0), Decimal(c0), Decimal(v1)
        if not ask or not bid or not last or bid > ask:  # prices must be > 0; a crossed book is bad data
            return None
        out.append(Ticker(info.pair, bid, ask, last, volume, now))  # positional: Ticker's field order
    return out


def parse_ticker(result: Any, registry: PairRegistry, now: datetime) -> list[Ticker]:
    """A ``Ticker`` result -> one :class:`Ticker` per pair (REST tickers carry no time: ``now``)."""
    tickers = _fast_tickers(result, registry, now)
    if tickers is not None:
        return tickers
    return _parse_ticker_checked(result, registry, now)  # raises the located error (or accepts e.g. numbers)


def _parse_ticker_checked(result: Any, registry: PairRegistry, now: datetime) -> list[Ticker]:
    where = _Where("public/Ticker")
    out = []
    for key, data in _obj(result, where).items():
        w = where / key
        pair = _pair_key(key, registry, where)
        obj = _obj(data, w)
        ask = decimal_field(_list(_get(obj, "a", w), w / "a", min_len=1)[0], w / "a" / 0, positive=True)
        bid = decimal_field(_list(_get(obj, "b", w), w / "b", min_len=1)[0], w / "b" / 0, positive=True)
        last = decimal_field(_list(_get(obj, "c", w), w / "c", min_len=1)[0], w / "c" / 0, positive=True)
        volume = decimal_field(_list(_get(obj, "v", w), w / "v", min_len=2)[1], w / "v" / 1)
        if bid > ask:
            raise w.fail(f"has a crossed book (bid {bid} > ask {ask})")
        out.append(Ticker(pair=pair, bid=bid, ask=ask, last=last, volume=volume, time=now))
    return out


def _candle(row: Any, pair: str, interval: int, where: _Where) -> Candle:
    cells = _list(row, where, min_len=8)
    o, h, low, c, vwap = (decimal_field(cells[i], where / i, positive=True) for i in range(1, 6))
    if h < max(o, c, low) or low > min(o, c):
        raise where.fail(f"has inconsistent OHLC (o={o} h={h} l={low} c={c})")
    return Candle(
        pair=pair,
        interval_min=interval,
        open_time=timestamp(cells[0], where / 0),
        open=o,
        high=h,
        low=low,
        close=c,
        vwap=vwap,
        volume=decimal_field(cells[6], where / 6),
        count=_int(cells[7], where / 7),
    )


def parse_ohlc(result: Any, registry: PairRegistry, interval: int) -> list[Candle]:
    """An ``OHLC`` result -> candles, oldest first (the last one is still open)."""
    where = _Where("public/OHLC")
    out: list[Candle] = []
    for key, rows in _obj(result, where).items():
        if key == "last":
            continue
        pair = _pair_key(key, registry, where)
        for i, row in enumerate(_list(rows, where / key)):
            out.append(_candle(row, pair, interval, where / key / i))
    return out


# --- market rules --------------------------------------------------------------

_STATUSES = {s.value: s for s in PairStatus}


def _fee_tiers(value: Any, where: _Where) -> tuple[tuple[Decimal, Decimal], ...]:
    tiers = []
    for i, row in enumerate(_list(value, where, min_len=1)):
        pair = _list(row, where / i, min_len=2)
        tiers.append((decimal_field(pair[0], where / i / 0), decimal_field(pair[1], where / i / 1)))
    if tiers[0][0] != 0:
        raise where.fail("does not start at volume 0")
    return tuple(tiers)


def parse_pair_rules(
    rest_name: str, data: Any, pair: str, *, fee_volume: Decimal, fee_decimals: int | None
) -> MarketRules:
    """One ``AssetPairs`` entry -> :class:`MarketRules` (fees at the account's 30-day volume)."""
    where = _Where("public/AssetPairs") / rest_name
    obj = _obj(data, where)
    price_decimals = _int(_get(obj, "pair_decimals", where), where / "pair_decimals")
    lot_decimals = _int(_get(obj, "lot_decimals", where), where / "lot_decimals")
    for name, places in (("pair_decimals", price_decimals), ("lot_decimals", lot_decimals)):
        if not 0 <= places <= 18:
            raise (where / name).fail(f"is out of range ({places})")
    tick = obj.get("tick_size")
    tick_size = (
        decimal_field(tick, where / "tick_size", positive=True)
        if tick is not None
        else Decimal(1).scaleb(-price_decimals)
    )
    status_text = _str(_get(obj, "status", where), where / "status")
    status = _STATUSES.get(status_text)
    if status is None:
        raise where.fail(f"has an unknown status {status_text[:40]!r}")
    try:
        schedule = FeeSchedule(
            taker=_fee_tiers(_get(obj, "fees", where), where / "fees"),
            maker=_fee_tiers(_get(obj, "fees_maker", where), where / "fees_maker"),
        )
    except ValueError as exc:
        raise where.fail(f"has a bad fee schedule: {exc}") from None
    try:
        return MarketRules(
            pair=pair,
            price_decimals=price_decimals,
            lot_decimals=lot_decimals,
            tick_size=tick_size,
            min_volume=decimal_field(_get(obj, "ordermin", where), where / "ordermin"),
            min_cost=decimal_field(_get(obj, "costmin", where), where / "costmin"),
            taker_fee_pct=schedule.taker_pct(fee_volume),
            maker_fee_pct=schedule.maker_pct(fee_volume),
            status=status,
            fee_decimals=fee_decimals,
        )
    except ValueError as exc:
        raise where.fail(f"is not a valid set of market rules: {exc}") from None


def parse_market_rules(
    result: Any,
    registry: PairRegistry,
    *,
    fee_volume: Decimal = Decimal(0),
    asset_decimals: Mapping[str, int] | None = None,
) -> tuple[dict[str, MarketRules], list[BadDataError]]:
    """An ``AssetPairs`` result -> rules per pair, and the problems of entries that could not be read.

    An entry with a missing or bad field is left out (and reported), so the caller keeps
    that pair's last good rules; pairs without a WebSocket name are not tradable here.
    """
    where = _Where("public/AssetPairs")
    rules: dict[str, MarketRules] = {}
    problems: list[BadDataError] = []
    for rest_name, data in _obj(result, where).items():
        info = registry.from_kraken(str(rest_name))
        if info is None:
            continue
        decimals = (asset_decimals or {}).get(info.quote)
        try:
            rules[info.pair] = parse_pair_rules(
                str(rest_name), data, info.pair, fee_volume=fee_volume, fee_decimals=decimals
            )
        except BadDataError as exc:
            problems.append(exc)
    return rules, problems


def parse_asset_decimals(result: Any) -> dict[str, int]:
    """An ``Assets`` result -> common asset code -> the decimals balances are kept to."""
    where = _Where("public/Assets")
    out: dict[str, int] = {}
    for code, data in _obj(result, where).items():
        out[asset_from_kraken(str(code))] = _int(
            _get(_obj(data, where / code), "decimals", where / code), where / code / "decimals"
        )
    return out


def parse_trade_volume(result: Any) -> Decimal:
    """A ``TradeVolume`` result -> the account's 30-day volume (its fee tier)."""
    where = _Where("private/TradeVolume")
    return decimal_field(_get(_obj(result, where), "volume", where), where / "volume")


# --- private -----------------------------------------------------------------


def parse_balance(result: Any) -> dict[str, Decimal]:
    """A ``Balance`` result -> common asset code -> total."""
    where = _Where("private/Balance")
    totals: dict[str, Decimal] = {}
    for code, amount in _obj(result, where).items():
        asset = asset_from_kraken(code)
        totals[asset] = totals.get(asset, Decimal(0)) + decimal_field(amount, where / code)
    return totals


def parse_add_order(result: Any) -> list[str]:
    """An ``AddOrder`` result -> the exchange's order ids."""
    where = _Where("private/AddOrder")
    txids = _list(_get(_obj(result, where), "txid", where), where / "txid", min_len=1)
    return [_str(t, where / "txid" / i) for i, t in enumerate(txids)]


def parse_cancel(result: Any) -> int:
    """A ``CancelOrder`` result -> how many orders were cancelled."""
    where = _Where("private/CancelOrder")
    return _int(_get(_obj(result, where), "count", where), where / "count")


_STATUS = {
    "pending": OrderStatus.OPEN,  # accepted by Kraken, entering the book
    "open": OrderStatus.OPEN,
    "closed": OrderStatus.CLOSED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
}


def parse_order(txid: str, data: Any, registry: PairRegistry, source: str) -> OrderInfo:
    """One entry of ``OpenOrders`` / ``ClosedOrders`` / ``QueryOrders``."""
    w = _Where(source) / txid
    obj = _obj(data, w)
    descr = _obj(_get(obj, "descr", w), w / "descr")
    pair_name = _str(_get(descr, "pair", w / "descr"), w / "descr" / "pair")
    info = registry.from_kraken(pair_name)
    if info is None:
        raise (w / "descr" / "pair").fail(f"is a pair this client does not know ({pair_name[:20]!r})")
    side_raw = _str(_get(descr, "type", w / "descr"), w / "descr" / "type")
    type_raw = _str(_get(descr, "ordertype", w / "descr"), w / "descr" / "ordertype")
    status_raw = _str(_get(obj, "status", w), w / "status")
    if side_raw not in ("buy", "sell"):
        raise (w / "descr" / "type").fail(f"is not buy/sell ({side_raw[:20]!r})")
    if status_raw not in _STATUS:
        raise (w / "status").fail(f"is not a known order status ({status_raw[:20]!r})")
    try:
        order_type = OrderType(type_raw)
    except ValueError:
        raise (w / "descr" / "ordertype").fail(
            f"is not an order type tradebot handles ({type_raw[:20]!r})"
        ) from None
    volume = decimal_field(_get(obj, "vol", w), w / "vol")
    filled = decimal_field(obj.get("vol_exec", "0"), w / "vol_exec")
    if filled > volume:
        raise (w / "vol_exec").fail(f"exceeds the order volume ({filled} > {volume})")
    price_raw = descr.get("price")
    price = decimal_field(price_raw, w / "descr" / "price") if price_raw not in (None, "", "0") else None
    avg_raw = obj.get("price")
    avg = decimal_field(avg_raw, w / "price") if avg_raw not in (None, "") and filled > 0 else None
    cl = obj.get("cl_ord_id")
    created = obj.get("opentm")
    return OrderInfo(
        client_order_id=_str(cl, w / "cl_ord_id") if cl is not None else None,
        exchange_order_id=txid,
        pair=info.pair,
        side=Side(side_raw),
        order_type=order_type,
        volume=volume,
        filled_volume=filled,
        status=_STATUS[status_raw],
        price=price,
        avg_fill_price=avg,
        fee=decimal_field(obj.get("fee", "0"), w / "fee"),
        created_at=timestamp(created, w / "opentm") if created not in (None, 0, "0") else None,
    )


def parse_orders(result: Any, registry: PairRegistry, source: str, key: str | None) -> list[OrderInfo]:
    """``{"open": {txid: order}}`` (key ``"open"``/``"closed"``) or ``{txid: order}`` (key None)."""
    where = _Where(source)
    orders = _obj(result, where)
    if key is not None:
        orders = _obj(_get(orders, key, where), where / key)
    return [parse_order(str(txid), data, registry, source) for txid, data in orders.items()]


def parse_history_page(result: Any, source: str, key: str) -> tuple[Mapping[str, Any], int]:
    """One page of ``ClosedOrders`` / ``TradesHistory``: the entries by id, and how many exist in all."""
    where = _Where(source)
    obj = _obj(result, where)
    return _obj(_get(obj, key, where), where / key), _int(obj.get("count", 0), where / "count")


def parse_trades(entries: Mapping[str, Any], registry: PairRegistry, source: str) -> list[Fill]:
    """``TradesHistory``'s ``trades`` as fills (their client order id is not part of a trade)."""
    fills = []
    for trade_id, data in entries.items():
        w = _Where(source) / str(trade_id)
        obj = _obj(data, w)
        pair_name = _str(_get(obj, "pair", w), w / "pair")
        info = registry.from_kraken(pair_name)
        if info is None:
            raise (w / "pair").fail(f"is a pair this client does not know ({pair_name[:20]!r})")
        side = _str(_get(obj, "type", w), w / "type")
        if side not in ("buy", "sell"):
            raise (w / "type").fail(f"is not buy/sell ({side[:20]!r})")
        fills.append(
            Fill(
                trade_id=str(trade_id),
                client_order_id=None,
                exchange_order_id=_str(_get(obj, "ordertxid", w), w / "ordertxid"),
                pair=info.pair,
                side=Side(side),
                price=decimal_field(_get(obj, "price", w), w / "price", positive=True),
                volume=decimal_field(_get(obj, "vol", w), w / "vol", positive=True),
                fee=decimal_field(obj.get("fee", "0"), w / "fee"),
                time=timestamp(_get(obj, "time", w), w / "time"),
            )
        )
    return fills


# --- WebSocket v2 --------------------------------------------------------------


def parse_ws_ticker(item: Any, registry: PairRegistry, now: datetime) -> Ticker:
    """One element of a v2 ``ticker`` message's ``data``."""
    where = _Where("ws/ticker")
    obj = _obj(item, where)
    symbol = _str(_get(obj, "symbol", where), where / "symbol")
    w = where / symbol
    info = registry.from_kraken(symbol)
    if info is None:
        raise (where / "symbol").fail(f"is a pair this client does not know ({symbol[:20]!r})")
    bid = decimal_field(_get(obj, "bid", w), w / "bid", positive=True)
    ask = decimal_field(_get(obj, "ask", w), w / "ask", positive=True)
    if bid > ask:
        raise w.fail(f"has a crossed book (bid {bid} > ask {ask})")
    ts = obj.get("timestamp")
    return Ticker(
        pair=info.pair,
        bid=bid,
        ask=ask,
        last=decimal_field(_get(obj, "last", w), w / "last", positive=True),
        volume=decimal_field(_get(obj, "volume", w), w / "volume"),
        time=timestamp(ts, w / "timestamp") if ts is not None else now,
    )


def parse_ws_ohlc(item: Any, registry: PairRegistry) -> Candle:
    """One element of a v2 ``ohlc`` message's ``data``."""
    where = _Where("ws/ohlc")
    obj = _obj(item, where)
    symbol = _str(_get(obj, "symbol", where), where / "symbol")
    w = where / symbol
    info = registry.from_kraken(symbol)
    if info is None:
        raise (where / "symbol").fail(f"is a pair this client does not know ({symbol[:20]!r})")
    o, h, low, c = (
        decimal_field(_get(obj, k, w), w / k, positive=True) for k in ("open", "high", "low", "close")
    )
    if h < max(o, c, low) or low > min(o, c):
        raise w.fail(f"has inconsistent OHLC (o={o} h={h} l={low} c={c})")
    return Candle(
        pair=info.pair,
        interval_min=_int(_get(obj, "interval", w), w / "interval"),
        open_time=timestamp(_get(obj, "interval_begin", w), w / "interval_begin"),
        open=o,
        high=h,
        low=low,
        close=c,
        vwap=decimal_field(obj.get("vwap", c), w / "vwap"),
        volume=decimal_field(_get(obj, "volume", w), w / "volume"),
        count=_int(obj.get("trades", 0), w / "trades"),
    )
