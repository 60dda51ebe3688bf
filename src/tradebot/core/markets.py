"""An exchange's market rules per pair, and fitting an order to them before it is sent.

Every exchange says, through ``Exchange.markets()``, what it accepts per pair: price and
volume precision, minimum volume and cost, maker/taker fees and whether the pair trades
at all (:class:`MarketRules`). :func:`fit_order` is the one place those rules are applied
to an order: the volume is rounded *down* to the lot precision, a limit price to the tick
towards the passive side (a buy lower, a sell higher), and an order the pair does not
accept is refused with a :class:`MarketRuleError` naming the pair's figure.
:class:`MarketBook` keeps the latest rules the exchange gave, keeps the last good rules
of a pair when an answer leaves it out, and tells dust (a position too small to trade)
from a position.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

import attrs

from tradebot.core.errors import PermanentError
from tradebot.core.models import OrderType, Side

__all__ = [
    "FeeSchedule",
    "MarketBook",
    "MarketRuleError",
    "MarketRules",
    "PairStatus",
    "buy_volume",
    "fit_order",
    "order_volume",
]

log = logging.getLogger("tradebot.markets")

ZERO = Decimal(0)
_PCT = Decimal(100)


class PairStatus(enum.StrEnum):
    """What a pair accepts (Kraken's ``AssetPairs`` status, plus ``delisted``)."""

    ONLINE = "online"
    CANCEL_ONLY = "cancel_only"
    POST_ONLY = "post_only"
    LIMIT_ONLY = "limit_only"
    REDUCE_ONLY = "reduce_only"
    DELISTED = "delisted"


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _tiers(value: Any) -> tuple[tuple[Decimal, Decimal], ...]:
    tiers = tuple((_dec(v), _dec(p)) for v, p in value)
    if not tiers or tiers[0][0] != 0:
        raise ValueError(f"a fee schedule starts at volume 0 (got {value!r})")
    if any(b[0] <= a[0] for a, b in itertools.pairwise(tiers)):
        raise ValueError(f"fee tiers must be in increasing volume (got {value!r})")
    if any(not 0 <= p < 100 for _, p in tiers):
        raise ValueError(f"fees are percentages between 0 and 100 (got {value!r})")
    return tiers


@attrs.frozen
class FeeSchedule:
    """Fees in percent by 30-day traded volume: ``((volume from, percent), ...)``."""

    taker: tuple[tuple[Decimal, Decimal], ...] = attrs.field(converter=_tiers)
    maker: tuple[tuple[Decimal, Decimal], ...] = attrs.field(converter=_tiers)

    @staticmethod
    def _at(tiers: Sequence[tuple[Decimal, Decimal]], volume: Decimal) -> Decimal:
        pct = tiers[0][1]
        for start, tier_pct in tiers:
            if volume >= start:
                pct = tier_pct
        return pct

    def taker_pct(self, volume: Decimal = ZERO) -> Decimal:
        """The taker fee (percent) of an account that traded ``volume`` in 30 days."""
        return self._at(self.taker, volume)

    def maker_pct(self, volume: Decimal = ZERO) -> Decimal:
        """The maker fee (percent) of an account that traded ``volume`` in 30 days."""
        return self._at(self.maker, volume)


def _status(value: Any) -> PairStatus:
    return value if isinstance(value, PairStatus) else PairStatus(str(value))


def _non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 (got {value})")


@attrs.frozen
class MarketRules:
    """What the exchange accepts for one pair.

    Volumes are in base units, costs and fees in the quote currency. ``tick_size`` is the
    step a price moves in (``price_decimals`` its decimals); ``lot_decimals`` the decimals
    of a volume. ``fee_decimals`` (when known) is the precision fees are charged to.
    """

    pair: str
    price_decimals: int = attrs.field(validator=_non_negative)
    lot_decimals: int = attrs.field(validator=_non_negative)
    tick_size: Decimal = attrs.field(converter=_dec)
    min_volume: Decimal = attrs.field(converter=_dec, validator=_non_negative)
    min_cost: Decimal = attrs.field(converter=_dec, validator=_non_negative)
    taker_fee_pct: Decimal = attrs.field(converter=_dec, validator=_non_negative)
    maker_fee_pct: Decimal = attrs.field(converter=_dec, validator=_non_negative)
    status: PairStatus = attrs.field(default=PairStatus.ONLINE, converter=_status)
    fee_decimals: int | None = attrs.field(default=None, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if not self.tick_size > 0:
            raise ValueError(f"tick_size must be > 0 (got {self.tick_size}) for {self.pair}")

    @property
    def lot(self) -> Decimal:
        """The smallest volume step."""
        return Decimal(1).scaleb(-self.lot_decimals)

    def round_volume(self, volume: Decimal) -> Decimal:
        """``volume`` rounded down to the lot precision."""
        return volume.quantize(self.lot, rounding=ROUND_DOWN)

    def round_price(self, price: Decimal, side: Side) -> Decimal:
        """``price`` on the tick grid, rounded towards the passive side (buys down, sells up)."""
        steps = (price / self.tick_size).to_integral_value(ROUND_FLOOR if side is Side.BUY else ROUND_CEILING)
        rounded = steps * self.tick_size
        return rounded.quantize(Decimal(1).scaleb(-self.price_decimals))

    def fee(self, cost: Decimal, *, maker: bool) -> Decimal:
        """The fee on a fill of ``cost`` (quote currency), rounded as the exchange charges it."""
        fee = cost * (self.maker_fee_pct if maker else self.taker_fee_pct) / _PCT
        if self.fee_decimals is not None:
            fee = fee.quantize(Decimal(1).scaleb(-self.fee_decimals), rounding=ROUND_HALF_EVEN)
        return fee

    def minimum_volume(self, price: Decimal | None) -> Decimal:
        """The least volume an order may have at ``price``: the larger of both minimums."""
        least = self.min_volume
        if price is not None and price > 0 and self.min_cost > 0:
            by_cost = (self.min_cost / price).quantize(self.lot, rounding=ROUND_CEILING)
            least = max(least, by_cost)
        return max(least, self.lot)

    def is_dust(self, volume: Decimal, price: Decimal | None = None) -> bool:
        """A non-zero position too small to be sold (or bought back) in one order."""
        size = abs(volume)
        if size == 0:
            return False
        rounded = self.round_volume(size)
        if rounded == 0 or rounded < self.min_volume:
            return True
        return price is not None and self.min_cost > 0 and rounded * price < self.min_cost


class MarketRuleError(PermanentError):
    """An order the pair's market rules do not allow; ``rule`` names which one."""

    def __init__(self, rule: str, message: str, *, pair: str) -> None:
        super().__init__(message, rule=rule, pair=pair)
        self.rule = rule
        self.pair = pair


def fit_order(
    rules: MarketRules | None,
    *,
    pair: str,
    side: Side,
    order_type: OrderType,
    volume: Decimal,
    price: Decimal | None = None,
    reference_price: Decimal | None = None,
    reduces: bool = False,
) -> tuple[Decimal, Decimal | None]:
    """``(volume, price)`` of the order as the exchange will accept it, or :class:`MarketRuleError`.

    ``price`` is the limit price (None for a market order); ``reference_price`` the price
    a market order is expected near, to check the minimum cost (skipped when unknown).
    ``reduces``: the order reduces the position (allowed on a ``reduce_only`` pair).
    """
    if rules is None:
        raise MarketRuleError(
            "no_rules", f"no market rules are known for {pair}: the exchange did not list the pair", pair=pair
        )
    status = rules.status
    if status in (PairStatus.CANCEL_ONLY, PairStatus.DELISTED):
        raise MarketRuleError("status", f"{pair} is {status.value} on the exchange: no new orders", pair=pair)
    if status in (PairStatus.LIMIT_ONLY, PairStatus.POST_ONLY) and order_type is OrderType.MARKET:
        raise MarketRuleError(
            "status", f"{pair} is {status.value} on the exchange: market orders are not accepted", pair=pair
        )
    if status is PairStatus.REDUCE_ONLY and not reduces:
        raise MarketRuleError(
            "status",
            f"{pair} is reduce_only on the exchange: only orders that reduce the position",
            pair=pair,
        )
    fitted = rules.round_volume(volume)
    if price is not None:
        price = rules.round_price(price, side)
        if price <= 0:
            raise MarketRuleError(
                "price", f"limit price rounds to zero on {pair}'s tick {rules.tick_size}", pair=pair
            )
    if fitted < rules.min_volume or fitted == 0:
        raise MarketRuleError(
            "min_volume",
            f"volume {volume} (rounded to {fitted}) is below {pair}'s minimum order volume {rules.min_volume}",
            pair=pair,
        )
    at = price if price is not None else reference_price
    if at is not None and rules.min_cost > 0 and fitted * at < rules.min_cost:
        raise MarketRuleError(
            "min_cost",
            f"order cost {fitted * at:.8f} is below {pair}'s minimum order cost {rules.min_cost}",
            pair=pair,
        )
    return fitted, price


def order_volume(
    quote_amount: Decimal, price: Decimal, rules: MarketRules | None, *, at_least_minimum: bool = True
) -> Decimal:
    """The base volume worth ``quote_amount`` at ``price``, on the lot grid.

    With rules known and ``at_least_minimum``, never below the pair's minimum (volume and
    cost), so the order is accepted: a quote amount below the minimum trades the minimum.
    """
    volume = quote_amount / price
    if rules is None:
        return volume
    volume = rules.round_volume(volume)
    if at_least_minimum:
        volume = max(volume, rules.minimum_volume(price))
    return volume


def buy_volume(
    quote_amount: Decimal, fixed: Decimal | None, price: Decimal, rules: MarketRules | None
) -> Decimal:
    """A strategy's buy volume: ``fixed`` when configured, else :func:`order_volume` of ``quote_amount``."""
    return fixed if fixed is not None else order_volume(quote_amount, price, rules)


class MarketBook:
    """The market rules last read from an exchange, per pair.

    :meth:`update` takes an exchange's answer; a pair the answer leaves out keeps its last
    good rules (logged). The engine reads it synchronously (:meth:`rules`, :meth:`fit`,
    :meth:`is_dust`); :meth:`refresh` asks the exchange again.
    """

    def __init__(self, rules: Mapping[str, MarketRules] | None = None) -> None:
        self._rules: dict[str, MarketRules] = dict(rules or {})
        self.refreshed = 0
        self.last_error: str | None = None

    def __contains__(self, pair: str) -> bool:
        return pair in self._rules

    def rules(self, pair: str) -> MarketRules | None:
        """The pair's rules, None when none are known."""
        return self._rules.get(pair)

    def all(self) -> dict[str, MarketRules]:
        return dict(self._rules)

    def update(self, answer: Mapping[str, MarketRules], *, expected: Sequence[str] = ()) -> None:
        """Take the exchange's rules; pairs in ``expected`` it left out keep their last good rules."""
        for pair, rules in answer.items():
            if not isinstance(rules, MarketRules):
                log.error(
                    "market rules of %s from the exchange are not MarketRules (%r): kept the last good ones",
                    pair,
                    rules,
                )
                continue
            self._rules[pair] = rules
        for pair in expected:
            if pair not in answer:
                kept = "kept the last good rules" if pair in self._rules else "orders for it are refused"
                log.warning("the exchange's market rules leave out %s: %s", pair, kept)
        self.refreshed += 1

    async def refresh(self, exchange: Any, *, expected: Sequence[str] = ()) -> bool:
        """Ask ``exchange.markets()`` again. False (logged, last rules kept) when it fails."""
        from tradebot.core.exchange import ListsMarkets

        if not isinstance(exchange, ListsMarkets):
            self.last_error = f"the exchange {getattr(exchange, 'name', '?')!r} provides no markets()"
            log.error("%s: no market rules, so every order is refused", self.last_error)
            return False
        try:
            answer = await exchange.markets()
        except Exception as exc:  # noqa: BLE001 - rules stay as they were; the next refresh asks again
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "could not read the exchange's market rules (%s); keeping the last good ones", self.last_error
            )
            return False
        self.last_error = None
        self.update(answer, expected=expected)
        return True

    def fit(
        self,
        *,
        pair: str,
        side: Side,
        order_type: OrderType,
        volume: Decimal,
        price: Decimal | None = None,
        reference_price: Decimal | None = None,
        reduces: bool = False,
    ) -> tuple[Decimal, Decimal | None]:
        """:func:`fit_order` with this book's rules of ``pair``."""
        return fit_order(
            self.rules(pair),
            pair=pair,
            side=side,
            order_type=order_type,
            volume=volume,
            price=price,
            reference_price=reference_price,
            reduces=reduces,
        )

    def is_dust(self, pair: str, volume: Decimal, price: Decimal | None = None) -> bool:
        """Whether a position of ``volume`` in ``pair`` is dust (False when no rules are known)."""
        rules = self.rules(pair)
        return rules is not None and rules.is_dust(volume, price)

    def dust(
        self, positions: Mapping[str, Decimal], prices: Mapping[str, Decimal | None] | None = None
    ) -> dict[str, Decimal]:
        """The positions among ``positions`` (pair -> signed volume) that are dust."""
        prices = prices or {}
        return {p: v for p, v in positions.items() if v and self.is_dust(p, v, prices.get(p))}
