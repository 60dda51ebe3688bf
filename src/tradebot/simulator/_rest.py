"""Kraken spot REST: ``/0/public/<Method>`` (GET/POST) and ``/0/private/<Method>`` (POST)."""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import attrs
from aiohttp import web

from tradebot.exchanges.kraken.auth import verify
from tradebot.exchanges.kraken.fees import KRAKEN_FEES
from tradebot.simulator._account import INVALID, OrderParams, SimOrder, parse_order_params
from tradebot.simulator._catalog import PairInfo
from tradebot.simulator._faults import FaultRule
from tradebot.simulator._market import OHLC_INTERVALS, TickerStats
from tradebot.simulator._protocol import KrakenRejection, fmt_decimal
from tradebot.simulator._ratelimit import amend_age_penalty, edit_age_penalty, order_age_penalty

if TYPE_CHECKING:
    from tradebot.simulator._server import Simulator

__all__ = ["ENDPOINTS", "Endpoint", "RestApi"]

log = logging.getLogger(__name__)
Params = Mapping[str, str]
Handler = Callable[["Simulator", Params], "dict[str, Any] | Encoded"]
_PAGE = 50
_TICKER_ANSWERS_KEPT = 64
_TICKER_TEXT_KEPT = 256  # characters of a ``pair`` text worth keeping an answer for
_NO_FAULTS: Mapping[str, FaultRule] = MappingProxyType({})


@attrs.frozen
class Endpoint:
    """One REST method: its handler, whether it is private, and its REST-counter cost."""

    name: str
    handler: Handler
    private: bool
    cost: int = 1


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class Encoded(bytes):
    """A handler's result already encoded as JSON (for answers cached between market moves)."""

    __slots__ = ()


def kraken_body(errors: list[str], result: Any = None) -> bytes:
    if errors:
        return _json({"error": errors})
    if type(result) is Encoded:
        return b'{"error":[],"result":' + result + b"}"
    return _json({"error": [], "result": result})


_CLOUDFLARE = """<!DOCTYPE html>
<html lang="en-US"><head><title>api.kraken.com | {code}: {reason}</title>
<meta charset="UTF-8" /></head>
<body><div id="cf-wrapper"><div id="cf-error-details">
<h1><span class="cf-error-type">Error</span> <span class="cf-error-code">{code}</span></h1>
<h2 class="cf-subheadline">{reason}</h2>
<p>Cloudflare Ray ID: <strong class="font-semibold">{ray}</strong> &bull; Performance &amp; security by
Cloudflare</p></div></div></body></html>
"""


