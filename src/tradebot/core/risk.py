"""The risk gate: turns a strategy's :class:`Signal` into an order, or refuses it.

Checks, in order: the signal is well formed; the trading state allows it (ACTIVE allows
everything, REDUCING only exposure-reducing orders, clipped so they never flip the
position, HALTED nothing); the pair's market rules (:mod:`tradebot.core.markets`: volume
rounded down to the lot, a limit price to the tick towards the passive side, the pair's
minimums and status); the configured minimum order size (an extra floor); the maximum
position per pair (an order that reduces exposure always passes); the maximum notional
per order, valued at the worse of the order's limit price and the current mark (a limit sell
priced far below the market is as big as the market says); the maximum orders per minute
(sliding window on the monotonic clock).

Spot-account rules (``spot = true``, the default; every order of every strategy):

- a sell may not exceed what the bot holds of the pair's base asset: its position, net of
  the unfilled volume of every working sell of the pair, whichever strategy placed it; a
  sell with nothing left to sell is a short, which a spot account cannot hold;
- a strategy instance may not sell more than its own attributed position (see
  :class:`~tradebot.core.portfolio.Portfolio`) plus what no instance owns, net of its own
  working sells, so two strategies on one pair never sell the same lot;
- a buy needs the quote currency it costs (volume x limit price, or x the mark for a market
  order), net of the cost of every working buy.

Exposure counts the position *and* the unfilled volume of orders already working, so
two quick sells in REDUCING cannot together flip a long. Cancels never come here: the
executor always lets them through.

A refusal is a :class:`RiskRejection` with a :class:`RejectReason` code. Each code is
logged at WARNING the first time and at DEBUG afterwards; :attr:`RiskGate.rejections`
counts them all.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Protocol

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import PermanentError
from tradebot.core.markets import MarketBook, MarketRuleError
from tradebot.core.models import OrderRequest, OrderType, Side, Signal, TradingState
from tradebot.core.validate import ge, gt

__all__ = ["RejectReason", "RiskGate", "RiskLimits", "RiskRejection"]

log = logging.getLogger("tradebot.risk")

ZERO = Decimal(0)


class RejectReason(enum.StrEnum):
    """Why the risk gate refused a signal."""

    INVALID = "invalid"
    HALTED = "halted"
    NOT_REDUCING = "not_reducing"
    MIN_SIZE = "min_size"
    MAX_POSITION = "max_position"
    NO_PRICE = "no_price"
    MAX_NOTIONAL = "max_notional"
    RATE_LIMIT = "rate_limit"
    NO_SHORT = "no_short"
    """A sell with nothing (left) to sell: a spot account cannot go short."""
    SPOT_HOLDINGS = "spot_holdings"
    """A sell larger than what the bot holds, net of working sells."""
    STRATEGY_HOLDINGS = "strategy_holdings"
    """A strategy selling more than its own position, net of its working sells."""
    INSUFFICIENT_QUOTE = "insufficient_quote"
    """A buy costing more than the bot's cash, net of working buys."""
    MARKET_RULES = "market_rules"  # the pair's precision, minimums or status (tradebot.core.markets)


class RiskRejection(PermanentError):
    """The risk gate refused a signal; ``code`` says which rule."""

    def __init__(self, code: RejectReason, message: str, *, signal: Signal) -> None:
        super().__init__(message, code=code.value, strategy=signal.strategy, pair=signal.pair)
        self.code = code
        self.signal = signal


def _dec_map(value: Mapping[str, object]) -> dict[str, Decimal]:
    return {k: Decimal(str(v)) for k, v in value.items()}


