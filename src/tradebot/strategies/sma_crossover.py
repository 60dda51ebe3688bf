"""Simple-moving-average crossover: buy when the fast average crosses above the slow one.

Samples are ticker mids (default) or closes of finished candles. A *golden cross* (fast
moves from below to above slow) buys ``quote_amount`` worth (or a fixed ``volume``); a *death cross*
sells what the instance holds. Long only. What it holds is read from its context (the bot's persisted portfolio,
see :class:`~tradebot.core.strategy.StrategyContext`), so it never repeats a buy while it
holds or has one on its way, never sells what it does not hold, and after a restart sells
the lot it bought before. A cross needs a regime to cross from: the first time both
averages exist only sets the regime.

All arithmetic is Decimal; comparing ``fast_sum * slow`` with ``slow_sum * fast`` avoids
division, so the result is exact and deterministic.
"""

from __future__ import annotations

from collections import deque
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
    one_of,
)

__all__ = ["SmaCrossover", "SmaCrossoverConfig", "tradebot_register_strategies"]


@attrs.frozen
class SmaCrossoverConfig:
    """``[strategies.<name>.params]`` of an ``sma-crossover`` instance."""

    fast: int = attrs.field(default=5, validator=gt(0))
    """Samples in the fast average."""
    slow: int = attrs.field(default=20, validator=gt(1))
    """Samples in the slow average; must be larger than ``fast``."""
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
        if self.fast >= self.slow:
            raise ValueError(f"fast must be < slow (got fast={self.fast}, slow={self.slow})")


@attrs.define
class _PairState:
    window: deque[Decimal]
    fast_sum: Decimal = Decimal(0)
    slow_sum: Decimal = Decimal(0)
    regime: int = 0  # +1 fast above slow, -1 below, 0 not known yet


class SmaCrossover:
    """The SMA crossover strategy for one configured instance (quick: runs on the loop)."""

    blocking = False

    def __init__(self, config: SmaCrossoverConfig, context: StrategyContext) -> None:
        self.config = config
        self.name = context.name
        self.context = context
        self._sampler = PriceSampler(config.source)
        self._pairs: dict[str, _PairState] = {}

    def holding(self, pair: str) -> bool:
        """Whether the instance holds ``pair`` or has a buy of it on its way (from its context)."""
        return self.context.exposure(pair) > 0

    def averages(self, pair: str) -> tuple[Decimal, Decimal] | None:
        """(fast, slow) averages of ``pair`` once there are enough samples."""
        state = self._pairs.get(pair)
        if state is None or len(state.window) < self.config.slow:
            return None
        return state.fast_sum / self.config.fast, state.slow_sum / self.config.slow

    def on_event(self, event: object) -> Sequence[Signal]:
        price = self._sampler.sample(event)
        if price is None:
            return ()
        pair: str = event.pair  # type: ignore[attr-defined]
        cfg = self.config
        state = self._pairs.get(pair)
        if state is None:
            state = self._pairs[pair] = _PairState(window=deque(maxlen=cfg.slow))
        window = state.window
        if len(window) >= cfg.fast:
            state.fast_sum -= window[-cfg.fast]
        if len(window) == cfg.slow:
            state.slow_sum -= window[0]
        window.append(price)
        state.fast_sum += price
        state.slow_sum += price
        if len(window) < cfg.slow:
            return ()
        diff = state.fast_sum * cfg.slow - state.slow_sum * cfg.fast
        sign = (diff > 0) - (diff < 0)
        if sign == 0 or sign == state.regime:
            return ()
        crossed = state.regime != 0
        state.regime = sign
        if not crossed:
            return ()
        if sign > 0 and self.context.exposure(pair) <= 0:
            volume = buy_volume(cfg.quote_amount, cfg.volume, price, self.context.markets(pair))
            return (self._signal(pair, Side.BUY, "golden cross", state, volume),)
        if sign < 0:
            held = self.context.sellable(pair)  # all it holds, not yet being sold
            if held > 0:
                return (self._signal(pair, Side.SELL, "death cross", state, held),)
        return ()

    def _signal(self, pair: str, side: Side, what: str, state: _PairState, volume: Decimal) -> Signal:
        cfg = self.config
        fast = state.fast_sum / cfg.fast
        slow = state.slow_sum / cfg.slow
        return self.context.signal(
            pair, side, volume, reason=f"{what}: SMA{cfg.fast} {fast:.2f} vs SMA{cfg.slow} {slow:.2f}"
        )


def create(config: SmaCrossoverConfig, context: StrategyContext) -> SmaCrossover:
    """Factory: one strategy object per configured instance."""
    return SmaCrossover(config, context)


@hookimpl
def tradebot_register_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="sma-crossover",
            factory=create,
            config_cls=SmaCrossoverConfig,
            description="Moving-average crossover: buy on a golden cross, sell on a death cross (long only).",
        )
    ]
