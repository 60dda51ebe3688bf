"""The simulated account: balances, orders, matching against the simulated book, trade history.

Order types: ``market``, ``limit``, ``stop-loss``, ``take-profit``, ``stop-loss-limit``,
``take-profit-limit``, ``trailing-stop`` and ``trailing-stop-limit``; conditional orders trigger
on the simulated last trade price. Flags: ``post`` (a post-only order that would take is
cancelled with reason "Post only order"), ``fciq``/``fcib`` (the fee is charged in the quote or
the base currency; with neither, as Kraken documents: quote when buying, base when selling),
``nompp``; time in force ``GTC``, ``IOC`` and ``GTD`` (``expiretm``), and a
delayed start (``starttm``). A taker order walks the simulated book level by level, so large
orders fill at several prices and a limit order fills partly and rests with the remainder; a
resting order the market crosses fills at most the size shown at the best level per tick.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from tradebot.exchanges.kraken.fees import KRAKEN_FEES
from tradebot.simulator._catalog import Catalog, PairInfo
from tradebot.simulator._market import Market, PairMarket
from tradebot.simulator._protocol import KrakenRejection, fmt_decimal, quantize

__all__ = [
    "CONDITIONAL_TYPES",
    "DUPLICATE_ORDER",
    "ORDER_TYPES",
    "Account",
    "OrderParams",
    "SimOrder",
    "parse_order_params",
]

TAKER_FEE = KRAKEN_FEES.taker_pct() / 100
MAKER_FEE = KRAKEN_FEES.maker_pct() / 100
"""Fees (fractions) of an account at the first tier of Kraken's schedule: the default."""
INVALID = "EGeneral:Invalid arguments"
DUPLICATE_ORDER = "EOrder:Duplicate order"
"""Sent when ``cl_ord_id`` matches an open order's (Kraken documents the check, not the text)."""
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_MAX_CL_ORD_ID = 64
_BOOK_LEVELS = 500
ORDER_TYPES = (
    "market",
    "limit",
    "stop-loss",
    "take-profit",
    "stop-loss-limit",
    "take-profit-limit",
    "trailing-stop",
    "trailing-stop-limit",
)
CONDITIONAL_TYPES = frozenset(ORDER_TYPES[2:])
_FLAGS = frozenset({"post", "fcib", "fciq", "nompp", "viqc"})
_TIME_IN_FORCE = ("GTC", "IOC", "GTD")
Listener = Callable[[str, "SimOrder | None", "dict[str, Any] | None"], None]


def invalid(field: str) -> KrakenRejection:
    """``EGeneral:Invalid arguments:<field>``, as Kraken names the offending argument."""
    return KrakenRejection(f"{INVALID}:{field}")


@attrs.frozen
class Offset:
    """A relative price: ``+50``, ``-1.5%`` (Kraken's ``+``/``-`` prefix and ``%`` suffix)."""

    sign: int  # +1, -1, or 0 when unsigned
    amount: Decimal
    percent: bool

    def text(self) -> str:
        prefix = {1: "+", -1: "-", 0: ""}[self.sign]
        return f"{prefix}{self.amount}{'%' if self.percent else ''}"

    def of(self, reference: Decimal) -> Decimal:
        """The absolute distance this offset means from ``reference``."""
        return reference * self.amount / 100 if self.percent else self.amount


def _decimal(text: str | None, field: str) -> Decimal:
    if text is None:
        raise invalid(field)
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise invalid(field) from None
    if not value.is_finite() or value <= 0:
        raise invalid(field)
    return value


def _offset(text: str | None, field: str) -> Offset:
    if text is None or not str(text).strip():
        raise invalid(field)
    raw = str(text).strip()
    sign = 0
    if raw[0] in "+-":
        sign = 1 if raw[0] == "+" else -1
        raw = raw[1:]
    percent = raw.endswith("%")
    if percent:
        raw = raw[:-1]
    return Offset(sign, _decimal(raw, field), percent)


def _time_spec(text: str | None, field: str, now: float) -> float | None:
    """``0``/absent = none; ``+<n>`` = n seconds from now; otherwise a unix time."""
    if text is None or str(text).strip() in ("", "0"):
        return None
    raw = str(text).strip()
    try:
        value = now + float(raw[1:]) if raw.startswith("+") else float(raw)
    except ValueError:
        raise invalid(field) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise invalid(field)
    return value