def _opt_dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@attrs.frozen
class RiskLimits:
    """Limits the gate enforces. ``None`` switches a limit off.

    Volumes are in base units, notional in the quote currency. Per-pair values override
    the defaults.
    """

    max_position: Decimal | None = attrs.field(default=None, converter=_opt_dec, validator=gt(ZERO))
    max_position_per_pair: dict[str, Decimal] = attrs.field(factory=dict, converter=_dec_map)
    max_notional_per_order: Decimal | None = attrs.field(default=None, converter=_opt_dec, validator=gt(ZERO))
    max_orders_per_minute: int | None = attrs.field(default=None, validator=gt(0))
    min_order_size: Decimal = attrs.field(default=ZERO, converter=Decimal, validator=ge(ZERO))
    min_order_size_per_pair: dict[str, Decimal] = attrs.field(factory=dict, converter=_dec_map)
    spot: bool = True
    """Apply the spot-account rules (no short, sell only what is held, buy only with cash)."""

    @classmethod
    def from_settings(cls, settings: object) -> RiskLimits:
        """Limits from any settings object with the same field names (``[risk]`` config);
        ``min_order_volume`` is accepted for ``min_order_size``."""
        if isinstance(settings, RiskLimits):
            return settings
        names = [a.name for a in attrs.fields(cls)]
        values = {n: getattr(settings, n) for n in names if hasattr(settings, n)}
        if "min_order_size" not in values and hasattr(settings, "min_order_volume"):
            values["min_order_size"] = settings.min_order_volume
        return cls(**values)

    def position_limit(self, pair: str) -> Decimal | None:
        return self.max_position_per_pair.get(pair, self.max_position)

    def min_size(self, pair: str) -> Decimal:
        return self.min_order_size_per_pair.get(pair, self.min_order_size)


class HasTradingState(Protocol):
    """Anything with the current trading state (e.g. ``TradingStateMachine``)."""

    @property
    def state(self) -> TradingState: ...


class PositionSource(Protocol):
    """What the gate needs from the portfolio.

    The spot rules also use ``cash`` (the buy rule is skipped without it) and
    ``strategy_position(strategy, pair)`` (the per-strategy rule is skipped without it).
    """

    def position(self, pair: str) -> object: ...  # has a ``volume`` attribute

    def mark_price(self, pair: str) -> Decimal | None: ...


class WorkingOrder(Protocol):
    """A working order as the spot rules see it (``JournalEntry`` is one)."""

    @property
    def pair(self) -> str: ...

    @property
    def side(self) -> Side: ...

    @property
    def price(self) -> Decimal | None: ...

    @property
    def strategy(self) -> str: ...

    @property
    def remaining(self) -> Decimal: ...


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


