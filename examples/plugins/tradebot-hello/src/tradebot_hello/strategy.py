"""``hello-momentum``: buy after ``run`` rising prices in a row, sell after ``run`` falling ones.

Long only: it buys when it holds nothing and sells what it bought. A strategy gets a
:class:`~tradebot.api.StrategyContext` (its instance name, pairs, clock and logger), not the
bot context.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import attrs

from tradebot.api import (
    PRICE_SOURCES,
    ComponentSpec,
    MarketEvent,
    PriceSampler,
    Side,
    Signal,
    StrategyContext,
    gt,
    hookimpl,
    one_of,
)

__all__ = ["Momentum", "MomentumConfig", "tradebot_register_strategies"]


@attrs.frozen
class MomentumConfig:
    """``[strategies.<instance>.params]`` of a ``hello-momentum`` instance."""

    run: int = attrs.field(default=3, validator=gt(0))
    """Prices in a row that must rise (to buy) or fall (to sell)."""
    volume: Decimal = attrs.field(default=Decimal("0.01"), validator=gt(0))
    """Base volume of each order."""
    source: str = attrs.field(default="ticker", validator=one_of(PRICE_SOURCES))
    """``ticker`` (mid of every tick) or ``candle`` (close of every finished bar)."""


@attrs.define
class _Pair:
    last: Decimal | None = None
    streak: int = 0  # +n: n rises in a row, -n: n falls
    holding: bool = False


class Momentum:
    """One configured instance; quick pure code, so it runs inline on the event loop."""

    blocking = False

    def __init__(self, config: MomentumConfig, context: StrategyContext) -> None:
        self.config = config
        self.name = context.name
        self.log = context.logger
        self._sampler = PriceSampler(config.source)
        self._pairs: dict[str, _Pair] = {}

    def on_event(self, event: MarketEvent) -> Sequence[Signal]:
        price = self._sampler.sample(event)
        if price is None:
            return ()
        state = self._pairs.setdefault(event.pair, _Pair())
        if state.last is not None and price != state.last:
            up = price > state.last
            state.streak = (max(state.streak, 0) + 1) if up else (min(state.streak, 0) - 1)
        state.last = price
        run = self.config.run
        if state.streak >= run and not state.holding:
            state.holding = True
            return (self._signal(event.pair, Side.BUY, f"{state.streak} rises in a row"),)
        if state.streak <= -run and state.holding:
            state.holding = False
            return (self._signal(event.pair, Side.SELL, f"{-state.streak} falls in a row"),)
        return ()

    def _signal(self, pair: str, side: Side, why: str) -> Signal:
        return Signal(strategy=self.name, pair=pair, side=side, volume=self.config.volume, reason=why)


@hookimpl
def tradebot_register_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="hello-momentum",
            factory=Momentum,
            config_cls=MomentumConfig,
            description="Buys after N rising prices, sells after N falling ones (long only)",
        )
    ]
