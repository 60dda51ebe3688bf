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
from tradebot.exchanges.simulator._account import INVALID, SimOrder, parse_order_params
from tradebot.exchanges.simulator._catalog import PairInfo
from tradebot.exchanges.simulator._faults import FaultRule
from tradebot.exchanges.simulator._market import OHLC_INTERVALS, TickerStats
from tradebot.exchanges.simulator._protocol import KrakenRejection, fmt_decimal, quantize
from tradebot.exchanges.simulator._ratelimit import order_age_penalty

if TYPE_CHECKING:
    from tradebot.exchanges.simulator._server import Simulator

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
            web.route("*", f"/0/{'private' if e.private else 'public'}/{e.name}", functools.partial(self.serve, e))
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


def _parse_params(request: web.Request, raw: bytes) -> tuple[dict[str, str], str | None]:
    """Query + body parameters, and the Kraken error to answer when they make no sense."""
    params: dict[str, str] = {k: v for k, v in request.query.items()}
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
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            params[str(key)] = str(value)
        return params, None
    try:
        params.update(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        return params, INVALID
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


def public_asset_pairs(sim: Simulator, params: Params) -> dict[str, Any]:
    result = {}
    for p in _pairs_param(sim, params, required=False):
        result[p.key] = {
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


def private_trade_volume(sim: Simulator, params: Params) -> dict[str, Any]:
    """The account's 30-day volume and its fee per pair (``pair`` asked for, all otherwise)."""
    pairs = _pairs_param(sim, params, required=False) if params.get("pair", "").strip() else []
    taker = sim.account.taker_fee * 100
    maker = sim.account.maker_fee * 100

    def tier(pct: Decimal) -> dict[str, str | None]:
        return {"fee": f"{pct:.4f}", "nextfee": None, "tiervolume": None, "nextvolume": None}

    return {
        "currency": "ZUSD",
        "volume": f"{sim.config.fee_volume:.4f}",
        "fees": {p.key: tier(taker) for p in pairs},
        "fees_maker": {p.key: tier(maker) for p in pairs},
    }


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
    asks, bids = [], []
    for level in range(count):
        step = pair.tick_size * (level * (level + 1) // 2 + level)
        size = quantize(pair.trade_size * (3 + (level * 7919 + pm.ticks) % 17), pair.lot_decimals)
        asks.append([fmt_decimal(pm.ask + step, d), fmt_decimal(size, 3), ts])
        bids.append([fmt_decimal(pm.bid - step, d), fmt_decimal(size, 3), ts])
    return {pair.key: {"asks": asks, "bids": bids}}


# --- private handlers ---------------------------------------------------------


def private_balance(sim: Simulator, params: Params) -> dict[str, Any]:
    return {
        sim.catalog.assets[code].kraken: fmt_decimal(amount, sim.catalog.assets[code].decimals)
        for code, amount in sim.account.balances.items()
    }


def private_balance_ex(sim: Simulator, params: Params) -> dict[str, Any]:
    holds = sim.account.holds()
    result = {}
    for code, amount in sim.account.balances.items():
        places = sim.catalog.assets[code].decimals
        result[sim.catalog.assets[code].kraken] = {
            "balance": fmt_decimal(amount, places),
            "hold_trade": fmt_decimal(holds[code], places),
        }
    return result


def private_add_order(sim: Simulator, params: Params) -> dict[str, Any]:
    status = sim.status
    if status == "maintenance":
        raise KrakenRejection("EService:Unavailable")
    if status == "cancel_only":
        raise KrakenRejection("EService:Market in cancel_only mode")
    order = parse_order_params(params, sim.catalog)
    if status == "post_only":
        pm = sim.market[order.pair.key]
        crosses = order.price is None or (
            pm.ask <= order.price if order.side == "buy" else pm.bid >= order.price
        )
        if crosses:
            raise KrakenRejection("EService:Market in post_only mode")
    if not order.validate and not sim.admit_order_call(order.pair.key, 1):
        raise KrakenRejection("EOrder:Rate limit exceeded")
    placed = sim.place_order(order)
    if placed is None:
        probe = SimOrder(
            "", order.pair, order.side, order.ordertype, order.volume, order.price, None, 0, 0, 0
        )
        return {"descr": {"order": probe.description()}}
    return {"descr": {"order": placed.description()}, "txid": [placed.txid]}


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


def private_cancel_all(sim: Simulator, params: Params) -> dict[str, Any]:
    if sim.status == "maintenance":
        raise KrakenRejection("EService:Unavailable")
    now = sim.clock.now().timestamp()
    orders = sim.account.open_orders()
    for order in orders:
        sim.account.cancel(order, now=now)
    return {"count": len(orders)}


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
        Endpoint("Balance", private_balance, True),
        Endpoint("BalanceEx", private_balance_ex, True),
        # trading calls count on the per-pair matching-engine limiter instead
        Endpoint("AddOrder", private_add_order, True, cost=0),
        Endpoint("CancelOrder", private_cancel_order, True, cost=0),
        Endpoint("CancelAll", private_cancel_all, True, cost=0),
        Endpoint("OpenOrders", private_open_orders, True),
        Endpoint("ClosedOrders", private_closed_orders, True),
        Endpoint("QueryOrders", private_query_orders, True),
        Endpoint("TradesHistory", private_trades_history, True, cost=2),
        Endpoint("TradeVolume", private_trade_volume, True),
    )
}
