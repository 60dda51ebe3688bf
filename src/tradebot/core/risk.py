"""The risk gate: turns a strategy's :class:`Signal` into an order, or refuses it.

Checks, in order: the signal is well formed; the trading state allows it (ACTIVE allows
everything, REDUCING only exposure-reducing orders, clipped so they never flip the
position, HALTED nothing); the pair's market rules (:mod:`tradebot.core.markets`: volume
rounded down to the lot, a limit price to the tick towards the passive side, the pair's
minimums and status); the configured minimum order size (an extra floor); the maximum
position per pair (an order that reduces exposure always passes); the maximum notional
per order; the maximum orders per minute (sliding window on the monotonic clock).

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
from collections.abc import Callable, Mapping
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
    """What the gate needs from the portfolio."""

    def position(self, pair: str) -> object: ...  # has a ``volume`` attribute

    def mark_price(self, pair: str) -> Decimal | None: ...


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


class RiskGate:
    """Approves signals into :class:`OrderRequest` values with fresh client order ids.

    ``pending_exposure(pair)`` returns the signed unfilled volume of working orders
    (``OrderExecutor.pending_exposure``; may be set after construction); without it only
    the position counts. ``limits`` may be any settings object with the fields of
    :class:`RiskLimits` (see :meth:`RiskLimits.from_settings`).
    """

    def __init__(
        self,
        limits: RiskLimits | object,
        trading: HasTradingState,
        portfolio: PositionSource,
        *,
        pending_exposure: Callable[[str], Decimal] | None = None,
        markets: MarketBook | None = None,
        clock: Clock | None = None,
        new_client_order_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.limits = RiskLimits.from_settings(limits)
        self.trading = trading
        self.portfolio = portfolio
        self.pending_exposure = pending_exposure
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
            raise RiskRejection(RejectReason.INVALID, "a limit order needs a positive limit price", signal=signal)

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
        volume, limit_price = self._fit_market(signal, volume, reduces)

        min_size = limits.min_size(signal.pair)
        if volume < min_size:
            raise RiskRejection(
                RejectReason.MIN_SIZE, f"volume {volume} is below the minimum order size {min_size}", signal=signal
            )

        limit = limits.position_limit(signal.pair)
        after = exposure + direction * volume
        if limit is not None and abs(after) > limit and abs(after) > abs(exposure):
            raise RiskRejection(
                RejectReason.MAX_POSITION,
                f"exposure would be {after} {signal.pair}, over the limit of {limit}",
                signal=signal,
            )

        if limits.max_notional_per_order is not None:
            price = limit_price or self.portfolio.mark_price(signal.pair)
            if price is None:
                raise RiskRejection(
                    RejectReason.NO_PRICE, f"no price known for {signal.pair} to check the notional", signal=signal
                )
            notional = price * volume
            if notional > limits.max_notional_per_order:
                raise RiskRejection(
                    RejectReason.MAX_NOTIONAL,
                    f"order notional {notional} is over the limit of {limits.max_notional_per_order}",
                    signal=signal,
                )

        now = self._clock.monotonic()
        while self._approved_at and now - self._approved_at[0] >= 60.0:
            self._approved_at.popleft()
        if limits.max_orders_per_minute is not None and len(self._approved_at) >= limits.max_orders_per_minute:
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
            log.warning("signal rejected: %s (further rejections of this kind are logged at DEBUG)", rejection)