class RestApi:
    """Dispatches REST calls: faults, body parsing, auth, rate limits, then the handler."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def routes(self) -> list[web.RouteDef]:
        """One route per known method, then one for every other ``/0/public|private/...`` path.

        A known method's own route hands its :class:`Endpoint` straight to :meth:`serve`
        (aiohttp finds a plain path by one dictionary look-up); the catch-all answers
        unknown methods, and methods asked for under the wrong scope, as Kraken does.
        """
        own = [
            web.route(
                "*", f"/0/{'private' if e.private else 'public'}/{e.name}", functools.partial(self.serve, e)
            )
            for e in ENDPOINTS.values()
        ]
        return [*own, web.route("*", "/0/{scope:public|private}/{method}", self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A path no known method's route took: ``/0/<scope>/<method>``."""
        match = request.match_info
        method = match["method"]
        endpoint = ENDPOINTS.get(method)
        if endpoint is None or endpoint.private != (match["scope"] == "private"):
            self._sim.stats.requests[method[:64]] += 1
            return self._respond(kraken_body(["EGeneral:Unknown method"]), status=404)
        return await self.serve(endpoint, request)  # e.g. a path spelled with escapes

    async def serve(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        """Answer one call of ``endpoint``: faults, parameters, authentication, the handler."""
        sim = self._sim
        sim.stats.requests[endpoint.name] += 1
        if endpoint.private and request.method != "POST":
            return self._respond(kraken_body(["EGeneral:Invalid arguments"]), status=405)
        # a request without a body (a GET) has nothing to read: no coroutine for it
        raw = await request.read() if request.body_exists else b""
        params, parse_error = _parse_params(request, raw)
        if endpoint.name == "AddOrder" and params.get("cl_ord_id"):
            sim.stats.add_order_calls[params["cl_ord_id"]] += 1

        kinds: Mapping[str, FaultRule] = _NO_FAULTS
        faults = sim.faults.draw(endpoint.name, private=endpoint.private)
        if faults:
            latency = sum(float(f.value or 0) for f in faults if f.kind == "latency")
            if latency:
                await sim.wait(latency)
            kinds = {f.kind: f for f in faults}
            if "timeout" in kinds:
                await sim.wait(float(kinds["timeout"].value or 60))
                return self._drop(request)
            if "drop" in kinds:
                return self._drop(request)
            if "http5xx" in kinds:
                return self._cloudflare(int(kinds["http5xx"].value or 502))
            if "error" in kinds:
                return self._respond(kraken_body([str(kinds["error"].value)]))

        sim.housekeeping()
        try:
            if parse_error:
                raise KrakenRejection(parse_error)
            if endpoint.private:
                self._authenticate(request, raw, params, endpoint)
            result = endpoint.handler(sim, params)
            body = kraken_body([], result)
        except KrakenRejection as rejection:
            body = kraken_body([rejection.error])
        except Exception:  # a simulator bug must look like an exchange error, not a traceback page
            log.exception("simulator failed on %s", endpoint.name)
            body = kraken_body(["EGeneral:Internal error"])
        return self._after(request, body, kinds) if kinds else self._respond(body)

    # --- responses ------------------------------------------------------------

    def _after(self, request: web.Request, body: bytes, kinds: Mapping[str, FaultRule]) -> web.StreamResponse:
        if "drop_response" in kinds:
            return self._drop(request)
        if "malformed" in kinds:
            body = b'{"error":[],"result":{' + b"\x00<html>not json" + body[:10]
        elif "truncated" in kinds:
            body = body[: max(1, len(body) // 2)]
        return self._respond(body)

    @staticmethod
    def _respond(body: bytes, *, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")

    def _cloudflare(self, code: int) -> web.Response:
        reasons = {
            500: "Internal server error",
            502: "Bad gateway",
            503: "Service unavailable",
            504: "Gateway time-out",
            520: "Web server is returning an unknown error",
            521: "Web server is down",
            522: "Connection timed out",
            523: "Origin is unreachable",
            524: "A timeout occurred",
        }
        ray = f"{self._sim.stats.total():016x}"
        html = _CLOUDFLARE.format(code=code, reason=reasons.get(code, "Server error"), ray=ray)
        return web.Response(
            text=html,
            status=code,
            content_type="text/html",
            headers={"Server": "cloudflare", "CF-RAY": f"{ray}-AMS"},
        )

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection with no answer at all (the client sees a disconnect)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never reaches the client

    # --- auth and limits ------------------------------------------------------

    def _authenticate(self, request: web.Request, raw: bytes, params: Params, endpoint: Endpoint) -> None:
        sim = self._sim
        key = request.headers.get("API-Key", "")
        if not hmac.compare_digest(key.encode(), sim.api_key.encode()):
            raise KrakenRejection("EAPI:Invalid key")
        nonce_text = params.get("nonce", "")
        if not nonce_text.isdigit() or int(nonce_text) >= 2**64:
            raise KrakenRejection("EAPI:Invalid nonce")
        if not verify(
            request.path, nonce_text, raw.decode(), sim.api_secret, request.headers.get("API-Sign", "")
        ):
            raise KrakenRejection("EAPI:Invalid signature")
        nonce = int(nonce_text)
        if nonce <= sim.last_nonce.get(key, -1):
            raise KrakenRejection("EAPI:Invalid nonce")
        sim.last_nonce[key] = nonce
        if endpoint.cost and not sim.admit_rest_call(key, endpoint.cost):
            raise KrakenRejection("EAPI:Rate limit exceeded")


class ParamDict(dict[str, str]):
    """Request parameters as text, plus the JSON body's lists and objects as sent (``structured``).

    Every value is also available as text (a list joined with commas), as Kraken's form-encoded
    API reads it; AddOrderBatch and CancelOrderBatch read their ``orders`` from ``structured``.
    """

    structured: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.structured = {}


def _parse_params(request: web.Request, raw: bytes) -> tuple[ParamDict, str | None]:
    """Query + body parameters, and the Kraken error to answer when they make no sense."""
    params = ParamDict(dict(request.query.items()))
    if not raw:
        return params, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return params, INVALID
    if request.content_type == "application/json":
        try:
            data = json.loads(text)
        except ValueError:
            return params, INVALID
        if not isinstance(data, dict):
            return params, INVALID
        for key, value in data.items():
            params.structured[str(key)] = value
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            params[str(key)] = str(value)
        return params, None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return params, INVALID
    repeated: dict[str, list[str]] = {}
    for key, value in pairs:
        repeated.setdefault(key, []).append(value)
    for key, values in repeated.items():
        # ``txid=a&txid=b`` (a list sent with repeated keys) reads as ``a,b``
        params[key] = ",".join(values)
        if len(values) > 1:
            params.structured[key] = values
    return params, None


# --- public handlers ----------------------------------------------------------


def _now(sim: Simulator) -> datetime:
    return sim.clock.now().astimezone(UTC)


def _pairs_param(sim: Simulator, params: Params, *, required: bool) -> list[PairInfo]:
    text = params.get("pair", "").strip()
    if not text:
        if required:
            raise KrakenRejection(INVALID)
        return list(sim.catalog.pairs.values())
    pairs = []
    for name in text.split(","):
        pair = sim.catalog.pair(name)
        if pair is None:
            raise KrakenRejection("EQuery:Unknown asset pair")
        pairs.append(pair)
    return pairs


def _int_param(params: Params, name: str, default: int) -> int:
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise KrakenRejection(INVALID) from None


def _time_param(params: Params, name: str, default: float) -> float:
    """A unix time bound (Kraken accepts integer or fractional seconds)."""
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise KrakenRejection(INVALID) from None
    if not math.isfinite(value):
        raise KrakenRejection(INVALID)
    return value


def public_time(sim: Simulator, params: Params) -> dict[str, Any]:
    now = _now(sim)
    return {"unixtime": int(now.timestamp()), "rfc1123": now.strftime("%a, %d %b %y %H:%M:%S +0000")}


def public_system_status(sim: Simulator, params: Params) -> dict[str, Any]:
    return {"status": sim.status, "timestamp": _now(sim).strftime("%Y-%m-%dT%H:%M:%SZ")}


def public_assets(sim: Simulator, params: Params) -> dict[str, Any]:
    names = [n for n in params.get("asset", "").split(",") if n.strip()]
    assets = list(sim.catalog.assets.values())
    if names:
        assets = []
        for name in names:
            asset = sim.catalog.asset(name)
            if asset is None:
                raise KrakenRejection("EQuery:Unknown asset")
            assets.append(asset)
    return {
        a.kraken: {
            "aclass": "currency",
            "altname": a.altname,
            "decimals": a.decimals,
            "display_decimals": a.display_decimals,
            "status": "enabled",
        }
        for a in assets
    }


def _answer_keys(params: Params, pairs: list[PairInfo]) -> list[str]:
    """Kraken keys an answer by the pair's REST key, except a pair asked for by its ``BASE/QUOTE``
    name, which comes back under that name (clients look it up so)."""
    names = [n.strip() for n in params.get("pair", "").split(",") if n.strip()]
    if len(names) != len(pairs):
        return [p.key for p in pairs]
    return [name if "/" in name else p.key for name, p in zip(names, pairs, strict=True)]


def public_asset_pairs(sim: Simulator, params: Params) -> dict[str, Any]:
    result = {}
    pairs = _pairs_param(sim, params, required=False)
    keys = _answer_keys(params, pairs)
    if params.get("pair", "").strip() and any(sim.catalog.status(p) == "delisted" for p in pairs):
        raise KrakenRejection("EQuery:Unknown asset pair")
    for key, p in zip(keys, pairs, strict=True):
        if sim.catalog.status(p) == "delisted":
            continue  # Kraken stops listing a delisted pair
        result[key] = {
            "altname": p.altname,
            "wsname": p.wsname,
            "aclass_base": "currency",
            "base": p.base.kraken,
            "aclass_quote": "currency",
            "quote": p.quote.kraken,
            "lot": "unit",
            "cost_decimals": p.quote.decimals + 1,
            "pair_decimals": p.pair_decimals,
            "lot_decimals": p.lot_decimals,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": _fee_tiers(KRAKEN_FEES.taker),
            "fees_maker": _fee_tiers(KRAKEN_FEES.maker),
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": str(p.ordermin),
            "costmin": str(p.costmin),
            "tick_size": str(p.tick_size),
            "status": sim.catalog.status(p),
        }
    return result


def _fee_tiers(tiers: Any) -> list[list[float]]:
    return [[int(volume), float(pct)] for volume, pct in tiers]


def public_ticker(sim: Simulator, params: Params) -> Encoded:
    now = sim.clock.now()
    ts = int(now.timestamp())
    text = params.get("pair", "")
    # the whole answer to this ``pair`` text, while no pair in it moved and the second holds
    answers = sim.ticker_answers
    kept = answers.get(text)
    if kept is not None and kept[1] == (ts, [m.ticks for m in kept[0]]):
        return kept[2]
    rows = sim.ticker_rows
    members: dict[str, bytes] = {}  # a pair asked for twice is answered once, as a JSON object would
    markets = []
    for pair in _pairs_param(sim, params, required=False):
        market = sim.market[pair.key]
        version = market.version(ts)
        cached = rows.get(pair.key)
        if cached is None or cached[0] != version:
            # a row has no timestamp: it changes only when the market's version does
            row = _ticker_row(market.stats(now.astimezone(UTC)), pair.pair_decimals)
            cached = rows[pair.key] = (version, _json(pair.key) + b":" + _json(row))
        if pair.key not in members:
            markets.append(market)
        members[pair.key] = cached[1]
    body = Encoded(b"{" + b",".join(members.values()) + b"}")
    # bounded in entries and in key size, whatever pair texts callers send; once full, the
    # texts already kept are still refreshed
    if kept is not None or (len(answers) < _TICKER_ANSWERS_KEPT and len(text) <= _TICKER_TEXT_KEPT):
        answers[text] = (markets, (ts, [m.ticks for m in markets]), body)
    return body


def _ticker_row(s: TickerStats, d: int) -> dict[str, Any]:
    def px(value: Decimal) -> str:
        return fmt_decimal(value, d)

    return {
        "a": [px(s.ask), str(max(1, int(s.ask_qty))), fmt_decimal(s.ask_qty, 3)],
        "b": [px(s.bid), str(max(1, int(s.bid_qty))), fmt_decimal(s.bid_qty, 3)],
        "c": [px(s.last), fmt_decimal(s.last_qty, 8)],
        "v": [fmt_decimal(s.volume_today, 8), fmt_decimal(s.volume_24h, 8)],
        "p": [px(s.vwap_today), px(s.vwap_24h)],
        "t": [s.trades_today, s.trades_24h],
        "l": [px(s.low_today), px(s.low_24h)],
        "h": [px(s.high_today), px(s.high_24h)],
        "o": px(s.open_today),
    }


def public_ohlc(sim: Simulator, params: Params) -> dict[str, Any]:
    (pair,) = _pairs_param(sim, params, required=True)[:1]
    interval = _int_param(params, "interval", 1)
    if interval not in OHLC_INTERVALS:
        raise KrakenRejection(INVALID)
    since = _int_param(params, "since", 0)
    bars = list(sim.market[pair.key].candles[interval])
    d = pair.pair_decimals
    rows = [
        [
            b.open_time,
            fmt_decimal(b.open, d),
            fmt_decimal(b.high, d),
            fmt_decimal(b.low, d),
            fmt_decimal(b.close, d),
            fmt_decimal(b.vwap, d),
            fmt_decimal(b.volume, 8),
            b.count,
        ]
        for b in bars
        if b.open_time > since
    ]
    last = bars[-2].open_time if len(bars) > 1 else bars[-1].open_time
    return {pair.key: rows, "last": last}


def public_depth(sim: Simulator, params: Params) -> dict[str, Any]:
    (pair,) = _pairs_param(sim, params, required=True)[:1]
    count = _int_param(params, "count", 100)
    if not 1 <= count <= 500:
        raise KrakenRejection(INVALID)
    pm = sim.market[pair.key]
    ts = int(_now(sim).timestamp())
    d = pair.pair_decimals
    asks, bids = pm.depth(count)
    return {
        pair.key: {
            "asks": [[fmt_decimal(p, d), fmt_decimal(q, 3), ts] for p, q in asks],
            "bids": [[fmt_decimal(p, d), fmt_decimal(q, 3), ts] for p, q in bids],
        }
    }


def public_trades(sim: Simulator, params: Params) -> dict[str, Any]:
    """Recent public trades: ``[price, volume, time, b|s, m|l, misc, trade_id]``; ``since`` in ns."""
    (pair,) = _pairs_param(sim, params, required=True)[:1]
    since = _int_param(params, "since", 0)
    count = _int_param(params, "count", 1000)
    if not 1 <= count <= 1000 or since < 0:
        raise KrakenRejection(INVALID)
    d = pair.pair_decimals
    trades = [t for t in sim.market[pair.key].trades if int(t.time * 1e9) > since][:count]
    rows = [
        [
            fmt_decimal(t.price, d),
            fmt_decimal(t.qty, 8),
            round(t.time, 4),
            "b" if t.side == "buy" else "s",
            "l" if t.ordertype == "limit" else "m",
            "",
            t.trade_id,
        ]
        for t in trades
    ]
    last = int(trades[-1].time * 1e9) if trades else since
    return {pair.key: rows, "last": str(last)}


def public_spread(sim: Simulator, params: Params) -> dict[str, Any]:
    """Recent best bid/ask: ``[time, bid, ask]`` per market tick, ``since`` in seconds."""
    (pair,) = _pairs_param(sim, params, required=True)[:1]
    since = _int_param(params, "since", 0)
    d = pair.pair_decimals
    rows = [
        [int(t), fmt_decimal(b, d), fmt_decimal(a, d)]
        for t, b, a in sim.market[pair.key].spreads
        if t > since
    ]
    return {pair.key: rows, "last": rows[-1][0] if rows else since}


# --- private handlers ---------------------------------------------------------


def private_balance(sim: Simulator, params: Params) -> dict[str, Any]:
    return {
        sim.catalog.assets[code].kraken: fmt_decimal(amount, sim.catalog.assets[code].decimals)
        for code, amount in sim.account.balances.items()
    }


def private_balance_ex(sim: Simulator, params: Params) -> dict[str, Any]:
    holds = sim.account.holds(sim.market)
    result = {}
    for code, amount in sim.account.balances.items():
        places = sim.catalog.assets[code].decimals
        result[sim.catalog.assets[code].kraken] = {
            "balance": fmt_decimal(amount, places),
            "hold_trade": fmt_decimal(holds[code], places),
        }
    return result


def _trading_allowed(sim: Simulator) -> None:
    status = sim.status
    if status == "maintenance":
        raise KrakenRejection("EService:Unavailable")
    if status == "cancel_only":
        raise KrakenRejection("EService:Market in cancel_only mode")


def _parse_order(sim: Simulator, params: Mapping[str, Any], *, pair: PairInfo | None = None) -> OrderParams:
    order = parse_order_params(
        params,
        sim.catalog,
        last_price=lambda p: sim.market[p.key].last,
        now=sim.clock.now().timestamp(),
        pair=pair,
    )
    if sim.status == "post_only" and _takes_liquidity(sim, order):
        raise KrakenRejection("EService:Market in post_only mode")
    _pair_allows(sim, order)
    return order


def _takes_liquidity(sim: Simulator, order: OrderParams) -> bool:
    """An order that is not a post-only limit resting on the book."""
    pm = sim.market[order.pair.key]
    crosses = order.ordertype != "limit" or (
        order.price is not None and (pm.ask <= order.price if order.side == "buy" else pm.bid >= order.price)
    )
    return crosses and "post" not in order.oflags


def _pair_allows(sim: Simulator, order: OrderParams) -> None:
    """Refuse what the pair's ``AssetPairs`` status forbids, as Kraken does.

    ``cancel_only``: no new order; ``post_only``: none that would take liquidity;
    ``limit_only``: limit orders only; ``reduce_only``: on spot, only a sell of what the
    account holds of the base; ``delisted``: the pair is unknown to trading.
    """
    status = sim.catalog.status(order.pair)
    if status == "online":
        return
    if status == "delisted":
        raise KrakenRejection("EQuery:Unknown asset pair")
    if status == "cancel_only":
        raise KrakenRejection("EService:Market in cancel_only mode")
    if status == "post_only" and _takes_liquidity(sim, order):
        raise KrakenRejection("EService:Market in post_only mode")
    if status == "limit_only" and order.ordertype != "limit":
        raise KrakenRejection("EService:Market in limit_only mode")
    if status == "reduce_only":
        held = sim.account.balances.get(order.pair.base.code, Decimal(0))
        if order.side != "sell" or order.volume > held:
            raise KrakenRejection(f"{INVALID}:reduce_only")


def _describe(order: OrderParams) -> str:
    probe = SimOrder(
        "",
        order.pair,
        order.side,
        order.ordertype,
        order.volume,
        order.price,
        None,
        0,
        0,
        0,
        price2=order.price2,
        trail=order.trail,
        trail_limit=order.trail_limit,
    )
    return probe.description()


def private_add_order(sim: Simulator, params: Params) -> dict[str, Any]:
    _trading_allowed(sim)
    order = _parse_order(sim, params)
    if not order.validate and not sim.admit_order_call(order.pair.key, 1):
        raise KrakenRejection("EOrder:Rate limit exceeded")
    placed = sim.place_order(order)
    if placed is None:
        return {"descr": {"order": _describe(order)}}
    return {"descr": {"order": placed.description()}, "txid": [placed.txid]}


def _structured_list(params: Params, name: str) -> list[Any]:
    value = getattr(params, "structured", {}).get(name)
    if value is None:
        text = params.get(name, "")
        return [t for t in text.split(",") if t.strip()] if text else []
    if not isinstance(value, list):
        raise KrakenRejection(f"{INVALID}:{name}")
    return value


def private_add_order_batch(sim: Simulator, params: Params) -> dict[str, Any]:
    """2 to 15 orders on one pair; the whole batch is refused if one order is malformed."""
    _trading_allowed(sim)
    pair = sim.catalog.pair(params.get("pair", ""))
    if pair is None:
        raise KrakenRejection("EQuery:Unknown asset pair")
    raw_orders = _structured_list(params, "orders")
    if not 2 <= len(raw_orders) <= 15 or not all(isinstance(o, dict) for o in raw_orders):
        raise KrakenRejection(f"{INVALID}:orders")
    validate = params.get("validate", "false").lower() in ("true", "1")
    parsed = []
    for raw in raw_orders:
        fields = {
            str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in raw.items()
        }
        fields["validate"] = "true" if validate else "false"
        parsed.append(_parse_order(sim, fields, pair=pair))
    if not validate and not sim.admit_order_call(pair.key, math.ceil(len(parsed) / 2)):
        raise KrakenRejection("EOrder:Rate limit exceeded")
    results: list[dict[str, Any]] = []
    for order in parsed:
        try:
            placed = sim.place_order(order)
        except KrakenRejection as rejection:
            results.append({"error": rejection.error})
            continue
        if placed is None:
            results.append({"descr": {"order": _describe(order)}})
        else:
            entry: dict[str, Any] = {"txid": placed.txid, "descr": {"order": placed.description()}}
            if placed.cl_ord_id is not None:
                entry["cl_ord_id"] = placed.cl_ord_id
            results.append(entry)
    return {"orders": results}


def _one_open_order(sim: Simulator, params: Params, *, id_field: str = "txid") -> SimOrder:
    if "cl_ord_id" in params and id_field in params:
        raise KrakenRejection(f"{INVALID}:cl_ord_id")
    if "cl_ord_id" in params:
        found = sim.account.find(cl_ord_id=params["cl_ord_id"], orders=sim.account.open_orders())
    else:
        ref = params.get(id_field, "").strip()
        if not ref:
            raise KrakenRejection(f"{INVALID}:{id_field}")
        if ref.lstrip("-").isdigit():
            found = sim.account.find(userref=int(ref), orders=sim.account.open_orders())
        else:
            found = sim.account.find(txid=ref)
    if not found or not found[0].is_open:
        raise KrakenRejection("EOrder:Unknown order")
    return found[0]


def private_amend_order(sim: Simulator, params: Params) -> dict[str, Any]:
    """Change quantity or prices of an open order in place: same txid, queue priority kept."""
    _trading_allowed(sim)
    order = _one_open_order(sim, params)
    volume = _decimal_param(params, "order_qty", order.pair.lot_decimals)
    price = _price_param(params, "limit_price", order.pair)
    trigger = _price_param(params, "trigger_price", order.pair)
    if params.get("display_qty"):
        raise KrakenRejection(f"{INVALID}:display_qty")
    if volume is None and price is None and trigger is None:
        raise KrakenRejection(f"{INVALID}:order_qty")
    post_only = params.get("post_only", "false").lower() in ("true", "1")
    age = sim.clock.monotonic() - order.opened_mono
    if not sim.admit_order_call(order.pair.key, 1 + amend_age_penalty(age)):
        raise KrakenRejection("EOrder:Rate limit exceeded")
    now = sim.clock.now().timestamp()
    amend_id = sim.new_id("T")
    if order.ordertype in ("stop-loss-limit", "take-profit-limit"):
        sim.account.amend(
            order,
            sim.market,
            now=now,
            volume=volume,
            price=trigger,
            price2=price,
            post_only=post_only,
            amend_id=amend_id,
        )
    elif order.ordertype == "limit":
        if trigger is not None:
            raise KrakenRejection(f"{INVALID}:trigger_price")
        sim.account.amend(
            order, sim.market, now=now, volume=volume, price=price, post_only=post_only, amend_id=amend_id
        )
    else:
        if price is not None:
            raise KrakenRejection(f"{INVALID}:limit_price")
        sim.account.amend(order, sim.market, now=now, volume=volume, price=trigger, amend_id=amend_id)
    order.opened_mono = sim.clock.monotonic()
    return {"amend_id": amend_id}


def private_order_amends(sim: Simulator, params: Params) -> dict[str, Any]:
    txid = params.get("order_id", "").strip()
    order = sim.account.orders.get(txid)
    if order is None:
        raise KrakenRejection("EOrder:Unknown order")
    return {"amends": list(order.amend_log), "count": len(order.amend_log)}


def private_edit_order(sim: Simulator, params: Params) -> dict[str, Any]:
    """Kraken's EditOrder: the order is cancelled and a new one (new txid) placed in its stead."""
    _trading_allowed(sim)
    if "cl_ord_id" in params:
        raise KrakenRejection(f"{INVALID}:cl_ord_id")  # not supported by EditOrder on Kraken
    pair = sim.catalog.pair(params.get("pair", ""))
    if pair is None:
        raise KrakenRejection("EQuery:Unknown asset pair")
    order = _one_open_order(sim, params)
    if order.pair != pair:
        raise KrakenRejection("EOrder:Unknown order")
    if order.ordertype in ("trailing-stop", "trailing-stop-limit") or order.triggered:
        raise KrakenRejection("EOrder:Invalid order")
    fields: dict[str, str] = {
        "type": order.side,
        "ordertype": order.ordertype,
        "volume": params.get("volume") or fmt_decimal(order.volume, 8),
        "oflags": params.get("oflags", ",".join(sorted(order.oflags))),
        "userref": params.get("userref", str(order.userref)),
        "validate": params.get("validate", "false"),
    }
    if order.price is not None:
        fields["price"] = params.get("price") or fmt_decimal(order.price, pair.pair_decimals)
    if order.price2 is not None:
        fields["price2"] = params.get("price2") or fmt_decimal(order.price2, pair.pair_decimals)
    new = _parse_order(sim, fields, pair=pair)
    if new.volume <= order.vol_exec:
        raise KrakenRejection("EOrder:Invalid order")
    age = sim.clock.monotonic() - order.opened_mono
    if not new.validate and not sim.admit_order_call(pair.key, 1 + edit_age_penalty(age)):
        raise KrakenRejection("EOrder:Rate limit exceeded")
    remaining = attrs.evolve(new, volume=new.volume - order.vol_exec)
    if new.validate:
        return {"status": "ok", "descr": {"order": _describe(new)}}
    now = sim.clock.now().timestamp()
    sim.account.cancel(order, now=now, reason="Order replaced")
    try:
        placed = sim.place_order(remaining)
    except KrakenRejection:
        order.status, order.closetm, order.reason = "open", None, None  # nothing changes on refusal
        raise
    assert placed is not None
    d = pair.pair_decimals
    return {
        "status": "ok",
        "txid": placed.txid,
        "originaltxid": order.txid,
        "volume": fmt_decimal(new.volume, 8),
        "price": fmt_decimal(new.price or Decimal(0), d),
        "price2": fmt_decimal(new.price2 or Decimal(0), d),
        "orders_cancelled": 1,
        "descr": {"order": placed.description()},
    }


def _decimal_param(params: Params, name: str, places: int) -> Decimal | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise KrakenRejection(f"{INVALID}:{name}") from None
    if not value.is_finite() or value <= 0 or -value.as_tuple().exponent > places:  # type: ignore[operator]
        raise KrakenRejection(f"{INVALID}:{name}")
    return value


def _price_param(params: Params, name: str, pair: PairInfo) -> Decimal | None:
    value = _decimal_param(params, name, 18)
    if value is not None and -value.as_tuple().exponent > pair.pair_decimals:  # type: ignore[operator]
        raise KrakenRejection("EOrder:Invalid price")
    return value


def _orders_by_ref(sim: Simulator, params: Params) -> list[SimOrder]:
    """Orders named by CancelOrder's ``txid`` (a txid or a userref) or ``cl_ord_id``."""
    account = sim.account
    if "cl_ord_id" in params:
        if "txid" in params:
            raise KrakenRejection(INVALID)
        return account.find(cl_ord_id=params["cl_ord_id"])
    ref = params.get("txid", "").strip()
    if not ref:
        raise KrakenRejection(INVALID)
    if ref.lstrip("-").isdigit():
        return account.find(userref=int(ref))
    return account.find(txid=ref)


def private_cancel_order(sim: Simulator, params: Params) -> dict[str, Any]:
    if sim.status == "maintenance":
        raise KrakenRejection("EService:Unavailable")
    matches = _orders_by_ref(sim, params)
    if not matches:
        raise KrakenRejection("EOrder:Unknown order")
    now_mono = sim.clock.monotonic()
    count = 0
    for order in matches:
        if not order.is_open:
            continue
        cost = 1 + order_age_penalty(now_mono - order.opened_mono)
        if not sim.admit_order_call(order.pair.key, cost):
            raise KrakenRejection("EOrder:Rate limit exceeded")
        sim.account.cancel(order, now=sim.clock.now().timestamp())
        count += 1
    return {"count": count}


def private_cancel_order_batch(sim: Simulator, params: Params) -> dict[str, Any]:
    """Up to 50 orders by txid or userref (``orders``) and/or client id (``cl_ord_ids``)."""
    if sim.status == "maintenance":
        raise KrakenRejection("EService:Unavailable")
    refs: list[str] = []
    for item in _structured_list(params, "orders"):
        if isinstance(item, dict):
            item = item.get("txid")
        if not isinstance(item, (str, int)) or isinstance(item, bool) or not str(item).strip():
            raise KrakenRejection(f"{INVALID}:orders")
        refs.append(str(item).strip())
    client_ids = [str(c) for c in _structured_list(params, "cl_ord_ids")]
    if (not refs and not client_ids) or len(refs) + len(client_ids) > 50:
        raise KrakenRejection(f"{INVALID}:orders")
    account = sim.account
    targets: dict[str, SimOrder] = {}
    for ref in refs:
        found = account.find(userref=int(ref)) if ref.lstrip("-").isdigit() else account.find(txid=ref)
        targets.update((o.txid, o) for o in found if o.is_open)
    for client_id in client_ids:
        targets.update((o.txid, o) for o in account.find(cl_ord_id=client_id) if o.is_open)
    now_mono = sim.clock.monotonic()
    now = sim.clock.now().timestamp()
    for order in targets.values():
        # a batch cancel is accepted even past the limit (Kraken's documented exception)
        sim.admit_order_call(order.pair.key, order_age_penalty(now_mono - order.opened_mono), force=True)
        account.cancel(order, now=now)
    return {"count": len(targets)}


def private_cancel_all(sim: Simulator, params: Params) -> dict[str, Any]:
    if sim.status == "maintenance":
        raise KrakenRejection("EService:Unavailable")
    now = sim.clock.now().timestamp()
    orders = sim.account.open_orders()
    for order in orders:
        sim.account.cancel(order, now=now)
    return {"count": len(orders)}


def private_cancel_all_orders_after(sim: Simulator, params: Params) -> dict[str, Any]:
    """The dead man's switch: cancel every open order unless called again within ``timeout`` s."""
    text = params.get("timeout", "").strip()
    if not text.isdigit():
        raise KrakenRejection(f"{INVALID}:timeout")
    timeout = int(text)
    if timeout > 86400:
        raise KrakenRejection(f"{INVALID}:timeout")
    now = sim.clock.now()
    trigger = sim.arm_dead_mans_switch(timeout)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "currentTime": now.astimezone(UTC).strftime(stamp),
        "triggerTime": "0" if trigger is None else trigger.astimezone(UTC).strftime(stamp),
    }


def private_get_websockets_token(sim: Simulator, params: Params) -> dict[str, Any]:
    return {"token": sim.issue_ws_token(), "expires": 900}


def private_trade_balance(sim: Simulator, params: Params) -> dict[str, Any]:
    """Spot equity valued in ``asset`` (default ZUSD); no margin positions, so m, n, c, v are 0."""
    asset = sim.catalog.asset(params.get("asset", "ZUSD") or "ZUSD")
    if asset is None:
        raise KrakenRejection("EQuery:Unknown asset")
    total = Decimal(0)
    for code, amount in sim.account.balances.items():
        if amount:
            total += amount * sim.price_in(code, asset.code)
    places = asset.decimals
    zero = fmt_decimal(Decimal(0), places)
    equity = fmt_decimal(total, places)
    return {
        "eb": equity,
        "tb": equity,
        "m": zero,
        "uv": zero,
        "n": zero,
        "c": zero,
        "v": zero,
        "e": equity,
        "mf": equity,
    }


def private_trade_volume(sim: Simulator, params: Params) -> dict[str, Any]:
    """30-day USD volume of the account's trades, and the fee rates of the pairs asked for."""
    pairs = _pairs_param(sim, params, required=False) if params.get("pair", "").strip() else []
    since = sim.clock.now().timestamp() - 30 * 86400
    volume = Decimal(0)
    for trade in sim.account.trades.values():
        if trade["time"] >= since:
            pair = sim.catalog.pairs[trade["pair"]]
            volume += Decimal(trade["cost"]) * sim.price_in(pair.quote.code, "USD")
    # the fee tier the simulator was configured at, plus what this account traded
    volume += Decimal(sim.config.fee_volume)
    result: dict[str, Any] = {"currency": "ZUSD", "volume": fmt_decimal(volume, 4)}
    if pairs:
        fees: dict[str, Any] = {}
        fees_maker: dict[str, Any] = {}
        for pair in pairs:
            taker, maker = sim.account.taker_fee, sim.account.maker_fee
            for table, rate in ((fees, taker), (fees_maker, maker)):
                pct = fmt_decimal(rate * 100, 4)
                table[pair.key] = {
                    "fee": pct,
                    "minfee": pct,
                    "maxfee": pct,
                    "nextfee": None,
                    "nextvolume": None,
                    "tiervolume": fmt_decimal(Decimal(0), 4),
                }
        result["fees"] = fees
        result["fees_maker"] = fees_maker
    return result


def _ledger_filter(sim: Simulator, params: Params) -> list[tuple[str, dict[str, Any]]]:
    names = [n for n in params.get("asset", "").split(",") if n.strip() and n.strip().lower() != "all"]
    codes = set()
    for name in names:
        asset = sim.catalog.asset(name)
        if asset is None:
            raise KrakenRejection("EQuery:Unknown asset")
        codes.add(asset.kraken)
    kind = params.get("type", "all") or "all"
    known = (
        "all",
        "trade",
        "deposit",
        "withdrawal",
        "transfer",
        "margin",
        "rollover",
        "spend",
        "receive",
        "settled",
        "adjustment",
        "staking",
        "sale",
        "credit",
        "dividend",
    )
    if kind not in known:
        raise KrakenRejection(f"{INVALID}:type")
    start = _time_param(params, "start", -1.0)
    end = _time_param(params, "end", math.inf)
    entries = [
        (k, v)
        for k, v in sim.account.ledger.items()
        if (not codes or v["asset"] in codes) and kind in ("all", v["type"]) and start < v["time"] <= end
    ]
    entries.sort(key=lambda kv: kv[1]["time"], reverse=True)
    return entries


def private_ledgers(sim: Simulator, params: Params) -> dict[str, Any]:
    entries = _ledger_filter(sim, params)
    ofs = max(0, _int_param(params, "ofs", 0))
    result: dict[str, Any] = {"ledger": dict(entries[ofs : ofs + _PAGE])}
    if params.get("without_count", "false").lower() not in ("true", "1"):
        result["count"] = len(entries)
    return result


def private_query_ledgers(sim: Simulator, params: Params) -> dict[str, Any]:
    ids = [i.strip() for i in params.get("id", "").split(",") if i.strip()]
    if not ids or len(ids) > 20:
        raise KrakenRejection(f"{INVALID}:id")
    result = {}
    for entry_id in ids:
        if entry_id not in sim.account.ledger:
            raise KrakenRejection(f"{INVALID}:id")
        result[entry_id] = sim.account.ledger[entry_id]
    return result


def private_query_trades(sim: Simulator, params: Params) -> dict[str, Any]:
    txids = [t.strip() for t in params.get("txid", "").split(",") if t.strip()]
    if not txids or len(txids) > 20:
        raise KrakenRejection(f"{INVALID}:txid")
    result = {}
    for txid in txids:
        trade = sim.account.trades.get(txid)
        if trade is None:
            raise KrakenRejection(f"{INVALID}:txid")
        result[txid] = trade
    return result


def _filters(params: Params) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if params.get("cl_ord_id"):
        filters["cl_ord_id"] = params["cl_ord_id"]
    if params.get("userref"):
        filters["userref"] = _int_param(params, "userref", 0)
    return filters


def _wants_trades(params: Params) -> bool:
    return params.get("trades", "false").lower() in ("true", "1")


def private_open_orders(sim: Simulator, params: Params) -> dict[str, Any]:
    orders = sim.account.find(orders=sim.account.open_orders(), **_filters(params))
    return {"open": {o.txid: o.to_kraken(with_trades=_wants_trades(params)) for o in orders}}


def private_closed_orders(sim: Simulator, params: Params) -> dict[str, Any]:
    orders = sim.account.find(orders=sim.account.closed_orders(), **_filters(params))
    start = _time_param(params, "start", 0.0)
    end = _time_param(params, "end", math.inf)
    orders = [o for o in orders if o.closetm is not None and start < o.closetm <= end]
    orders.sort(key=lambda o: o.closetm or 0, reverse=True)
    ofs = max(0, _int_param(params, "ofs", 0))
    page = orders[ofs : ofs + _PAGE]
    return {
        "closed": {o.txid: o.to_kraken(with_trades=_wants_trades(params)) for o in page},
        "count": len(orders),
    }


def private_query_orders(sim: Simulator, params: Params) -> dict[str, Any]:
    filters = _filters(params)
    txids = [t.strip() for t in params.get("txid", "").split(",") if t.strip()]
    if not txids and not filters:
        raise KrakenRejection(INVALID)
    if len(txids) > 50:
        raise KrakenRejection(INVALID)
    account = sim.account
    if txids:
        found = []
        for txid in txids:
            if txid not in account.orders:
                raise KrakenRejection("EOrder:Invalid order")
            found.append(account.orders[txid])
        orders = account.find(orders=found, **filters)
    else:
        orders = account.find(**filters)
    return {o.txid: o.to_kraken(with_trades=_wants_trades(params)) for o in orders}


def private_trades_history(sim: Simulator, params: Params) -> dict[str, Any]:
    trades = sorted(sim.account.trades.items(), key=lambda kv: kv[1]["time"], reverse=True)
    start = _time_param(params, "start", 0.0)
    end = _time_param(params, "end", math.inf)
    trades = [(k, v) for k, v in trades if start < v["time"] <= end]
    ofs = max(0, _int_param(params, "ofs", 0))
    return {"trades": dict(trades[ofs : ofs + _PAGE]), "count": len(trades)}


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint("Time", public_time, False),
        Endpoint("SystemStatus", public_system_status, False),
        Endpoint("Assets", public_assets, False),
        Endpoint("AssetPairs", public_asset_pairs, False),
        Endpoint("Ticker", public_ticker, False),
        Endpoint("OHLC", public_ohlc, False),
        Endpoint("Depth", public_depth, False),
        Endpoint("Trades", public_trades, False),
        Endpoint("Spread", public_spread, False),
        Endpoint("Balance", private_balance, True),
        Endpoint("BalanceEx", private_balance_ex, True),
        # trading calls count on the per-pair matching-engine limiter instead
        Endpoint("AddOrder", private_add_order, True, cost=0),
        Endpoint("CancelOrder", private_cancel_order, True, cost=0),
        Endpoint("CancelAll", private_cancel_all, True, cost=0),
        Endpoint("AddOrderBatch", private_add_order_batch, True, cost=0),
        Endpoint("CancelOrderBatch", private_cancel_order_batch, True, cost=0),
        Endpoint("EditOrder", private_edit_order, True, cost=0),
        Endpoint("AmendOrder", private_amend_order, True, cost=0),
        Endpoint("OrderAmends", private_order_amends, True),
        Endpoint("CancelAllOrdersAfter", private_cancel_all_orders_after, True),
        Endpoint("GetWebSocketsToken", private_get_websockets_token, True),
        Endpoint("TradeBalance", private_trade_balance, True),
        Endpoint("TradeVolume", private_trade_volume, True),
        Endpoint("Ledgers", private_ledgers, True, cost=2),
        Endpoint("QueryLedgers", private_query_ledgers, True, cost=2),
        Endpoint("QueryTrades", private_query_trades, True, cost=2),
        Endpoint("OpenOrders", private_open_orders, True),
        Endpoint("ClosedOrders", private_closed_orders, True),
        Endpoint("QueryOrders", private_query_orders, True),
        Endpoint("TradesHistory", private_trades_history, True, cost=2),
    )
}
