"""RSI mean reversion: buy when the market looks oversold, sell when it looks overbought.

The Relative Strength Index uses Wilder's smoothing: the first average gain and loss are
plain means over ``period`` price changes, each later one is
``(previous * (period - 1) + change) / period``. ``RSI = 100 * gain / (gain + loss)``
(the same as ``100 - 100 / (1 + RS)``), and 50 when the price has not moved at all.

Long only: below ``oversold`` it buys ``quote_amount`` worth
(or a fixed ``volume``) unless it already holds (or has a buy on
its way); above ``overbought`` it sells what it holds. What it holds is read from its
context (the bot's persisted portfolio, see
:class:`~tradebot.core.strategy.StrategyContext`), so after a restart it still sells the
earlier lot and never buys a second one. Decimal throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import attrs

from tradebot.api import (
    PRICE_SOURCES,
    ComponentSpec,
    PriceSampler,
    Side,
    Signal,
    StrategyContext,
    buy_volume,
    gt,
    hookimpl,
    in_range,
    one_of,
)

__all__ = ["RsiReversion", "RsiReversionConfig", "WilderRsi", "tradebot_register_strategies"]

_HUNDRED = Decimal(100)


@attrs.frozen
class RsiReversionConfig:
    """``[strategies.<name>.params]`` of an ``rsi-reversion`` instance."""

    period: int = attrs.field(default=9, validator=gt(1))
    """Price changes in Wilder's smoothing (9: tick data is noisy, and a 30-second paper run
    of ~150 ticks should see the thresholds reached)."""
    oversold: Decimal = attrs.field(default=Decimal(30), validator=in_range(0, 100))
    """Buy below this RSI."""
    overbought: Decimal = attrs.field(default=Decimal(70), validator=in_range(0, 100))
    """Sell above this RSI; must be above ``oversold``."""
    quote_amount: Decimal = attrs.field(default=Decimal("20"), validator=gt(0))
    """Quote-currency value of each buy (USD for BTC/USD): the volume is this amount at the
    current price, on the pair's lot grid and never below the pair's minimum order (from
    the exchange's market rules), so orders are accepted on every pair."""
    volume: Decimal | None = attrs.field(default=None, validator=attrs.validators.optional(gt(0)))
    """A fixed base-currency volume per buy instead of ``quote_amount`` (not raised to the
    pair's minimum: an order below it is refused by the risk gate, naming the minimum)."""
    source: str = attrs.field(default="ticker", validator=one_of(PRICE_SOURCES))
    """``ticker`` (mid of every tick) or ``candle`` (close of every finished bar)."""

    def __attrs_post_init__(self) -> None:
        if self.oversold >= self.overbought:
            raise ValueError(
                f"oversold must be < overbought (got oversold={self.oversold}, overbought={self.overbought})"
            )


class WilderRsi:
    """Wilder's RSI of one price series, updated one price at a time."""

    def __init__(self, period: int) -> None:
        self.period = period
        self._last: Decimal | None = None
        self._changes = 0
        self._gain = Decimal(0)  # sum while seeding, then the smoothed average
        self._loss = Decimal(0)
        self.value: Decimal | None = None

    def update(self, price: Decimal) -> Decimal | None:
        """Add a price; the RSI once ``period`` changes are known, else None."""
        last, self._last = self._last, price
        if last is None:
            return None
        change = price - last
        gain = change if change > 0 else Decimal(0)
        loss = -change if change < 0 else Decimal(0)
        n = self.period
        self._changes += 1
        if self._changes < n:
            self._gain += gain
            self._loss += loss
            return None
        if self._changes == n:
            self._gain = (self._gain + gain) / n
            self._loss = (self._loss + loss) / n
        else:
            self._gain = (self._gain * (n - 1) + gain) / n
            self._loss = (self._loss * (n - 1) + loss) / n
        total = self._gain + self._loss
        self.value = Decimal(50) if total == 0 else _HUNDRED * self._gain / total
        return self.value


@attrs.define
class _PairState:
    rsi: WilderRsi


class RsiReversion:
    """The RSI mean-reversion strategy for one configured instance (quick: runs on the loop)."""

    blocking = False

    def __init__(self, config: RsiReversionConfig, context: StrategyContext) -> None:
        self.config = config
        self.name = context.name
        self.context = context
        self._sampler = PriceSampler(config.source)
        self._pairs: dict[str, _PairState] = {}

    def holding(self, pair: str) -> bool:
        """Whether the instance holds ``pair`` or has a buy of it on its way (from its context)."""
        return self.context.exposure(pair) > 0

    def rsi(self, pair: str) -> Decimal | None:
        """The latest RSI of ``pair``, None until there are enough samples."""
        state = self._pairs.get(pair)
        return None if state is None else state.rsi.value

    def on_event(self, event: object) -> Sequence[Signal]:
        price = self._sampler.sample(event)
        if price is None:
            return ()
        pair: str = event.pair  # type: ignore[attr-defined]
        cfg = self.config
        state = self._pairs.get(pair)
        if state is None:
            state = self._pairs[pair] = _PairState(rsi=WilderRsi(cfg.period))
        rsi = state.rsi.update(price)
        if rsi is None:
            return ()
        if rsi < cfg.oversold and self.context.exposure(pair) <= 0:
            volume = buy_volume(cfg.quote_amount, cfg.volume, price, self.context.markets(pair))
            return (self._signal(pair, Side.BUY, f"RSI{cfg.period} {rsi:.1f} below {cfg.oversold}", volume),)
        if rsi > cfg.overbought:
            held = self.context.sellable(pair)  # all it holds, not yet being sold
            if held > 0:
                return (
                    self._signal(pair, Side.SELL, f"RSI{cfg.period} {rsi:.1f} above {cfg.overbought}", held),
                )
        return ()

    def _signal(self, pair: str, side: Side, reason: str, volume: Decimal) -> Signal:
        return self.context.signal(pair, side, volume, reason=reason)


def create(config: RsiReversionConfig, context: StrategyContext) -> RsiReversion:
    """Factory: one strategy object per configured instance."""
    return RsiReversion(config, context)


@hookimpl
def tradebot_register_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="rsi-reversion",
            factory=create,
            config_cls=RsiReversionConfig,
            description="RSI mean reversion (Wilder): buy when oversold, sell when overbought (long only).",
        )
    ]