class RiskGate:
    """Approves signals into :class:`OrderRequest` values with fresh client order ids.

    ``pending_exposure(pair)`` returns the signed unfilled volume of working orders
    (``OrderExecutor.pending_exposure``; may be set after construction); without it only
    the position counts. ``working_orders()`` lists the working orders themselves
    (``OrderExecutor.working_orders``) for the spot rules; without it working sells are
    taken from ``pending_exposure`` and working buys are not known. ``limits`` may be any settings object with the fields of
    :class:`RiskLimits` (see :meth:`RiskLimits.from_settings`).
    """

    def __init__(
        self,
        limits: RiskLimits | object,
        trading: HasTradingState,
        portfolio: PositionSource,
        *,
        pending_exposure: Callable[[str], Decimal] | None = None,
        working_orders: Callable[[], Iterable[WorkingOrder]] | None = None,
        markets: MarketBook | None = None,
        clock: Clock | None = None,
        new_client_order_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.limits = RiskLimits.from_settings(limits)
        self.trading = trading
        self.portfolio = portfolio
        self.pending_exposure = pending_exposure
        self.working_orders = working_orders
        self.markets = markets
        self._clock = clock or SystemClock()
        self._new_id = new_client_order_id
        self._approved_at: deque[float] = deque()
        self._logged: set[RejectReason] = set()
        self.rejections: Counter[RejectReason] = Counter()

    def exposure(self, pair: str) -> Decimal:
        """Signed position plus unfilled volume of working orders."""
        volume: Decimal = getattr(self.portfolio.position(pair), "volume", ZERO)
        pending = self.pending_exposure(pair) if self.pending_exposure is not None else ZERO
        return volume + pending

    def approve(self, signal: Signal) -> OrderRequest:
        """The order for ``signal`` (possibly clipped in REDUCING); raises :class:`RiskRejection`."""
        try:
            return self._approve(signal)
        except RiskRejection as rejection:
            self._note(rejection)
            raise

    def _approve(self, signal: Signal) -> OrderRequest:
        limits = self.limits
        volume = signal.volume
        if volume <= 0:
            raise RiskRejection(RejectReason.INVALID, f"volume must be > 0 (got {volume})", signal=signal)
        if signal.order_type is OrderType.LIMIT and (signal.limit_price is None or signal.limit_price <= 0):
            raise RiskRejection(
                RejectReason.INVALID, "a limit order needs a positive limit price", signal=signal
            )

        state = self.trading.state
        if state is TradingState.HALTED:
            raise RiskRejection(RejectReason.HALTED, "trading is HALTED: no new orders", signal=signal)
        exposure = self.exposure(signal.pair)
        direction = 1 if signal.side is Side.BUY else -1
        reduces = exposure != 0 and direction == -_sign(exposure)
        if state is TradingState.REDUCING:
            if not reduces:
                raise RiskRejection(
                    RejectReason.NOT_REDUCING,
                    f"trading is REDUCING: a {signal.side.value} of {signal.pair} would not reduce "
                    f"exposure {exposure}",
                    signal=signal,
                )
            volume = min(volume, abs(exposure))
            if limits.spot and signal.side is Side.SELL:
                # exposure counts working buys too; on a spot account only what is held can go
                room = self._sell_room(signal.pair, self._working())
                if room > 0:
                    volume = min(volume, room)
        volume, limit_price = self._fit_market(signal, volume, reduces)

        min_size = limits.min_size(signal.pair)
        if volume < min_size:
            raise RiskRejection(
                RejectReason.MIN_SIZE,
                f"volume {volume} is below the minimum order size {min_size}",
                signal=signal,
            )

        limit = limits.position_limit(signal.pair)
        after = exposure + direction * volume
        if limit is not None and abs(after) > limit and abs(after) > abs(exposure):
            raise RiskRejection(
                RejectReason.MAX_POSITION,
                f"exposure would be {after} {signal.pair}, over the limit of {limit}",
                signal=signal,
            )

        if limits.spot:
            self._spot_rules(signal, volume)

        if limits.max_notional_per_order is not None:
            self._check_notional(signal, volume, limits.max_notional_per_order)

        now = self._clock.monotonic()
        while self._approved_at and now - self._approved_at[0] >= 60.0:
            self._approved_at.popleft()
        if (
            limits.max_orders_per_minute is not None
            and len(self._approved_at) >= limits.max_orders_per_minute
        ):
            raise RiskRejection(
                RejectReason.RATE_LIMIT,
                f"{len(self._approved_at)} orders in the last minute (limit {limits.max_orders_per_minute})",
                signal=signal,
            )
        self._approved_at.append(now)
        return OrderRequest(
            pair=signal.pair,
            side=signal.side,
            order_type=signal.order_type,
            volume=volume,
            client_order_id=self._new_id(),
            price=limit_price,
        )

    # --- notional ----------------------------------------------------------------------

    def _check_notional(self, signal: Signal, volume: Decimal, cap: Decimal) -> None:
        """The order's value at the worse (higher) of its limit price and the current mark."""
        mark = self.portfolio.mark_price(signal.pair)
        limit_price = signal.limit_price if signal.order_type is OrderType.LIMIT else None
        if mark is None:
            raise RiskRejection(
                RejectReason.NO_PRICE,
                f"no current price of {signal.pair} to check the order's notional against the limit of {cap}",
                signal=signal,
            )
        price = mark if limit_price is None else max(limit_price, mark)
        notional = price * volume
        if notional > cap:
            at = f"the mark {mark}" if price == mark else f"the limit price {limit_price}"
            if limit_price is not None and limit_price < mark:
                at += f" (the order's limit price {limit_price} is below the mark)"
            raise RiskRejection(
                RejectReason.MAX_NOTIONAL,
                f"order notional {notional} ({volume} {signal.pair} at {at}) is over max_notional_per_order {cap}",
                signal=signal,
            )

    # --- spot-account rules ----------------------------------------------------------

    def _working(self) -> list[WorkingOrder]:
        return list(self.working_orders()) if self.working_orders is not None else []

    def _spot_rules(self, signal: Signal, volume: Decimal) -> None:
        """No short, sell only what is held (by the bot and by the strategy), buy only with cash."""
        working = self._working()
        if signal.side is Side.SELL:
            self._spot_sell(signal, volume, working)
        else:
            self._spot_buy(signal, volume, working)

    def _held_and_selling(self, pair: str, working: list[WorkingOrder]) -> tuple[Decimal, Decimal]:
        """(the bot's position, unfilled volume of every working sell) of ``pair``."""
        held: Decimal = getattr(self.portfolio.position(pair), "volume", ZERO)
        if self.working_orders is not None:
            selling = sum((o.remaining for o in working if o.pair == pair and o.side is Side.SELL), ZERO)
        else:
            pending = self.pending_exposure(pair) if self.pending_exposure is not None else ZERO
            selling = max(-pending, ZERO)
        return held, selling

    def _sell_room(self, pair: str, working: list[WorkingOrder]) -> Decimal:
        held, selling = self._held_and_selling(pair, working)
        return held - selling

    def _spot_sell(self, signal: Signal, volume: Decimal, working: list[WorkingOrder]) -> None:
        pair = signal.pair
        held, selling = self._held_and_selling(pair, working)
        available = held - selling
        if available <= 0:
            raise RiskRejection(
                RejectReason.NO_SHORT,
                f"spot sell of {volume} {pair} refused: the bot holds {held} with {selling} already being sold, "
                "and a spot account cannot go short",
                signal=signal,
            )
        if volume > available:
            raise RiskRejection(
                RejectReason.SPOT_HOLDINGS,
                f"spot sell of {volume} {pair} exceeds what the bot holds: position {held}, working sells "
                f"{selling}, available {available}",
                signal=signal,
            )
        by_strategy = getattr(self.portfolio, "strategy_position", None)
        if by_strategy is None or not signal.strategy:
            return
        own: Decimal = max(by_strategy(signal.strategy, pair).volume, ZERO)
        spare: Decimal = max(by_strategy("", pair).volume, ZERO)  # what no instance owns
        own_selling = sum(
            (
                o.remaining
                for o in working
                if o.pair == pair and o.side is Side.SELL and o.strategy == signal.strategy
            ),
            ZERO,
        )
        if volume > own + spare - own_selling:
            owner = f"holds {own} of it" + (f" (and {spare} no strategy owns)" if spare else "")
            raise RiskRejection(
                RejectReason.STRATEGY_HOLDINGS,
                f"strategy {signal.strategy!r} sells {volume} {pair} but {owner} with {own_selling} already being "
                f"sold (available {max(own + spare - own_selling, ZERO)}); the rest is another strategy's",
                signal=signal,
            )

    def _spot_buy(self, signal: Signal, volume: Decimal, working: list[WorkingOrder]) -> None:
        cash = getattr(self.portfolio, "cash", None)
        if cash is None:
            return
        price = (
            signal.limit_price
            if signal.order_type is OrderType.LIMIT
            else self.portfolio.mark_price(signal.pair)
        )
        if price is None:
            raise RiskRejection(
                RejectReason.NO_PRICE,
                f"no current price of {signal.pair} to check what the buy costs",
                signal=signal,
            )
        committed = ZERO
        for order in working:
            if order.side is Side.BUY:
                at = order.price if order.price is not None else self.portfolio.mark_price(order.pair)
                committed += order.remaining * (at or ZERO)
        cost = volume * price
        rules = self.markets.rules(signal.pair) if self.markets is not None else None
        fee = rules.fee(cost, maker=False) if rules is not None else ZERO  # the fee is paid from the cash too
        if cost + fee > cash - committed:
            with_fee = f" (with the fee {_plain(fee)})" if fee else ""
            raise RiskRejection(
                RejectReason.INSUFFICIENT_QUOTE,
                f"buy of {volume} {signal.pair} costs {_plain(cost + fee)}{with_fee} but the bot's cash is {cash} with "
                f"{committed} committed to working buys (available {cash - committed})",
                signal=signal,
            )

    # --- market rules --------------------------------------------------------------

    def _fit_market(self, signal: Signal, volume: Decimal, reduces: bool) -> tuple[Decimal, Decimal | None]:
        """Volume and limit price fitted to the pair's market rules (unchanged without a book)."""
        price = signal.limit_price if signal.order_type is OrderType.LIMIT else None
        if self.markets is None:
            return volume, price
        try:
            return self.markets.fit(
                pair=signal.pair,
                side=signal.side,
                order_type=signal.order_type,
                volume=volume,
                price=price,
                reference_price=self.portfolio.mark_price(signal.pair),
                reduces=reduces,
            )
        except MarketRuleError as exc:
            raise RiskRejection(RejectReason.MARKET_RULES, exc.message, signal=signal) from None

    def _note(self, rejection: RiskRejection) -> None:
        self.rejections[rejection.code] += 1
        if rejection.code in self._logged:
            log.debug("signal rejected: %s", rejection)
        else:
            self._logged.add(rejection.code)
            log.warning(
                "signal rejected: %s (further rejections of this kind are logged at DEBUG)", rejection
            )


def _plain(value: Decimal) -> str:
    """``1004`` for ``1004.000000000``: a figure in a message without trailing zeros."""
    return format(value.normalize(), "f")
