"""``hello-market``: an exchange plugin with a made-up market on this machine.

Prices of every pair follow a seeded random walk, one ticker per pair every
``tick_interval_s``. Market orders fill at once at the ask (buys) or bid (sells), paying
``fee_pct`` of their value in the quote currency; limit orders that cross fill the same way,
never worse than their limit, and the others rest until a ticker crosses them. The account
(balances and orders) is kept in ``hello-market.json`` in the state directory, written on
every change, so a restart finds it again. Spot only: a sell needs the base asset.

It shows what an exchange plugin provides (:class:`tradebot.api.Exchange`) and the errors it
raises. ``disconnect_after`` drops the market-data stream once, after that many tickers, to
watch the healing ladder at work (``hello-pause`` heals it).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import attrs

from tradebot.api import (
    Balances,
    ComponentSpec,
    ConnectionFailed,
    InsufficientFunds,
    InvalidOrder,
    MarketEvent,
    MarketRules,
    OrderInfo,
    OrderRequest,
    OrderStatus,
    OrderType,
    PluginContext,
    Side,
    SystemStatus,
    Ticker,
    UnknownPair,
    ge,
    gt,
    hookimpl,
    in_range,
)

__all__ = ["HelloMarket", "HelloMarketConfig", "tradebot_register_exchanges"]

ZERO = Decimal(0)
_CENT = Decimal("0.01")
_BPS = Decimal(10_000)


def _decimals(value: Any) -> dict[str, Decimal]:
    return {str(k): Decimal(str(v)) for k, v in dict(value).items()}


@attrs.frozen
class HelloMarketConfig:
    """``[exchanges.hello-market]``"""

    start_price: Decimal = attrs.field(default=Decimal(100), validator=gt(0))
    """Every pair's first price, in its quote currency."""
    step_bps: Decimal = attrs.field(default=Decimal(20), validator=gt(0))
    """Largest move of one tick, in basis points."""
    spread_bps: Decimal = attrs.field(default=Decimal(10), validator=ge(0))
    """Distance between bid and ask, in basis points of the price."""
    fee_pct: Decimal = attrs.field(default=Decimal("0.1"), validator=in_range(0, 5))
    """Fee of every fill, in percent of its value."""
    tick_interval_s: float = attrs.field(default=0.1, validator=gt(0))
    """Time between two tickers of a pair."""
    seed: int = 7
    """Seed of the random walk: the same seed gives the same prices."""
    balances: dict[str, Decimal] = attrs.field(factory=lambda: {"USD": Decimal(10_000)}, converter=_decimals)
    """What a new account holds."""
    disconnect_after: int = attrs.field(default=0, validator=ge(0))
    """Drop the market-data stream once after this many tickers (0: never)."""
    pairs: list[str] = attrs.field(factory=lambda: ["HM/USD"])
    """The pairs this market lists (``BASE/QUOTE``): its :meth:`HelloMarket.markets`."""


def _split(pair: str) -> tuple[str, str]:
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        raise UnknownPair(f"hello-market trades pairs written BASE/QUOTE (got {pair!r})", pair=pair)
    return base, quote


