"""The paper exchange: real market data, simulated fills and balances.

It fills like the Kraken simulator, so a paper run predicts a live one: market orders
fill at once at the ask (buys) or bid (sells), moved against the order by ``slippage_bps``
(0 by default, as the simulator), paying the taker fee. Limit orders that cross the book
on arrival fill like market orders but never worse than their limit; the others rest and
fill at their limit price, paying the maker fee, when a later ticker crosses them (a
``limit_fill_ratio`` below 1 fills them in parts, one part per crossing ticker). Fees are
charged in the quote currency, rounded as the exchange rounds them. Spot only: selling
needs the base asset, buying the quote asset.

Market rules (precision, minimums, fees) are the market-data source's ``markets()``
(Kraken's ``AssetPairs``, the simulator's, or any exchange plugin's): orders off the pair's precision or below
its minimums are refused as the exchange would, and fees are the source's unless
``fee_pct`` / ``maker_fee_pct`` override them. Without rules from the source, fees are
:data:`DEFAULT_TAKER_FEE_PCT` / :data:`DEFAULT_MAKER_FEE_PCT` (the first tier of a common spot
schedule, Kraken's): a paper run is never charged less than a new account would be.

Market data comes from another object with a ``market_data(pairs, ohlc_interval=...)``
async iterator: the exchange plugin a paper run wraps (the one ``[bot] exchange`` names
under ``tradebot run --paper``, else ``market_data`` here; Kraken's against the real API or
the built-in simulator by default); every ticker passing through also drives the paper fills. Balances and
orders are kept in a small JSON file in the state directory, written atomically on every
change, so a restart (or a kill -9) keeps them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import attrs

from tradebot.api import (
    Balances,
    Clock,
    ComponentSpec,
    ExchangeUnavailable,
    Fill,
    InsufficientFunds,
    InvalidOrder,
    ListsMarkets,
    MarketClosed,
    MarketDataSource,
    MarketEvent,
    MarketRuleError,
    MarketRules,
    OrderInfo,
    OrderNotFound,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    SystemClock,
    SystemStatus,
    Ticker,
    TradebotError,
    UnknownPair,
    fit_order,
    ge,
    hookimpl,
    in_range,
    non_empty,
    order_at_wire,
)

__all__ = ["PaperConfig", "PaperExchange", "create", "tradebot_register_exchanges"]

log = logging.getLogger("tradebot.exchanges.paper")

DEFAULT_TAKER_FEE_PCT = Decimal("0.40")
"""Taker fee (percent) when neither the source's rules nor the config give one."""
DEFAULT_MAKER_FEE_PCT = Decimal("0.25")
"""Maker fee (percent) when neither the source's rules nor the config give one."""

ZERO = Decimal(0)
_BPS = Decimal(10_000)
_PCT = Decimal(100)


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _balances(value: Any) -> dict[str, Decimal]:
    return {str(k): _dec(v) for k, v in dict(value).items()}


def _non_negative_balances(_inst: Any, attribute: attrs.Attribute[Any], value: dict[str, Decimal]) -> None:
    for asset, amount in value.items():
        if amount < 0:
            raise ValueError(f"{attribute.name}.{asset} must be >= 0 (got {amount})")


