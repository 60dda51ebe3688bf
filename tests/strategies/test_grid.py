"""Grid: levels, buys on the way down, sells one level higher, top level, config rules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.strategies.conftest import random_walk, tick
from tradebot.app.config import structure
from tradebot.core.models import Side
from tradebot.core.strategy import StrategyContext
from tradebot.strategies.grid import Grid, GridConfig, create, grid_levels


def make(**params: object) -> Grid:
    params.setdefault("volume", Decimal("0.001"))
    return create(GridConfig(**params), StrategyContext(name="grid", pairs=["BTC/USD"]))


def moves(grid: Grid, prices: list[str]) -> list[tuple[Side, Decimal, str]]:
    return [(s.side, s.volume, s.reason) for p in prices for s in grid.on_event(tick(p))]


def test_levels() -> None:
    assert grid_levels(Decimal(100), 2, Decimal(1)) == [
        Decimal(98),
        Decimal(99),
        Decimal(100),
        Decimal(101),
        Decimal(102),
    ]
    grid = make(levels=1, spacing_pct=Decimal("0.5"), reference_prices={"BTC/USD": Decimal(200)})
    assert grid.levels("BTC/USD") == [Decimal(199), Decimal(200), Decimal(201)]
    assert grid.levels("ETH/USD") is None


def test_buys_falling_through_levels_and_sells_one_level_higher() -> None:
    grid = make(levels=2, spacing_pct=Decimal(1), volume=Decimal("0.1"))  # 98 99 100 101 102
    got = moves(grid, ["100", "99.5", "98.5", "97", "99.2", "101.5", "97.5"])
    assert got == [
        (Side.BUY, Decimal("0.1"), "fell through grid level(s) 99.00"),  # 99.5 -> 98.5
        (Side.BUY, Decimal("0.1"), "fell through grid level(s) 98.00"),  # 98.5 -> 97
        (Side.SELL, Decimal("0.1"), "rose through grid level(s) 99.00"),  # sells the lot from 98
        (Side.SELL, Decimal("0.1"), "rose through grid level(s) 100.00"),  # sells the lot from 99
        (Side.BUY, Decimal("0.4"), "fell through grid level(s) 98.00, 99.00, 100.00, 101.00"),
    ]
    assert grid.held("BTC/USD") == [Decimal(98), Decimal(99), Decimal(100), Decimal(101)]


def test_landing_exactly_on_a_level_counts_once() -> None:
    grid = make(levels=2, spacing_pct=Decimal(1), reference_prices={"BTC/USD": Decimal(100)})
    got = moves(grid, ["100.5", "99", "99", "99.5", "99", "100"])
    # 100.5 -> 99 falls through 100 and 99; back up to 99.5 crosses nothing; down to 99 again:
    # 99 is held already; up to 100 sells the lot from 99
    assert [(side, vol) for side, vol, _ in got] == [
        (Side.BUY, Decimal("0.002")),
        (Side.SELL, Decimal("0.001")),
    ]
    assert grid.held("BTC/USD") == [Decimal(100)]


def test_top_level_never_buys_and_nothing_outside_the_grid() -> None:
    grid = make(levels=1, spacing_pct=Decimal(1))  # first price 100 -> 99 100 101
    assert moves(grid, ["100", "105", "100.5"]) == []  # fell through 101, the top: no buy
    assert moves(grid, ["90", "80", "120"])[0][0] is Side.BUY  # buys 100 and 99 on the way to 90
    assert grid.held("BTC/USD") == []


def test_defaults_trade_in_a_thirty_second_simulated_run() -> None:
    traded = 0
    for seed in range(10):
        grid = make()
        if any(grid.on_event(t) for t in random_walk(seed)):
            traded += 1
    assert traded >= 8


def test_config_rules() -> None:
    with pytest.raises(ValueError, match="levels \\* spacing_pct must be < 100"):
        GridConfig(levels=10, spacing_pct=Decimal(10))
    obj, issues = structure(
        {"levels": 0, "reference_prices": {"BTC/USD": "-5"}}, GridConfig, "$.strategies.grid.params"
    )
    assert obj is None
    assert issues == [
        "levels must be > 0 (got 0) @ $.strategies.grid.params.levels",
        "reference_prices must be > 0 for every pair (got -5 for BTC/USD) @ $.strategies.grid.params.reference_prices",
    ]
    obj, issues = structure({"reference_prices": {"ETH/USD": "3000"}}, GridConfig, "$")
    assert issues == []
    assert obj is not None and obj.reference_prices == {"ETH/USD": Decimal(3000)}