def _places(value: Decimal) -> int:
    return max(0, -value.as_tuple().exponent)  # type: ignore[operator]


def _bool(text: Any, field: str) -> bool:
    raw = str(text).strip().lower()
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0", ""):
        return False
    raise invalid(field)


@attrs.frozen
class OrderParams:
    """A validated order request (AddOrder, AddOrderBatch, EditOrder, WebSocket add_order)."""

    pair: PairInfo
    side: str
    ordertype: str
    volume: Decimal
    price: Decimal | None  # limit price, or trigger price of a stop/take-profit
    cl_ord_id: str | None
    userref: int
    validate: bool
    price2: Decimal | None = None  # limit price of a stop-loss-limit / take-profit-limit
    trail: Offset | None = None  # trigger offset of a trailing stop
    trail_limit: Offset | None = None  # limit offset of a trailing-stop-limit
    oflags: frozenset[str] = frozenset()
    timeinforce: str = "GTC"
    expiretm: float | None = None
    starttm: float | None = None
    trigger: str = "last"
    displayvol: Decimal | None = None


def parse_order_params(
    params: Mapping[str, Any],
    catalog: Catalog,
    *,
    last_price: Callable[[PairInfo], Decimal] | None = None,
    now: float = 0.0,
    pair: PairInfo | None = None,
) -> OrderParams:
    """Validate AddOrder's fields in Kraken's order: arguments, pair, then order rules.

    ``last_price`` resolves relative prices (``+5``, ``-1%``) of non-trailing orders; ``pair``
    is given when the pair comes from elsewhere (AddOrderBatch's one ``pair``).
    """
    side = params.get("type", "")
    ordertype = params.get("ordertype", "")
    if side not in ("buy", "sell"):
        raise invalid("type")
    if ordertype not in ORDER_TYPES:
        raise invalid("ordertype")
    if "cl_ord_id" in params and "userref" in params:
        raise invalid("cl_ord_id")
    cl_ord_id = params.get("cl_ord_id")
    if cl_ord_id is not None:
        cl_ord_id = str(cl_ord_id)
        if not (0 < len(cl_ord_id) <= _MAX_CL_ORD_ID and cl_ord_id.isprintable()):
            raise invalid("cl_ord_id")
    userref = 0
    if "userref" in params:
        try:
            userref = int(params["userref"])
        except (TypeError, ValueError):
            raise invalid("userref") from None
        if not -(2**31) <= userref < 2**31:
            raise invalid("userref")
    if pair is None:
        pair = catalog.pair(str(params.get("pair", "")))
        if pair is None:
            raise KrakenRejection("EQuery:Unknown asset pair")
    volume = _decimal(params.get("volume"), "volume")
    oflags = frozenset(f.strip() for f in str(params.get("oflags", "")).split(",") if f.strip())
    if not oflags <= _FLAGS or {"fcib", "fciq"} <= oflags:
        raise invalid("oflags")
    if "viqc" in oflags and ordertype != "market":
        raise invalid("oflags")  # volume in quote currency: market orders only
    if _places(volume) > (pair.quote.decimals if "viqc" in oflags else pair.lot_decimals):
        raise invalid("volume")
    if "post" in oflags and ordertype != "limit":
        raise invalid("oflags")
    timeinforce = str(params.get("timeinforce", "GTC")).upper() or "GTC"
    if timeinforce not in _TIME_IN_FORCE:
        raise invalid("timeinforce")
    if timeinforce == "IOC" and ("post" in oflags or ordertype in CONDITIONAL_TYPES):
        raise invalid("timeinforce")
    expiretm = _time_spec(params.get("expiretm"), "expiretm", now)
    if (timeinforce == "GTD") != (expiretm is not None):
        raise invalid("expiretm")
    if expiretm is not None and expiretm <= now:
        raise invalid("expiretm")
    starttm = _time_spec(params.get("starttm"), "starttm", now)
    if starttm is not None and starttm <= now:
        starttm = None
    trigger = str(params.get("trigger", "last")) or "last"
    if trigger not in ("last", "index"):
        raise invalid("trigger")
    if _bool(params.get("reduce_only", "false"), "reduce_only"):
        raise invalid("reduce_only")  # reduce-only applies to margin positions only
    displayvol = None
    if params.get("displayvol") not in (None, ""):
        raise invalid("displayvol")  # iceberg orders: not served (see README)
    if any(str(k).startswith("close") for k in params):
        raise invalid("close")  # conditional close orders: not served (see README)
    deadline = params.get("deadline")
    if deadline not in (None, ""):
        try:
            when = datetime.fromisoformat(str(deadline).replace("Z", "+00:00"))
        except ValueError:
            raise invalid("deadline") from None
        if when.tzinfo is None:
            raise invalid("deadline")
        if when.timestamp() < now:
            raise KrakenRejection("EService:Deadline elapsed")

    def absolute(text: Any, field: str) -> Decimal:
        offset = _offset(text, field)
        if offset.sign == 0 and not offset.percent:
            value = offset.amount
        else:
            if last_price is None or offset.sign == 0:
                raise invalid(field)
            last = last_price(pair)
            value = last + offset.sign * offset.of(last)
            value = quantize(value, pair.pair_decimals)
        if _places(value) > pair.pair_decimals:
            raise KrakenRejection("EOrder:Invalid price")
        if value <= 0:
            raise invalid(field)
        return value

    price: Decimal | None = None
    price2: Decimal | None = None
    trail: Offset | None = None
    trail_limit: Offset | None = None
    if ordertype in ("trailing-stop", "trailing-stop-limit"):
        trail = _offset(params.get("price"), "price")
        if trail.sign != 1:
            raise invalid("price")  # Kraken requires the '+' prefix on a trailing offset
        if not trail.percent and _places(trail.amount) > pair.pair_decimals:
            raise KrakenRejection("EOrder:Invalid price")
        if ordertype == "trailing-stop-limit":
            trail_limit = _offset(params.get("price2"), "price2")
            if trail_limit.sign == 0:
                raise invalid("price2")
    elif ordertype != "market":
        price = absolute(params.get("price"), "price")
        if ordertype in ("stop-loss-limit", "take-profit-limit"):
            price2 = absolute(params.get("price2"), "price2")
    if "viqc" not in oflags and volume < pair.ordermin:
        raise KrakenRejection("EOrder:Order minimum not met")
    validate = _bool(params.get("validate", "false"), "validate")
    return OrderParams(
        pair,
        side,
        ordertype,
        volume,
        price,
        cl_ord_id,
        userref,
        validate,
        price2=price2,
        trail=trail,
        trail_limit=trail_limit,
        oflags=oflags,
        timeinforce=timeinforce,
        expiretm=expiretm,
        starttm=starttm,
        trigger=trigger,
        displayvol=displayvol,
    )