@attrs.frozen
class PaperConfig:
    """Settings of the paper exchange (``[exchange.paper]``)."""

    starting_balances: dict[str, Decimal] = attrs.field(
        factory=lambda: {"USD": Decimal("10000")}, converter=_balances, validator=_non_negative_balances
    )
    fee_pct: Decimal | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(_dec),
        validator=attrs.validators.optional(in_range(ZERO, Decimal(10))),
    )
    """Taker fee in percent; default: the market-data source's (Kraken's schedule)."""
    maker_fee_pct: Decimal | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(_dec),
        validator=attrs.validators.optional(in_range(ZERO, Decimal(10))),
    )
    """Maker fee in percent; default: the market-data source's (Kraken's schedule)."""
    slippage_bps: Decimal = attrs.field(default=ZERO, converter=_dec, validator=ge(ZERO))
    """Extra price move against a taking order (0: fills at the touch, as the simulator)."""
    limit_fill_ratio: Decimal = attrs.field(
        default=Decimal(1), converter=_dec, validator=in_range(Decimal("0.01"), Decimal(1))
    )
    """Part of a resting limit order's volume filled per crossing ticker (1: all at once)."""
    market_data: str = attrs.field(default="kraken", validator=non_empty)
    """The exchange plugin whose market data and rules the fills follow when ``[bot] exchange``
    is ``paper`` (under ``tradebot run --paper``, the one ``[bot] exchange`` names)."""
    state_file: str = attrs.field(default="paper-exchange.json", validator=non_empty)


def _split(pair: str) -> tuple[str, str]:
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        raise UnknownPair(f"pair must look like BASE/QUOTE (got {pair!r})", pair=pair)
    return base, quote


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


