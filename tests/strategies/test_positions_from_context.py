"""Strategies read what they hold from their context (the bot's portfolio), never a copy."""

from __future__ import annotations

from decimal import Decimal as D

import attrs

from tradebot.core.clock import FakeClock
from tradebot.core.models import Side
from tradebot.core.strategy import IN_FLIGHT_TTL_S, StrategyContext
from tradebot.strategies.grid import Grid, GridConfig
from tradebot.strategies.rsi_reversion import RsiReversion, RsiReversionConfig
from tradebot.strategies.sma_crossover import SmaCrossover, SmaCrossoverConfig

from .conftest import tick


@attrs.define
class Book:
    """A position reader as the bot's portfolio and journal provide it."""

    held: dict[tuple[str, str], D] = attrs.Factory(dict)
    buys: dict[tuple[str, str], D] = attrs.Factory(dict)
    sells: dict[tuple[str, str], D] = attrs.Factory(dict)

    def position(self, strategy: str, pair: str) -> D:
        return self.held.get((strategy, pair), D(0))

    def working(self, strategy: str, pair: str) -> tuple[D, D]:
        return self.buys.get((strategy, pair), D(0)), self.sells.get((strategy, pair), D(0))


def ctx(book: Book, name: str = "s", clock: FakeClock | None = None) -> StrategyContext:
    return StrategyContext(name=name, pairs=["BTC/USD"], clock=clock or FakeClock(), positions=book)


async def test_a_refused_or_lost_buy_never_shows_as_held() -> None:
    clock = FakeClock()
    book = Book()
    c = ctx(book, clock=clock)
    sig = c.signal("BTC/USD", Side.BUY, D("0.5"))
    assert c.exposure("BTC/USD") == D("0.5") and c.position("BTC/USD") == 0  # on its way, not held
    c.settle(sig)  # the risk gate refused it
    assert c.exposure("BTC/USD") == 0 and c.sellable("BTC/USD") == 0
    c.signal("BTC/USD", Side.BUY, D("0.5"))  # this one is dropped before the bot takes it
    await clock.advance(IN_FLIGHT_TTL_S + 1)
    assert c.exposure("BTC/USD") == 0
    book.held[("s", "BTC/USD")] = D("0.5")  # a fill
    book.sells[("s", "BTC/USD")] = D("0.2")  # a sell working
    assert c.position("BTC/USD") == D("0.5") and c.sellable("BTC/USD") == D("0.3")
    assert ctx(book, name="other").position("BTC/USD") == 0  # another instance's lot is not its own


def _cross_down_then_up(strategy: SmaCrossover) -> list[object]:
    out: list[object] = []
    for p in [100] * 4 + [90, 80, 70, 60] + [70, 90, 120, 150]:
        out.extend(strategy.on_event(tick(p)))
    return out


def test_sma_after_a_restart_sells_the_lot_it_held_and_does_not_buy_another() -> None:
    book = Book(held={("sma", "BTC/USD"): D("0.004")})  # bought before the restart
    sma = SmaCrossover(SmaCrossoverConfig(fast=2, slow=4, volume=D("0.002")), ctx(book, "sma"))
    assert sma.holding("BTC/USD")
    signals = []
    for p in [100] * 4 + [110, 120, 130, 140] + [130, 110, 90, 70]:  # golden, then death cross
        signals.extend(sma.on_event(tick(p)))
    assert [(s.side, s.volume) for s in signals] == [(Side.SELL, D("0.004"))]


def test_rsi_does_not_buy_while_holding_and_sells_all_it_holds() -> None:
    book = Book(held={("rsi", "BTC/USD"): D("0.006")})
    rsi = RsiReversion(RsiReversionConfig(period=2, oversold=D(30), overbought=D(70)), ctx(book, "rsi"))
    signals = []
    for p in [100, 90, 80, 70, 60, 70, 90, 120]:
        signals.extend(rsi.on_event(tick(p)))
    assert [(s.side, s.volume) for s in signals] == [(Side.SELL, D("0.006"))]


def test_grid_takes_a_holding_it_does_not_know_as_lots_below_the_price() -> None:
    book = Book(held={("grid", "BTC/USD"): D("0.004")})  # two lots from before a restart
    grid = Grid(GridConfig(levels=3, spacing_pct=D(1), volume=D("0.002")), ctx(book, "grid"))
    grid.on_event(tick(100))
    assert grid.held("BTC/USD") == [D(99), D(100)]  # the levels at and just below the price
    assert list(grid.on_event(tick("100.5"))) == []
    signals = list(grid.on_event(tick("101.5")))  # up through 101: the lot of 100 is sold
    assert [(s.side, s.volume) for s in signals] == [(Side.SELL, D("0.002"))]
    grid.context.settle(signals[0])  # the bot took it ...
    book.held[("grid", "BTC/USD")] = D("0.002")  # ... and it filled
    assert list(grid.on_event(tick("101.6"))) == [] and grid.held("BTC/USD") == [D(99)]
    # a buy the gate refuses is dropped from the held levels at the next price
    signals = list(grid.on_event(tick("99.5")))  # down through 101 and 100: buys their lots
    assert [(s.side, s.volume) for s in signals] == [(Side.BUY, D("0.004"))]
    assert grid.held("BTC/USD") == [D(99), D(100), D(101)]
    grid.context.settle(signals[0])  # refused
    grid.on_event(tick("99.6"))
    assert grid.held("BTC/USD") == [D(99)]