@attrs.define
class SimOrder:
    """One order on the simulated exchange."""

    txid: str
    pair: PairInfo
    side: str
    ordertype: str
    volume: Decimal
    price: Decimal | None
    cl_ord_id: str | None
    userref: int
    opentm: float
    opened_mono: float
    status: str = "open"
    vol_exec: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    closetm: float | None = None
    reason: str | None = None
    trades: list[str] = attrs.Factory(list)
    price2: Decimal | None = None
    trail: Offset | None = None
    trail_limit: Offset | None = None
    oflags: frozenset[str] = frozenset()
    timeinforce: str = "GTC"
    expiretm: float | None = None
    starttm: float | None = None
    trigger: str = "last"
    triggered: bool = False
    stopprice: Decimal | None = None  # the trigger level, once known (trailing: moves with the market)
    limitprice: Decimal | None = None  # the limit a triggered *-limit order rests at
    extreme: Decimal | None = None  # best last price since placement (trailing stops)
    amends: int = 0
    amend_log: list[dict[str, Any]] = attrs.Factory(list)

    def amend_entry(self, amend_id: str, amend_type: str, now: float) -> dict[str, Any]:
        """One row of OrderAmends: the order's quantities and prices as they are now."""
        d = self.pair.pair_decimals
        return {
            "amend_id": amend_id,
            "amend_type": amend_type,
            "order_qty": fmt_decimal(self.volume, 8),
            "remaining_qty": fmt_decimal(self.remaining, 8),
            "limit_price": fmt_decimal(self.working_limit() or self.price2 or Decimal(0), d),
            "trigger_price": fmt_decimal(self.stopprice or Decimal(0), d),
            "post_only": self.post_only,
            "timestamp": int(now * 1000),
        }

    @property
    def is_open(self) -> bool:
        return self.status in ("pending", "open")

    @property
    def remaining(self) -> Decimal:
        return self.volume - self.vol_exec

    @property
    def post_only(self) -> bool:
        return "post" in self.oflags

    @property
    def fee_in_base(self) -> bool:
        """The fee is charged in the base currency: ``fcib``, or no preference on a sell."""
        return "fcib" in self.oflags or ("fciq" not in self.oflags and self.side == "sell")

    def working_limit(self) -> Decimal | None:
        """The price limit the order trades at now: None = market (any price)."""
        if self.ordertype == "limit":
            return self.price
        if self.ordertype in CONDITIONAL_TYPES and self.triggered:
            return self.limitprice
        return None

    def description(self) -> str:
        vol = fmt_decimal(self.volume, 8)
        d = self.pair.pair_decimals
        kind = self.ordertype
        if kind == "market":
            where = "market"
        elif kind == "limit":
            where = f"limit {fmt_decimal(self.price or Decimal(0), d)}"
        elif kind in ("trailing-stop", "trailing-stop-limit"):
            assert self.trail is not None
            where = f"{kind} {self.trail.text()}"
            if self.trail_limit is not None:
                where += f" -> limit {self.trail_limit.text()}"
        else:
            where = f"{kind} {fmt_decimal(self.price or Decimal(0), d)}"
            if self.price2 is not None:
                where += f" -> limit {fmt_decimal(self.price2, d)}"
        return f"{self.side} {vol} {self.pair.altname} @ {where}"

    def flags_text(self) -> str:
        flags = set(self.oflags)
        if not flags & {"fcib", "fciq"}:
            flags.add(
                "fcib" if self.fee_in_base else "fciq"
            )  # Kraken's default: quote if buying, base if selling
        order = ["post", "fcib", "fciq", "nompp", "viqc"]
        return ",".join(f for f in order if f in flags)

    def to_kraken(self, *, with_trades: bool = False) -> dict[str, Any]:
        """The order as OpenOrders / ClosedOrders / QueryOrders describe it."""
        quote_places = self.pair.quote.decimals + 1
        d = self.pair.pair_decimals
        if self.trail is not None:
            descr_price = self.trail.text()
            descr_price2 = self.trail_limit.text() if self.trail_limit is not None else "0"
        else:
            descr_price = fmt_decimal(self.price or Decimal(0), d)
            descr_price2 = fmt_decimal(self.price2, d) if self.price2 is not None else "0"
        entry: dict[str, Any] = {
            "refid": None,
            "userref": self.userref,
            "cl_ord_id": self.cl_ord_id,
            "status": self.status,
            "opentm": self.opentm,
            "starttm": self.starttm or 0,
            "expiretm": self.expiretm or 0,
            "descr": {
                "pair": self.pair.altname,
                "type": self.side,
                "ordertype": self.ordertype,
                "price": descr_price,
                "price2": descr_price2,
                "leverage": "none",
                "order": self.description(),
                "close": "",
            },
            "vol": fmt_decimal(self.volume, 8),
            "vol_exec": fmt_decimal(self.vol_exec, 8),
            "cost": fmt_decimal(self.cost, quote_places),
            "fee": fmt_decimal(self.fee, quote_places),
            "price": fmt_decimal(self.avg_price, quote_places),
            "stopprice": fmt_decimal(self.stopprice or Decimal(0), d),
            "limitprice": fmt_decimal(self.limitprice or Decimal(0), d),
            "misc": "",
            "oflags": self.flags_text(),
            "timeinforce": self.timeinforce,
        }
        if self.amends:
            entry["amended"] = True
        if self.closetm is not None:
            entry["closetm"] = self.closetm
            entry["reason"] = self.reason
        if with_trades and self.trades:
            entry["trades"] = list(self.trades)
        return entry