class HelloMarket:
    """The exchange object the bot talks to."""

    name = "hello-market"

    def __init__(self, config: HelloMarketConfig | None, context: Any) -> None:
        self.config = config or HelloMarketConfig()
        self.view = PluginContext.of(context, plugin="hello-market")
        self.path: Path = self.view.state_dir / "hello-market.json"
        self._rng = random.Random(self.config.seed)
        self._balances: dict[str, Decimal] = dict(self.config.balances)
        self._orders: dict[str, OrderInfo] = {}
        self._prices: dict[str, Decimal] = {}
        self._tickers_sent = 0
        self._dropped = False

    # --- the account, kept in a file --------------------------------------------------

    async def start(self) -> None:
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._balances = _decimals(data["balances"])
            self._prices = _decimals(data["prices"])
            self._orders = {o["client_order_id"]: _order_from_json(o) for o in data["orders"]}

    async def close(self) -> None:
        self._save()

    def _save(self) -> None:
        data = {
            "balances": {k: str(v) for k, v in self._balances.items()},
            "prices": {k: str(v) for k, v in self._prices.items()},
            "orders": [_order_to_json(o) for o in self._orders.values()],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    # --- what every exchange provides ---------------------------------------------------

    async def server_time(self) -> datetime:
        return self.view.clock.now()

    async def system_status(self) -> SystemStatus:
        return SystemStatus(status="online", time=self.view.clock.now())

    async def markets(self) -> Mapping[str, MarketRules]:
        """The rules of every listed pair: cent prices, 8-decimal volumes, one fee for all."""
        fee = self.config.fee_pct
        return {
            pair: MarketRules(
                pair=pair,
                price_decimals=2,
                lot_decimals=8,
                tick_size=_CENT,
                min_volume=Decimal("0.00000001"),
                min_cost=ZERO,
                taker_fee_pct=fee,
                maker_fee_pct=fee,
            )
            for pair in self.config.pairs
        }

    async def balances(self) -> Balances:
        return Balances(totals=dict(self._balances), as_of=self.view.clock.now())

    async def place_order(self, request: OrderRequest) -> OrderInfo:
        known = self._orders.get(request.client_order_id)
        if known is not None:
            return known  # the same client id twice is the same order: placed once
        base, quote = _split(request.pair)
        if request.volume <= 0:
            raise InvalidOrder(f"volume must be > 0 (got {request.volume})", pair=request.pair)
        if request.order_type is OrderType.LIMIT and (request.price is None or request.price <= 0):
            raise InvalidOrder("a limit order needs a price > 0", pair=request.pair)
        order = OrderInfo(
            client_order_id=request.client_order_id,
            exchange_order_id=f"HM-{len(self._orders) + 1}",
            pair=request.pair,
            side=request.side,
            order_type=request.order_type,
            volume=request.volume,
            filled_volume=ZERO,
            status=OrderStatus.OPEN,
            price=request.price,
            created_at=self.view.clock.now(),
        )
        bid, ask = self._quote(request.pair)
        price = self._fill_price(order, bid, ask)
        self._check_funds(order, price if price is not None else order.price or ask, base, quote)
        self._orders[request.client_order_id] = order
        if price is not None:
            self._execute(order, price, base, quote)
        self._save()
        return self._orders[request.client_order_id]

    async def cancel_order(self, client_order_id: str) -> bool:
        order = self._orders.get(client_order_id)
        if order is None or order.status is not OrderStatus.OPEN:
            return False
        self._orders[client_order_id] = attrs.evolve(order, status=OrderStatus.CANCELED)
        self._save()
        return True

    async def open_orders(self) -> Sequence[OrderInfo]:
        return [o for o in self._orders.values() if o.status is OrderStatus.OPEN]

    async def order_by_client_id(self, client_order_id: str) -> OrderInfo | None:
        return self._orders.get(client_order_id)

    async def market_data(
        self, pairs: Sequence[str], *, ohlc_interval: int | None = None
    ) -> AsyncIterator[MarketEvent]:
        """Tickers only (no candles): one per pair every ``tick_interval_s``."""
        for pair in pairs:
            _split(pair)
        while True:
            for pair in pairs:
                if (
                    self.config.disconnect_after
                    and self._tickers_sent >= self.config.disconnect_after
                    and not self._dropped
                ):
                    self._dropped = True
                    raise ConnectionFailed("hello-market: market-data stream dropped", host="hello-market")
                self._step(pair)
                bid, ask = self._quote(pair)
                self._fill_resting(pair, bid, ask)
                self._tickers_sent += 1
                yield Ticker(
                    pair=pair,
                    bid=bid,
                    ask=ask,
                    last=self._prices[pair],
                    volume=ZERO,
                    time=self.view.clock.now(),
                )
            await self.view.clock.sleep(self.config.tick_interval_s)

    # --- the market ---------------------------------------------------------------------

    def _step(self, pair: str) -> None:
        price = self._prices.get(pair, self.config.start_price)
        move = Decimal(self._rng.uniform(-1, 1)).quantize(Decimal("0.0001")) * self.config.step_bps / _BPS
        self._prices[pair] = max(_CENT, (price * (1 + move)).quantize(_CENT, ROUND_HALF_EVEN))

    def _quote(self, pair: str) -> tuple[Decimal, Decimal]:
        price = self._prices.setdefault(pair, self.config.start_price)
        half = price * self.config.spread_bps / _BPS / 2
        return (price - half).quantize(_CENT), (price + half).quantize(_CENT)

    @staticmethod
    def _fill_price(order: OrderInfo, bid: Decimal, ask: Decimal) -> Decimal | None:
        """The price ``order`` fills at now, or None while a limit does not cross."""
        taker = ask if order.side is Side.BUY else bid
        if order.order_type is OrderType.MARKET or order.price is None:
            return taker
        if order.side is Side.BUY:
            return min(taker, order.price) if order.price >= ask else None
        return max(taker, order.price) if order.price <= bid else None

    def _check_funds(self, order: OrderInfo, price: Decimal, base: str, quote: str) -> None:
        fee = self.config.fee_pct / 100
        if order.side is Side.BUY:
            need, asset = order.volume * price * (1 + fee), quote
        else:
            need, asset = order.volume, base
        held = self._balances.get(asset, ZERO) - self._reserved(asset)
        if need > held:
            raise InsufficientFunds(
                f"hello-market: {order.side.value} needs {need:.8f} {asset}, {held:.8f} free", pair=order.pair
            )

    def _reserved(self, asset: str) -> Decimal:
        total = ZERO
        for o in self._orders.values():
            if o.status is not OrderStatus.OPEN:
                continue
            base, quote = _split(o.pair)
            if o.side is Side.SELL and base == asset:
                total += o.volume
            elif o.side is Side.BUY and quote == asset and o.price is not None:
                total += o.volume * o.price * (1 + self.config.fee_pct / 100)
        return total

    def _execute(self, order: OrderInfo, price: Decimal, base: str, quote: str) -> None:
        value = order.volume * price
        fee = (value * self.config.fee_pct / 100).quantize(Decimal("0.00000001"))
        sign = 1 if order.side is Side.BUY else -1
        self._balances[base] = self._balances.get(base, ZERO) + sign * order.volume
        self._balances[quote] = self._balances.get(quote, ZERO) - sign * value - fee
        assert order.client_order_id is not None
        self._orders[order.client_order_id] = attrs.evolve(
            order, filled_volume=order.volume, avg_fill_price=price, fee=fee, status=OrderStatus.CLOSED
        )

    def _fill_resting(self, pair: str, bid: Decimal, ask: Decimal) -> None:
        changed = False
        for order in list(self._orders.values()):
            if order.pair != pair or order.status is not OrderStatus.OPEN:
                continue
            price = self._fill_price(order, bid, ask)
            if price is not None:
                base, quote = _split(pair)
                self._execute(order, price, base, quote)
                changed = True
        if changed:
            self._save()


def _order_to_json(o: OrderInfo) -> dict[str, Any]:
    return {
        "client_order_id": o.client_order_id,
        "exchange_order_id": o.exchange_order_id,
        "pair": o.pair,
        "side": o.side.value,
        "order_type": o.order_type.value,
        "volume": str(o.volume),
        "filled_volume": str(o.filled_volume),
        "status": o.status.value,
        "price": None if o.price is None else str(o.price),
        "avg_fill_price": None if o.avg_fill_price is None else str(o.avg_fill_price),
        "fee": str(o.fee),
        "created_at": None if o.created_at is None else o.created_at.isoformat(),
    }


def _order_from_json(d: dict[str, Any]) -> OrderInfo:
    return OrderInfo(
        client_order_id=d["client_order_id"],
        exchange_order_id=d["exchange_order_id"],
        pair=d["pair"],
        side=Side(d["side"]),
        order_type=OrderType(d["order_type"]),
        volume=Decimal(d["volume"]),
        filled_volume=Decimal(d["filled_volume"]),
        status=OrderStatus(d["status"]),
        price=None if d["price"] is None else Decimal(d["price"]),
        avg_fill_price=None if d["avg_fill_price"] is None else Decimal(d["avg_fill_price"]),
        fee=Decimal(d["fee"]),
        created_at=None if d["created_at"] is None else datetime.fromisoformat(d["created_at"]),
    )


@hookimpl
def tradebot_register_exchanges() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="hello-market",
            factory=HelloMarket,
            config_cls=HelloMarketConfig,
            description="A made-up market on this machine (random-walk prices, fills, balances in a file)",
        )
    ]
