"""Grid trading: buy each time the price falls through a level, sell one level higher.

Levels sit ``spacing_pct`` percent apart around a reference price, ``levels`` on each side:
``reference * (1 + k * spacing_pct / 100)`` for ``k = -levels .. levels``. The reference is
the configured one for the pair, else the first price seen.

Crossing *down* through a level (from above it to at or below it) buys a lot for that
level (``quote_amount`` worth at that price, never below the pair's minimum order; or a
fixed ``volume``), unless that level's lot is already held; the top level never buys, as
nothing above it could sell the lot. Crossing *up* through a level (from below it to at or
above it) sells the lot bought one level lower, if held. Several levels crossed by one
move give one signal with the summed volume. Starting exactly on a level is not a
crossing. Long only; Decimal throughout.

What a round trip earns, net of fees: orders are market orders, so both fills pay the
taker fee ``t`` (percent). A lot bought at ``L`` and sold one level up at ``L * (1 + s/100)``
nets ``L * volume * (s - t * (2 + s/100)) / 100``: with Kraken's first tier (t = 0.40 %) and
the default spacing of 1 % that is about 0.196 % of the lot's cost (before the spread and
any move between the crossing and the fill). A spacing that does not cover the round
trip's fees loses on every round trip, so the strategy refuses to start with one
(:class:`~tradebot.core.errors.ConfigError` naming the spacing and the fees of the pair).

What the instance holds is read from its context (the bot's persisted portfolio, see
:class:`~tradebot.core.strategy.StrategyContext`), and the set of held levels follows it
before every decision: a lot that was refused or never filled is dropped (the levels taken
last first), and a holding the grid does not know
of (after a restart the grid is rebuilt around the first price) is taken as lots of the
levels at and just below the current price, each to be sold one level higher. A sell never exceeds
what the instance holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import attrs

from tradebot.api import (
    PRICE_SOURCES,
    ComponentSpec,
    ConfigError,
    PriceSampler,
    Side,
    Signal,
    StrategyContext,
    buy_volume,
    gt,
    hookimpl,
    lt,
    one_of,
)

__all__ = ["Grid", "GridConfig", "grid_levels", "round_trip_net_pct", "tradebot_register_strategies"]


def _positive_prices(
    _inst: object, attribute: attrs.Attribute[Mapping[str, Decimal]], value: Mapping[str, Decimal]
) -> None:
    for pair, price in value.items():
        if not price > 0:
            raise ValueError(f"{attribute.name} must be > 0 for every pair (got {price} for {pair})")


@attrs.frozen
class GridConfig:
    """``[strategies.<name>.params]`` of a ``grid`` instance."""

    levels: int = attrs.field(default=5, validator=gt(0))
    """Levels below and above the reference price (the grid has ``2 * levels + 1``)."""
    spacing_pct: Decimal = attrs.field(default=Decimal("1"), validator=[gt(0), lt(100)])
    """Distance between neighbouring levels, in percent of the reference price; must cover
    a round trip's fees (two taker fills) on every traded pair."""
    quote_amount: Decimal = attrs.field(default=Decimal("20"), validator=gt(0))
    """Quote-currency value of the lot bought at each level (on the pair's lot grid, never
    below the pair's minimum order)."""
    volume: Decimal | None = attrs.field(default=None, validator=attrs.validators.optional(gt(0)))
    """A fixed base-currency volume per level instead of ``quote_amount``."""
    reference_prices: dict[str, Decimal] = attrs.field(factory=dict, validator=_positive_prices)
    """Reference price per pair; pairs not listed use the first price seen."""
    source: str = attrs.field(default="ticker", validator=one_of(PRICE_SOURCES))
    """``ticker`` (mid of every tick) or ``candle`` (close of every finished bar)."""

    def __attrs_post_init__(self) -> None:
        if self.levels * self.spacing_pct >= 100:
            raise ValueError(
                f"levels * spacing_pct must be < 100 so every level is above zero "
                f"(got levels={self.levels}, spacing_pct={self.spacing_pct})"
            )


def round_trip_net_pct(spacing_pct: Decimal, taker_fee_pct: Decimal) -> Decimal:
    """What one round trip (buy at a level, sell one level up, both taker) earns, in percent of the buy."""
    return spacing_pct - taker_fee_pct * (2 + spacing_pct / 100)


def grid_levels(reference: Decimal, levels: int, spacing_pct: Decimal) -> list[Decimal]:
    """The grid's prices, lowest first."""
    step = spacing_pct / 100
    return [reference * (1 + k * step) for k in range(-levels, levels + 1)]


@attrs.define
class _PairGrid:
    levels: list[Decimal]
    last: Decimal
    held: dict[int, Decimal] = attrs.Factory(dict)  # level index -> volume of the lot bought there
    taken: list[int] = attrs.Factory(list)  # the held levels in the order they were taken