def _from_params(txid: str, params: OrderParams, now: float, mono: float) -> SimOrder:
    return SimOrder(
        txid=txid,
        pair=params.pair,
        side=params.side,
        ordertype=params.ordertype,
        volume=params.volume,
        price=params.price,
        cl_ord_id=params.cl_ord_id,
        userref=params.userref,
        opentm=now,
        opened_mono=mono,
        status="pending" if params.starttm is not None else "open",
        price2=params.price2,
        trail=params.trail,
        trail_limit=params.trail_limit,
        oflags=params.oflags,
        timeinforce=params.timeinforce,
        expiretm=params.expiretm,
        starttm=params.starttm,
        trigger=params.trigger,
    )


class Account:
    """Balances, orders, fills and ledger of the one simulated account.

    Every method runs without awaiting, so a request sees and changes the account
    atomically with respect to other requests and to market ticks. ``listeners`` hear every
    order event (``new``, ``trade``, ``filled``, ``canceled``, ``expired``, ``amended``,
    ``triggered``) and every ledger entry (``ledger``), as the WebSocket private channels need.
    """

    def __init__(
        self,
        catalog: Catalog,
        balances: Mapping[str, Decimal],
        rng: random.Random,
        *,
        opened_at: float = 0.0,
        taker_fee: Decimal = TAKER_FEE,
        maker_fee: Decimal = MAKER_FEE,
    ) -> None:
        self.catalog = catalog
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.balances: dict[str, Decimal] = {code: Decimal(0) for code in catalog.assets}
        self.orders: dict[str, SimOrder] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.ledger: dict[str, dict[str, Any]] = {}
        self.orders_created: Counter[str] = Counter()  # per cl_ord_id
        self.listeners: list[Listener] = []
        self._rng = rng
        self._trade_seq = 0
        for code, amount in balances.items():
            asset = catalog.asset(code)
            if asset is None:
                raise ValueError(f"unknown asset in starting balances: {code!r}")
            self.balances[asset.code] = Decimal(amount)
            if amount:
                self._ledger_entry(
                    asset.code, Decimal(amount), Decimal(0), "deposit", self._new_id("Q"), opened_at
                )

    def _emit(self, event: str, order: SimOrder, detail: dict[str, Any] | None = None) -> None:
        for listener in list(self.listeners):
            listener(event, order, detail)

    # --- ids and lookups ------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        chars = "".join(self._rng.choice(_ID_CHARS) for _ in range(16))
        return f"{prefix}{chars[:5]}-{chars[5:10]}-{chars[10:]}"

    def open_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.is_open]

    def closed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.is_open]

    def find(
        self,
        *,
        txid: str | None = None,
        cl_ord_id: str | None = None,
        userref: int | None = None,
        orders: Iterable[SimOrder] | None = None,
    ) -> list[SimOrder]:
        """Orders matching every given criterion (all orders when none is given)."""
        found = []
        for order in self.orders.values() if orders is None else orders:
            if txid is not None and order.txid != txid:
                continue
            if cl_ord_id is not None and order.cl_ord_id != cl_ord_id:
                continue
            if userref is not None and order.userref != userref:
                continue
            found.append(order)
        return found

    # --- funds ----------------------------------------------------------------

    @staticmethod
    def _hold_price(order: SimOrder, pm: PairMarket) -> Decimal:
        limit = order.working_limit()
        if limit is not None:
            return limit
        if order.price2 is not None:
            return order.price2
        if order.price is not None:
            return order.price
        return pm.ask  # market and trailing orders: what they would pay now

    def holds(self, market: Market | None = None) -> dict[str, Decimal]:
        """Funds reserved by open orders, per asset."""
        held: dict[str, Decimal] = {code: Decimal(0) for code in self.balances}
        for order in self.open_orders():
            remaining = order.remaining
            if order.side == "buy":
                price = (
                    self._hold_price(order, market[order.pair.key])
                    if market is not None
                    else (order.working_limit() or order.price2 or order.price or order.avg_price)
                )
                held[order.pair.quote.code] += remaining * price * (1 + self.taker_fee)
            else:
                held[order.pair.base.code] += (
                    remaining * (1 + self.taker_fee) if order.fee_in_base else remaining
                )
        return held

    def available(self, asset: str, market: Market | None = None) -> Decimal:
        return self.balances[asset] - self.holds(market)[asset]

    # --- orders ---------------------------------------------------------------

    @staticmethod
    def sweep(
        pm: PairMarket, side: str, volume: Decimal, limit: Decimal | None
    ) -> list[tuple[Decimal, Decimal]]:
        """The (price, qty) fills a taker order of ``volume`` gets against the simulated book."""
        asks, bids = pm.depth(_BOOK_LEVELS)
        levels = asks if side == "buy" else bids
        fills = []
        left = volume
        for price, size in levels:
            if left <= 0:
                break
            if limit is not None and (price > limit if side == "buy" else price < limit):
                break
            qty = min(left, size)
            fills.append((price, qty))
            left -= qty
        return fills

    def check(self, params: OrderParams, market: Market) -> None:
        """Kraken's order rules that depend on the account and the market (no change made)."""
        pair = params.pair
        pm = market[pair.key]
        if params.ordertype in ("market", "limit") and params.starttm is None:
            limit = params.price if params.ordertype == "limit" else None
            fills = self.sweep(pm, params.side, params.volume, limit)
            filled = sum((q for _, q in fills), Decimal(0))
            taker_cost = sum((p * q for p, q in fills), Decimal(0))
            rest_price = params.price if params.price is not None else pm.ask
            estimate = taker_cost + (params.volume - filled) * rest_price
        else:
            reference = params.price2 or params.price or (pm.ask if params.side == "buy" else pm.bid)
            estimate = params.volume * reference
        if (
            params.volume * (params.price2 or params.price or pm.bid) < pair.costmin
            or estimate < pair.costmin
        ):
            raise KrakenRejection("EOrder:Cost minimum not met")
        if params.side == "buy":
            if self.available(pair.quote.code, market) < estimate * (1 + self.taker_fee):
                raise KrakenRejection("EOrder:Insufficient funds")
        else:
            base_fee = "fcib" in params.oflags or "fciq" not in params.oflags
            needed = params.volume * (1 + self.taker_fee) if base_fee else params.volume
            if self.available(pair.base.code, market) < needed:
                raise KrakenRejection("EOrder:Insufficient funds")
        if params.cl_ord_id is not None and self.find(cl_ord_id=params.cl_ord_id, orders=self.open_orders()):
            raise KrakenRejection(DUPLICATE_ORDER)

    def place(self, params: OrderParams, market: Market, *, now: float, mono: float) -> SimOrder | None:
        """Place (or with ``validate`` only check) an order; marketable orders fill at once.

        Returns the order, or None for a validate-only request.
        """
        if "viqc" in params.oflags:
            params = self._base_volume(params, market[params.pair.key])
        self.check(params, market)
        if params.validate:
            return None
        order = _from_params(self._new_id("O"), params, now, mono)
        self.orders[order.txid] = order
        if order.cl_ord_id is not None:
            self.orders_created[order.cl_ord_id] += 1
        self._emit("new", order)
        if order.status == "open":
            self._activate(order, market[order.pair.key], now=now)
        return order

    def _base_volume(self, params: OrderParams, pm: PairMarket) -> OrderParams:
        """A ``viqc`` order: its volume is what to spend (buy) or get (sell) in the quote currency;
        the base volume is what the book gives for it now."""
        pair = params.pair
        asks, bids = pm.depth(_BOOK_LEVELS)
        left, base = params.volume, Decimal(0)
        for price, size in asks if params.side == "buy" else bids:
            if left <= 0:
                break
            take = min(size, left / price)
            base += take
            left -= take * price
        base = quantize(base, pair.lot_decimals, down=True)
        if base < pair.ordermin:
            raise KrakenRejection("EOrder:Order minimum not met")
        return attrs.evolve(params, volume=base)

    def _activate(self, order: SimOrder, pm: PairMarket, *, now: float) -> None:
        """An order just became live: take what it can, apply post-only and IOC, arm triggers."""
        if order.ordertype in CONDITIONAL_TYPES and not order.triggered:
            order.extreme = pm.last
            self._arm(order, pm)
            self._check_trigger(order, pm, now=now)
            return
        limit = order.working_limit()
        crosses = limit is None or (pm.ask <= limit if order.side == "buy" else pm.bid >= limit)
        if order.post_only and crosses:
            self._close(order, "canceled", "Post only order", now=now)
            return
        if crosses:
            self._take(order, pm, limit, now=now)
        if order.is_open and (order.timeinforce == "IOC" or limit is None):
            # what an IOC or market order could not take is cancelled, never rests
            reason = "Immediate or cancel" if limit is not None else "Insufficient liquidity"
            self._close(order, "canceled", reason, now=now)

    def _take(self, order: SimOrder, pm: PairMarket, limit: Decimal | None, *, now: float) -> None:
        for price, qty in self.sweep(pm, order.side, order.remaining, limit):
            self._fill(order, price, qty, now=now, maker=False, pm=pm)

    def _arm(self, order: SimOrder, pm: PairMarket) -> None:
        """Set the trigger level (trailing stops follow the best price since placement)."""
        if order.trail is None:
            order.stopprice = order.price
            return
        extreme = order.extreme if order.extreme is not None else pm.last
        distance = order.trail.of(extreme)
        level = extreme - distance if order.side == "sell" else extreme + distance
        order.stopprice = quantize(level, order.pair.pair_decimals)

    def _check_trigger(self, order: SimOrder, pm: PairMarket, *, now: float) -> None:
        last = pm.last
        if order.trail is not None:
            if order.extreme is None:
                order.extreme = last
            order.extreme = max(order.extreme, last) if order.side == "sell" else min(order.extreme, last)
            self._arm(order, pm)
        level = order.stopprice
        assert level is not None
        kind = order.ordertype
        if kind.startswith("take-profit"):
            fired = last >= level if order.side == "sell" else last <= level
        else:  # stop-loss, trailing-stop: protect against a move against the position
            fired = last <= level if order.side == "sell" else last >= level
        if not fired:
            return
        order.triggered = True
        if kind in ("stop-loss-limit", "take-profit-limit"):
            order.limitprice = order.price2
        elif kind == "trailing-stop-limit":
            assert order.trail_limit is not None
            offset = order.trail_limit
            order.limitprice = quantize(level + offset.sign * offset.of(level), order.pair.pair_decimals)
        self._emit("triggered", order)
        self._activate(order, pm, now=now)

    def cancel(self, order: SimOrder, *, now: float, reason: str = "User requested") -> None:
        self._close(order, "canceled", reason, now=now)

    def _close(self, order: SimOrder, status: str, reason: str | None, *, now: float) -> None:
        order.status = status
        order.closetm = now
        order.reason = reason
        self._emit(status, order)

    def match(self, market: Market, *, now: float) -> list[SimOrder]:
        """One market tick: start, expire, trigger and fill resting orders; returns orders that traded."""
        traded = []
        for order in self.open_orders():
            pm = market[order.pair.key]
            if order.status == "pending":
                if order.starttm is not None and order.starttm <= now:
                    order.status = "open"
                    self._activate(order, pm, now=now)
                continue
            if order.expiretm is not None and order.expiretm <= now:
                self._close(order, "expired", None, now=now)
                continue
            before = order.vol_exec
            if order.ordertype in CONDITIONAL_TYPES and not order.triggered:
                self._check_trigger(order, pm, now=now)
            else:
                limit = order.working_limit()
                if limit is not None and (
                    (order.side == "buy" and pm.ask <= limit) or (order.side == "sell" and pm.bid >= limit)
                ):
                    shown = pm.ask_qty if order.side == "buy" else pm.bid_qty
                    self._fill(order, limit, min(order.remaining, shown), now=now, maker=True, pm=pm)
            if order.vol_exec != before:
                traded.append(order)
        return traded

    def expire(self, *, now: float) -> int:
        """Close GTD orders whose time has come (called between ticks too)."""
        count = 0
        for order in self.open_orders():
            if order.expiretm is not None and order.expiretm <= now:
                self._close(order, "expired", None, now=now)
                count += 1
        return count

    def amend(
        self,
        order: SimOrder,
        market: Market,
        *,
        now: float,
        volume: Decimal | None = None,
        price: Decimal | None = None,
        price2: Decimal | None = None,
        post_only: bool = False,
        amend_id: str = "",
    ) -> None:
        """Change an open order in place (AmendOrder / amend_order): same txid, same queue."""
        if not order.is_open:
            raise KrakenRejection("EOrder:Unknown order")
        pm = market[order.pair.key]
        if volume is not None and (volume <= order.vol_exec or volume < order.pair.ordermin):
            raise KrakenRejection("EOrder:Invalid order")
        # ``price``: a limit order's limit, or a conditional order's trigger; ``price2``: the
        # limit of a stop-loss-limit / take-profit-limit (before or after it triggered)
        if price is not None and (
            order.trail is not None or (order.ordertype != "limit" and order.triggered)
        ):
            raise KrakenRejection("EOrder:Invalid order")
        if price2 is not None and order.ordertype not in ("stop-loss-limit", "take-profit-limit"):
            raise KrakenRejection("EOrder:Invalid order")
        new_limit = price if order.ordertype == "limit" else (price2 if order.triggered else None)
        if (
            post_only
            and new_limit is not None
            and (pm.ask <= new_limit if order.side == "buy" else pm.bid >= new_limit)
        ):
            raise KrakenRejection("EOrder:Post only order")
        order_original = order.amend_entry(order.txid, "original", order.opentm)
        if volume is not None:
            order.volume = volume
        if price is not None:
            order.price = price
            if order.ordertype != "limit":
                order.stopprice = price
        if price2 is not None:
            if order.triggered:
                order.limitprice = price2
            else:
                order.price2 = price2
        if not order.amend_log:
            order.amend_log.append(order_original)
        order.amends += 1
        order.amend_log.append(order.amend_entry(amend_id, "user", now))
        self._emit("amended", order)
        if order.is_open and not (order.ordertype in CONDITIONAL_TYPES and not order.triggered):
            limit = order.working_limit()
            if limit is not None and (pm.ask <= limit if order.side == "buy" else pm.bid >= limit):
                self._take(order, pm, limit, now=now)
        elif order.is_open:
            self._check_trigger(order, pm, now=now)

    def _fill(
        self, order: SimOrder, price: Decimal, volume: Decimal, *, now: float, maker: bool, pm: PairMarket
    ) -> None:
        pair = order.pair
        if volume <= 0:
            return
        cost = quantize(volume * price, pair.quote.decimals)
        rate = self.maker_fee if maker else self.taker_fee
        # the fee as charged (base or quote) and its value in the quote, which order and trade records show
        if order.fee_in_base:
            charged = quantize(volume * rate, pair.base.decimals)
            fee = quantize(charged * price, pair.quote.decimals)
            base_fee, quote_fee = charged, Decimal(0)
        else:
            fee = quantize(cost * rate, pair.quote.decimals)
            base_fee, quote_fee = Decimal(0), fee
        if order.side == "buy":
            self.balances[pair.quote.code] -= cost + quote_fee
            self.balances[pair.base.code] += volume - base_fee
        else:
            self.balances[pair.base.code] -= volume + base_fee
            self.balances[pair.quote.code] += cost - quote_fee
        trade_id = self._new_id("T")
        self._trade_seq += 1
        quote_places = pair.quote.decimals + 1
        stamp = datetime.fromtimestamp(now, UTC)
        public = pm.add_trade(
            stamp, price, volume, order.side, "limit" if order.working_limit() else "market"
        )
        trade = {
            "ordertxid": order.txid,
            "postxid": self._new_id("T"),
            "pair": pair.key,
            "time": now,
            "type": order.side,
            "ordertype": order.ordertype,
            "price": fmt_decimal(price, pair.pair_decimals),
            "cost": fmt_decimal(cost, quote_places),
            "fee": fmt_decimal(fee, quote_places),
            "vol": fmt_decimal(volume, 8),
            "margin": fmt_decimal(Decimal(0), quote_places),
            "misc": "",
            "trade_id": public.trade_id,
            "maker": maker,
        }
        self.trades[trade_id] = trade
        if order.side == "buy":
            self._ledger_entry(pair.quote.code, -cost, quote_fee, "trade", trade_id, now)
            self._ledger_entry(pair.base.code, volume, base_fee, "trade", trade_id, now)
        else:
            self._ledger_entry(pair.base.code, -volume, base_fee, "trade", trade_id, now)
            self._ledger_entry(pair.quote.code, cost, quote_fee, "trade", trade_id, now)
        order.trades.append(trade_id)
        order.vol_exec += volume
        order.cost += cost
        order.fee += fee
        order.avg_price = quantize(order.cost / order.vol_exec, pair.pair_decimals)
        charged_in = pair.base if order.fee_in_base else pair.quote
        fee_as_charged = {
            "fee_asset": charged_in.code,
            "fee_charged": fmt_decimal(base_fee or quote_fee, charged_in.decimals),
        }
        self._emit("trade", order, {"txid": trade_id, **trade, **fee_as_charged})
        if order.vol_exec >= order.volume:
            order.status = "closed"
            order.closetm = now
            order.reason = None
            self._emit("filled", order)

    def _ledger_entry(
        self, asset: str, amount: Decimal, fee: Decimal, kind: str, refid: str, now: float
    ) -> None:
        info = self.catalog.assets[asset]
        entry_id = self._new_id("L")
        entry = {
            "aclass": "currency",
            "amount": fmt_decimal(amount, info.decimals),
            "asset": info.kraken,
            "balance": fmt_decimal(self.balances[asset], info.decimals),
            "fee": fmt_decimal(fee, info.decimals),
            "refid": refid,
            "time": now,
            "type": kind,
            "subtype": "",
        }
        self.ledger[entry_id] = entry
        for listener in list(self.listeners):
            listener("ledger", None, {"id": entry_id, "code": asset, **entry})
