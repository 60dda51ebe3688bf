"""The simulated account: balances, orders, matching against the price path, trade history."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from tradebot.exchanges.kraken.fees import KRAKEN_FEES
from tradebot.exchanges.simulator._catalog import Catalog, PairInfo
from tradebot.exchanges.simulator._market import Market
from tradebot.exchanges.simulator._protocol import KrakenRejection, fmt_decimal, quantize

__all__ = ["DUPLICATE_ORDER", "Account", "OrderParams", "SimOrder", "parse_order_params"]

TAKER_FEE = KRAKEN_FEES.taker_pct() / 100
MAKER_FEE = KRAKEN_FEES.maker_pct() / 100
"""Fees (fractions) of an account at the first tier of Kraken's schedule: the default."""
INVALID = "EGeneral:Invalid arguments"
DUPLICATE_ORDER = "EOrder:Duplicate order"
"""Sent when ``cl_ord_id`` matches an open order's (Kraken documents the check, not the text)."""
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_MAX_CL_ORD_ID = 64


@attrs.frozen
class OrderParams:
    """A validated AddOrder request."""

    pair: PairInfo
    side: str
    ordertype: str
    volume: Decimal
    price: Decimal | None
    cl_ord_id: str | None
    userref: int
    validate: bool


def _decimal(text: str | None) -> Decimal:
    if text is None:
        raise KrakenRejection(INVALID)
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise KrakenRejection(INVALID) from None
    if not value.is_finite() or value <= 0:
        raise KrakenRejection(INVALID)
    return value


def parse_order_params(params: Mapping[str, str], catalog: Catalog) -> OrderParams:
    """Validate AddOrder's fields in Kraken's order: arguments, pair, then order rules."""
    side = params.get("type", "")
    ordertype = params.get("ordertype", "")
    if side not in ("buy", "sell") or ordertype not in ("market", "limit"):
        raise KrakenRejection(INVALID)
    if "cl_ord_id" in params and "userref" in params:
        raise KrakenRejection(INVALID)
    cl_ord_id = params.get("cl_ord_id")
    if cl_ord_id is not None and not (0 < len(cl_ord_id) <= _MAX_CL_ORD_ID and cl_ord_id.isprintable()):
        raise KrakenRejection(INVALID)
    userref = 0
    if "userref" in params:
        try:
            userref = int(params["userref"])
        except ValueError:
            raise KrakenRejection(INVALID) from None
        if not -(2**31) <= userref < 2**31:
            raise KrakenRejection(INVALID)
    pair = catalog.pair(params.get("pair", ""))
    if pair is None:
        raise KrakenRejection("EQuery:Unknown asset pair")
    volume = _decimal(params.get("volume"))
    if -volume.as_tuple().exponent > pair.lot_decimals:  # type: ignore[operator]
        raise KrakenRejection(INVALID)
    price: Decimal | None = None
    if ordertype == "limit":
        price = _decimal(params.get("price"))
        if -price.as_tuple().exponent > pair.pair_decimals:  # type: ignore[operator]
            raise KrakenRejection("EOrder:Invalid price")
    if volume < pair.ordermin:
        raise KrakenRejection("EOrder:Order minimum not met")
    validate = params.get("validate", "false").lower() in ("true", "1")
    return OrderParams(pair, side, ordertype, volume, price, cl_ord_id, userref, validate)


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

    @property
    def is_open(self) -> bool:
        return self.status in ("pending", "open")

    def description(self) -> str:
        vol = fmt_decimal(self.volume, 8)
        where = (
            "market" if self.price is None else f"limit {fmt_decimal(self.price, self.pair.pair_decimals)}"
        )
        return f"{self.side} {vol} {self.pair.altname} @ {where}"

    def to_kraken(self, *, with_trades: bool = False) -> dict[str, Any]:
        """The order as OpenOrders / ClosedOrders / QueryOrders describe it."""
        quote_places = self.pair.quote.decimals + 1
        entry: dict[str, Any] = {
            "refid": None,
            "userref": self.userref,
            "cl_ord_id": self.cl_ord_id,
            "status": self.status,
            "opentm": self.opentm,
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": self.pair.altname,
                "type": self.side,
                "ordertype": self.ordertype,
                "price": fmt_decimal(self.price or Decimal(0), self.pair.pair_decimals),
                "price2": "0",
                "leverage": "none",
                "order": self.description(),
                "close": "",
            },
            "vol": fmt_decimal(self.volume, 8),
            "vol_exec": fmt_decimal(self.vol_exec, 8),
            "cost": fmt_decimal(self.cost, quote_places),
            "fee": fmt_decimal(self.fee, quote_places),
            "price": fmt_decimal(self.avg_price, quote_places),
            "stopprice": "0.00000",
            "limitprice": "0.00000",
            "misc": "",
            "oflags": "fciq",
        }
        if self.closetm is not None:
            entry["closetm"] = self.closetm
            entry["reason"] = self.reason
        if with_trades and self.trades:
            entry["trades"] = list(self.trades)
        return entry