class Grid:
    """The grid strategy for one configured instance (quick: runs on the loop)."""

    blocking = False

    def __init__(self, config: GridConfig, context: StrategyContext) -> None:
        self.config = config
        self.name = context.name
        self.context = context
        for pair in context.pairs:
            rules = context.markets(pair)
            if rules is not None and round_trip_net_pct(config.spacing_pct, rules.taker_fee_pct) <= 0:
                fees = rules.taker_fee_pct * (2 + config.spacing_pct / 100)
                raise ConfigError(
                    f"grid {context.name}: spacing_pct {config.spacing_pct}% does not cover a round trip's fees on "
                    f"{pair}: {fees:.4f}% (two taker fills at {rules.taker_fee_pct}%); every round trip would lose. "
                    f"Use a spacing above {fees:.4f}% @ $.strategies.{context.name}.params.spacing_pct"
                )
        self._sampler = PriceSampler(config.source)
        self._grids: dict[str, _PairGrid] = {}

    def levels(self, pair: str) -> list[Decimal] | None:
        """The grid of ``pair``, None before its first price (without a configured reference)."""
        grid = self._grids.get(pair)
        if grid is not None:
            return list(grid.levels)
        ref = self.config.reference_prices.get(pair)
        return None if ref is None else grid_levels(ref, self.config.levels, self.config.spacing_pct)

    def held(self, pair: str) -> list[Decimal]:
        """Prices of the levels whose lots the strategy holds, lowest first."""
        grid = self._grids.get(pair)
        return [] if grid is None else [grid.levels[i] for i in sorted(grid.held)]

    def on_event(self, event: object) -> Sequence[Signal]:
        price = self._sampler.sample(event)
        if price is None:
            return ()
        pair: str = event.pair  # type: ignore[attr-defined]
        grid = self._grids.get(pair)
        if grid is None:
            cfg = self.config
            ref = cfg.reference_prices.get(pair, price)
            grid = self._grids[pair] = _PairGrid(
                levels=grid_levels(ref, cfg.levels, cfg.spacing_pct), last=price
            )
            self._follow_position(pair, grid)
            return ()
        self._follow_position(pair, grid)
        last, grid.last = grid.last, price
        if price < last:
            top = len(grid.levels) - 1
            bought = [
                i
                for i, level in enumerate(grid.levels)
                if price <= level < last and i < top and i not in grid.held
            ]
            if not bought:
                return ()
            rules = self.context.markets(pair)
            cfg = self.config
            lots = {i: buy_volume(cfg.quote_amount, cfg.volume, grid.levels[i], rules) for i in bought}
            grid.held.update(lots)
            volume = sum(lots.values(), Decimal(0))
            grid.taken.extend(bought)
            return (self._signal(pair, Side.BUY, volume, "fell through", [grid.levels[i] for i in bought]),)
        if price > last:
            sold = [i for i, level in enumerate(grid.levels) if last < level <= price and i - 1 in grid.held]
            if not sold:
                return ()
            lots_sold = [grid.held.pop(i - 1) for i in sold if i - 1 in grid.held]
            grid.taken = [i for i in grid.taken if i in grid.held]
            volume = min(sum(lots_sold, Decimal(0)), self.context.sellable(pair))
            if volume <= 0:
                return ()
            return (self._signal(pair, Side.SELL, volume, "rose through", [grid.levels[i] for i in sold]),)
        return ()

    def _lot(self, pair: str, level: Decimal) -> Decimal:
        """The volume a buy at ``level`` takes (the pair's market rules applied)."""
        return buy_volume(self.config.quote_amount, self.config.volume, level, self.context.markets(pair))

    def _follow_position(self, pair: str, grid: _PairGrid) -> None:
        """Make the held levels match what the instance holds (or has on its way)."""
        exposure = max(self.context.exposure(pair), Decimal(0))
        # drop the levels taken last (a refused buy's) while they add up to more than is held
        order = [i for i in grid.taken if i in grid.held] + sorted(
            i for i in grid.held if i not in grid.taken
        )
        while order and sum(grid.held.values(), Decimal(0)) > exposure:
            grid.held.pop(order.pop())
        grid.taken = [i for i in grid.taken if i in grid.held]
        spare = exposure - sum(grid.held.values(), Decimal(0))
        if spare <= 0:
            return
        top = len(grid.levels) - 1
        # a holding the grid does not know of: lots of the levels at or just below the price,
        # which sell when the price rises through the next level up
        below = [
            i for i, level in enumerate(grid.levels) if level <= grid.last and i < top and i not in grid.held
        ]
        for i in reversed(below):
            lot = min(self._lot(pair, grid.levels[i]), spare)
            if lot <= 0:
                break
            grid.held[i] = lot
            grid.taken.append(i)
            spare -= lot

    def _signal(self, pair: str, side: Side, volume: Decimal, what: str, prices: list[Decimal]) -> Signal:
        shown = ", ".join(f"{p:.2f}" for p in prices)
        return self.context.signal(pair, side, volume, reason=f"{what} grid level(s) {shown}")


def create(config: GridConfig, context: StrategyContext) -> Grid:
    """Factory: one strategy object per configured instance."""
    return Grid(config, context)


@hookimpl
def tradebot_register_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="grid",
            factory=create,
            config_cls=GridConfig,
            description="Grid trading: buy each level the price falls through, sell it one level higher.",
        )
    ]