class PaperExchange:
    """An :class:`~tradebot.core.exchange.Exchange` that trades on paper against live prices.

    ``market_source`` supplies market data; ``state_path`` (optional) keeps balances and
    orders across restarts. Prices can also be fed directly with :meth:`on_ticker`.
    """

    name = "paper"
    checks_orders_at_wire = True
    """:meth:`place_order` reads the trading state again where the order is taken."""

    def __init__(
        self,
        config: PaperConfig | None = None,
        *,
        market_source: MarketDataSource | None = None,
        clock: Clock | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.config = config or PaperConfig()
        self.market_source = market_source
        self._source_markets = market_source if isinstance(market_source, ListsMarkets) else None
        """The source's market rules, when it tells them (checked once, here)."""
        self._clock = clock or SystemClock()
        self.state_path = state_path
        self._balances: dict[str, Decimal] = dict(self.config.starting_balances)
        self._orders: dict[str, OrderInfo] = {}
        self._tickers: dict[str, Ticker] = {}
        self._rules: dict[str, MarketRules] = {}
        self._seq = 0
        self._loaded = False

    # --- persistence --------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.state_path is None or not self.state_path.exists():
            return
        data = json.loads(self.state_path.read_text())
        self._balances = {k: Decimal(v) for k, v in data["balances"].items()}
        self._orders = {o["client_order_id"]: _order_from_json(o) for o in data["orders"]}
        self._seq = int(data["seq"])
        log.info("paper account restored from %s (%d orders)", self.state_path.name, len(self._orders))

    def _save(self) -> None:
        if self.state_path is None:
            return
        data = {
            "balances": {k: str(v) for k, v in self._balances.items()},
            "orders": [_order_to_json(o) for o in self._orders.values()],
            "seq": self._seq,
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    # --- Exchange protocol -----------------------------------------------------------------

    async def start(self) -> None:
        self._load()

    async def close(self) -> None:
        """Nothing to release: the account file is written on every change."""

    async def server_time(self) -> datetime:
        return self._clock.now()

    async def system_status(self) -> SystemStatus:
        return SystemStatus("online", self._clock.now())

    async def balances(self) -> Balances:
        self._load()
        return Balances(dict(self._balances), self._clock.now())

    async def markets(self) -> Mapping[str, MarketRules]:
        """The market-data source's rules (fees replaced by ``fee_pct`` / ``maker_fee_pct`` when set)."""
        source = self._source_markets
        if source is not None:
            try:
                answer = await source.markets()
            except TradebotError as exc:
                if not self._rules:
                    raise
                log.warning(
                    "paper: market rules not refreshed from the source (%s); keeping the last good ones", exc
                )
            else:
                self._rules.update({pair: self._with_fees(rules) for pair, rules in answer.items()})
        return dict(self._rules)

    def _with_fees(self, rules: MarketRules) -> MarketRules:
        cfg = self.config
        return attrs.evolve(
            rules,
            taker_fee_pct=rules.taker_fee_pct if cfg.fee_pct is None else cfg.fee_pct,
            maker_fee_pct=rules.maker_fee_pct if cfg.maker_fee_pct is None else cfg.maker_fee_pct,
        )

    def _fee_pct(self, pair: str, *, maker: bool) -> Decimal:
        rules = self._rules.get(pair)
        if rules is not None:
            return rules.maker_fee_pct if maker else rules.taker_fee_pct
        configured = self.config.maker_fee_pct if maker else self.config.fee_pct
        if configured is not None:
            return configured
        return DEFAULT_MAKER_FEE_PCT if maker else DEFAULT_TAKER_FEE_PCT

    def _check_rules(self, request: OrderRequest) -> None:
        """Refuse what the exchange would: off the pair's precision, below its minimums."""
        rules = self._rules.get(request.pair)
        if rules is None:
            return
        ticker = self._tickers.get(request.pair)
        reference = None if ticker is None else (ticker.ask if request.side is Side.BUY else ticker.bid)
        if request.price is not None and reference is not None:
            reference = min(reference, request.price) if request.side is Side.BUY else request.price
        base = request.pair.partition("/")[0]
        # spot: an order reduces when it sells what the account holds (as the simulator judges it)
        reduces = request.side is Side.SELL and request.volume <= self._balances.get(base, ZERO)
        try:
            volume, price = fit_order(
                rules,
                pair=request.pair,
                side=request.side,
                order_type=request.order_type,
                volume=request.volume,
                price=request.price,
                reference_price=reference,
                reduces=reduces,
            )
        except MarketRuleError as exc:
            # the pair's status refuses as the exchange's market mode does; the rest is the order's fault
            cls = MarketClosed if exc.rule == "status" else InvalidOrder
            raise cls(f"paper: {exc.message}", client_order_id=request.client_order_id) from None
        if volume != request.volume:
            raise InvalidOrder(
                f"paper: volume {request.volume} has more than {request.pair}'s {rules.lot_decimals} lot decimals",
                client_order_id=request.client_order_id,
            )
        if price is not None and request.price is not None and price != request.price:
            raise InvalidOrder(
                f"paper: price {request.price} is off {request.pair}'s tick {rules.tick_size}",
                client_order_id=request.client_order_id,
            )

    async def place_order(self, request: OrderRequest) -> OrderInfo:
        self._load()
        cid = request.client_order_id
        if cid in self._orders:
            raise InvalidOrder("client order id already used", client_order_id=cid)
        if request.volume <= 0:
            raise InvalidOrder(f"volume must be > 0 (got {request.volume})", client_order_id=cid)
        if request.order_type is OrderType.LIMIT and (request.price is None or request.price <= 0):
            raise InvalidOrder("a limit order needs a positive price", client_order_id=cid)
        base, quote = _split(request.pair)
        self._check_rules(request)
        with order_at_wire():  # nothing awaits from here on: the check and the order are one step
            return self._take_order(request, base, quote)

    def _take_order(self, request: OrderRequest, base: str, quote: str) -> OrderInfo:
        cid = request.client_order_id
        order = OrderInfo(
            client_order_id=cid,
            exchange_order_id=f"PAPER-{self._seq + 1:06d}",
            pair=request.pair,
            side=request.side,
            order_type=request.order_type,
            volume=request.volume,
            filled_volume=ZERO,
            status=OrderStatus.OPEN,
            price=request.price,
            created_at=self._clock.now(),
        )
        ticker = self._tickers.get(request.pair)
        taker_price = self._taker_price(request.side, ticker) if ticker is not None else None
        if request.order_type is OrderType.MARKET:
            if taker_price is None:
                raise MarketClosed(f"no market price for {request.pair} yet; paper orders need market data")
            order = self._execute(order, taker_price, False, base, quote)
        else:
            assert request.price is not None
            crosses = taker_price is not None and (
                taker_price <= request.price if request.side is Side.BUY else taker_price >= request.price
            )
            if crosses:
                assert taker_price is not None
                order = self._execute(order, taker_price, False, base, quote)
            else:
                # funds are held at the taker fee, as the exchange holds them
                self._check_funds(
                    order, order.volume, request.price, self._fee_pct(order.pair, maker=False), base, quote
                )
        self._seq += 1
        self._orders[cid] = order
        self._save()
        log.info(
            "paper order %s %s %s %s: %s", cid, order.side.value, order.volume, order.pair, order.status.value
        )
        return order

    async def cancel_order(self, client_order_id: str) -> bool:
        self._load()
        order = self._orders.get(client_order_id)
        if order is None:
            raise OrderNotFound("unknown order", client_order_id=client_order_id)
        if order.status is not OrderStatus.OPEN:
            return False
        self._orders[client_order_id] = attrs.evolve(order, status=OrderStatus.CANCELED)
        self._save()
        return True

    async def open_orders(self) -> Sequence[OrderInfo]:
        self._load()
        return [o for o in self._orders.values() if o.status is OrderStatus.OPEN]

    async def order_by_client_id(self, client_order_id: str) -> OrderInfo | None:
        self._load()
        return self._orders.get(client_order_id)

    async def closed_orders(self, since: datetime | None = None) -> Sequence[OrderInfo]:
        """Final paper orders placed after ``since`` (all when None), newest first."""
        self._load()
        found = [
            o
            for o in self._orders.values()
            if o.status.is_final and (since is None or o.created_at is None or o.created_at > since)
        ]
        return sorted(found, key=lambda o: o.exchange_order_id or "", reverse=True)

    async def trades(self, since: datetime | None = None) -> Sequence[Fill]:
        """One trade per filled paper order placed after ``since`` (paper orders fill whole)."""
        return [
            Fill(
                trade_id=f"{o.exchange_order_id}-T",
                client_order_id=o.client_order_id,
                exchange_order_id=o.exchange_order_id,
                pair=o.pair,
                side=o.side,
                price=o.avg_fill_price,
                volume=o.filled_volume,
                fee=o.fee,
                time=o.created_at or self._clock.now(),
            )
            for o in await self.closed_orders(since)
            if o.filled_volume > 0 and o.avg_fill_price is not None
        ]

    async def market_data(
        self, pairs: Sequence[str], *, ohlc_interval: int | None = None
    ) -> AsyncIterator[MarketEvent]:
        """The source's stream; every ticker also fills resting paper orders it crosses."""
        if self.market_source is None:
            raise ExchangeUnavailable("the paper exchange has no market data source")
        async for event in self.market_source.market_data(pairs, ohlc_interval=ohlc_interval):
            if isinstance(event, Ticker):
                self.on_ticker(event)
            yield event

    # --- simulation ---------------------------------------------------------------------------

    def on_ticker(self, ticker: Ticker) -> list[OrderInfo]:
        """Take a new price; fill (or part-fill) the resting limit orders it crosses and return them."""
        self._load()
        self._tickers[ticker.pair] = ticker
        filled: list[OrderInfo] = []
        for cid, order in list(self._orders.items()):
            if order.pair != ticker.pair or order.status is not OrderStatus.OPEN or order.price is None:
                continue
            crossed = ticker.ask <= order.price if order.side is Side.BUY else ticker.bid >= order.price
            if not crossed:
                continue
            base, quote = _split(order.pair)
            try:
                self._orders[cid] = self._execute(
                    order, order.price, True, base, quote, part=self._part(order)
                )
            except InsufficientFunds as exc:
                log.warning("paper order %s cancelled at fill time: %s", cid, exc)
                self._orders[cid] = attrs.evolve(order, status=OrderStatus.CANCELED)
            filled.append(self._orders[cid])
        if filled:
            self._save()
        return filled

    def _part(self, order: OrderInfo) -> Decimal:
        """The volume a crossing ticker fills of a resting order (all of it with ratio 1)."""
        remaining = order.volume - order.filled_volume
        ratio = self.config.limit_fill_ratio
        if ratio >= 1:
            return remaining
        rules = self._rules.get(order.pair)
        part = order.volume * ratio
        if rules is not None:
            part = rules.round_volume(part)
            least = rules.min_volume
        else:
            least = ZERO
        if part <= 0 or part >= remaining or remaining - part < least:
            return remaining
        return part

    def _taker_price(self, side: Side, ticker: Ticker) -> Decimal:
        slip = self.config.slippage_bps / _BPS
        return ticker.ask * (1 + slip) if side is Side.BUY else ticker.bid * (1 - slip)

    def _check_funds(
        self, order: OrderInfo, volume: Decimal, price: Decimal, fee_pct: Decimal, base: str, quote: str
    ) -> None:
        if order.side is Side.BUY:
            need = volume * price * (1 + fee_pct / _PCT)
            have = self._balances.get(quote, ZERO) - self._reserved(quote, exclude=order.client_order_id)
            asset = quote
        else:
            need = volume
            have = self._balances.get(base, ZERO) - self._reserved(base, exclude=order.client_order_id)
            asset = base
        if need > have:
            raise InsufficientFunds(
                f"needs {need} {asset}, {have} available", client_order_id=order.client_order_id
            )

    def _reserved(self, asset: str, *, exclude: str | None) -> Decimal:
        """What resting orders hold of ``asset``."""
        total = ZERO
        for o in self._orders.values():
            if o.status is not OrderStatus.OPEN or o.client_order_id == exclude or o.price is None:
                continue
            base, quote = _split(o.pair)
            remaining = o.volume - o.filled_volume
            if o.side is Side.BUY and quote == asset:
                total += remaining * o.price * (1 + self._fee_pct(o.pair, maker=False) / _PCT)
            elif o.side is Side.SELL and base == asset:
                total += remaining
        return total

    def _execute(
        self,
        order: OrderInfo,
        price: Decimal,
        maker: bool,
        base: str,
        quote: str,
        *,
        part: Decimal | None = None,
    ) -> OrderInfo:
        volume = order.volume - order.filled_volume if part is None else part
        fee_pct = self._fee_pct(order.pair, maker=maker)
        self._check_funds(order, volume, price, fee_pct, base, quote)
        rules = self._rules.get(order.pair)
        cost = volume * price
        if rules is not None and rules.fee_decimals is not None:
            cost = cost.quantize(Decimal(1).scaleb(-rules.fee_decimals), rounding=ROUND_HALF_EVEN)
        fee = rules.fee(cost, maker=maker) if rules is not None else cost * fee_pct / _PCT
        if order.side is Side.BUY:
            self._balances[quote] = self._balances.get(quote, ZERO) - cost - fee
            self._balances[base] = self._balances.get(base, ZERO) + volume
        else:
            self._balances[base] = self._balances.get(base, ZERO) - volume
            self._balances[quote] = self._balances.get(quote, ZERO) + cost - fee
        filled = order.filled_volume + volume
        prior = (order.avg_fill_price or ZERO) * order.filled_volume
        return attrs.evolve(
            order,
            filled_volume=filled,
            avg_fill_price=(prior + volume * price) / filled,
            fee=order.fee + fee,
            status=OrderStatus.CLOSED if filled >= order.volume else OrderStatus.OPEN,
        )


def create(config: PaperConfig | None, context: Any) -> PaperExchange:
    """Factory for the plugin host: market data from ``context.extras["market_data_source"]``."""
    cfg = config or PaperConfig()
    return PaperExchange(
        cfg,
        market_source=context.extras.get("market_data_source"),
        clock=context.clock,
        state_path=Path(context.state_dir) / cfg.state_file,
    )


@hookimpl
def tradebot_register_exchanges() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="paper",
            factory=create,
            config_cls=PaperConfig,
            fills_on_paper=True,
            description="Paper trading: live market data, simulated fills, fees and slippage, persisted balances",
        )
    ]