class Account:
    """Balances, orders and fills of the one simulated account.

    Every method runs without awaiting, so a request sees and changes the account
    atomically with respect to other requests and to market ticks.
    """

    def __init__(
        self,
        catalog: Catalog,
        balances: Mapping[str, Decimal],
        rng: random.Random,
        *,
        taker_fee: Decimal = TAKER_FEE,
        maker_fee: Decimal = MAKER_FEE,
    ) -> None:
        self.catalog = catalog
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.balances: dict[str, Decimal] = {code: Decimal(0) for code in catalog.assets}
        for code, amount in balances.items():
            asset = catalog.asset(code)
            if asset is None:
                raise ValueError(f"unknown asset in starting balances: {code!r}")
            self.balances[asset.code] = Decimal(amount)
        self.orders: dict[str, SimOrder] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.orders_created: Counter[str] = Counter()  # per cl_ord_id
        self._rng = rng
        self._trade_seq = 0

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

    def holds(self) -> dict[str, Decimal]:
        """Funds reserved by open orders, per asset."""
        held: dict[str, Decimal] = {code: Decimal(0) for code in self.balances}
        for order in self.open_orders():
            remaining = order.volume - order.vol_exec
            if order.side == "buy":
                assert order.price is not None
                held[order.pair.quote.code] += remaining * order.price * (1 + self.taker_fee)
            else:
                held[order.pair.base.code] += remaining
        return held

    def available(self, asset: str) -> Decimal:
        return self.balances[asset] - self.holds()[asset]

    # --- orders ---------------------------------------------------------------

    def place(self, params: OrderParams, market: Market, *, now: float, mono: float) -> SimOrder | None:
        """Place (or with ``validate`` only check) an order; marketable orders fill at once.

        Returns the order, or None for a validate-only request.
        """
        pair = params.pair
        pm = market[pair.key]
        reference = pm.ask if params.side == "buy" else pm.bid
        if params.price is not None:
            reference = min(reference, params.price) if params.side == "buy" else params.price
        if params.volume * reference < pair.costmin:
            raise KrakenRejection("EOrder:Cost minimum not met")
        if params.side == "buy":
            needed = params.volume * reference * (1 + self.taker_fee)
            if self.available(pair.quote.code) < needed:
                raise KrakenRejection("EOrder:Insufficient funds")
        elif self.available(pair.base.code) < params.volume:
            raise KrakenRejection("EOrder:Insufficient funds")
        if params.cl_ord_id is not None and self.find(cl_ord_id=params.cl_ord_id, orders=self.open_orders()):
            raise KrakenRejection(DUPLICATE_ORDER)
        if params.validate:
            return None
        order = SimOrder(
            txid=self._new_id("O"),
            pair=pair,
            side=params.side,
            ordertype=params.ordertype,
            volume=params.volume,
            price=params.price,
            cl_ord_id=params.cl_ord_id,
            userref=params.userref,
            opentm=now,
            opened_mono=mono,
        )
        self.orders[order.txid] = order
        if order.cl_ord_id is not None:
            self.orders_created[order.cl_ord_id] += 1
        if params.side == "buy" and (params.price is None or pm.ask <= params.price):
            self._fill(order, pm.ask, now=now, maker=False)
        elif params.side == "sell" and (params.price is None or pm.bid >= params.price):
            self._fill(order, pm.bid, now=now, maker=False)
        return order

    def cancel(self, order: SimOrder, *, now: float) -> None:
        order.status = "canceled"
        order.closetm = now
        order.reason = "User requested"

    def match(self, market: Market, *, now: float) -> list[SimOrder]:
        """Fill resting limit orders the price has crossed; returns the filled orders."""
        filled = []
        for order in self.open_orders():
            pm = market[order.pair.key]
            assert order.price is not None
            if (order.side == "buy" and pm.ask <= order.price) or (
                order.side == "sell" and pm.bid >= order.price
            ):
                self._fill(order, order.price, now=now, maker=True)
                filled.append(order)
        return filled

    def _fill(self, order: SimOrder, price: Decimal, *, now: float, maker: bool) -> None:
        pair = order.pair
        volume = order.volume - order.vol_exec
        cost = quantize(volume * price, pair.quote.decimals)
        fee = quantize(cost * (self.maker_fee if maker else self.taker_fee), pair.quote.decimals)
        if order.side == "buy":
            self.balances[pair.quote.code] -= cost + fee
            self.balances[pair.base.code] += volume
        else:
            self.balances[pair.base.code] -= volume
            self.balances[pair.quote.code] += cost - fee
        trade_id = self._new_id("T")
        self._trade_seq += 1
        quote_places = pair.quote.decimals + 1
        self.trades[trade_id] = {
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
            "trade_id": self._trade_seq,
            "maker": maker,
        }
        order.trades.append(trade_id)
        order.vol_exec = order.volume
        order.cost += cost
        order.fee += fee
        order.avg_price = quantize(order.cost / order.vol_exec, pair.pair_decimals)
        order.status = "closed"
        order.closetm = now
        order.reason = None
