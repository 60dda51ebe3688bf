"""RSI mean reversion: Wilder's smoothing checked against exact fractions, signals, config."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest

from tests.strategies.conftest import random_walk, tick
from tradebot.app.config import structure
from tradebot.core.models import Side
from tradebot.core.strategy import StrategyContext
from tradebot.strategies.rsi_reversion import RsiReversion, RsiReversionConfig, WilderRsi, create


def close_to(value: Decimal | None, exact: Fraction) -> bool:
    assert value is not None
    return abs(Fraction(value) - exact) < Fraction(1, 10**20)


def make(**params: object) -> RsiReversion:
    return create(RsiReversionConfig(**params), StrategyContext(name="rsi", pairs=["BTC/USD"]))


def test_wilder_rsi_by_hand() -> None:
    rsi = WilderRsi(3)
    # prices 10 11 12 11: changes +1 +1 -1 -> seed averages gain 2/3, loss 1/3 -> RSI 200/3
    assert [rsi.update(Decimal(p)) for p in (10, 11, 12)] == [None, None, None]
    assert close_to(rsi.update(Decimal(11)), Fraction(200, 3))
    # -1: gain (2/3*2)/3 = 4/9, loss (1/3*2 + 1)/3 = 5/9 -> RSI 400/9
    assert close_to(rsi.update(Decimal(10)), Fraction(400, 9))
    # -1: gain 8/27, loss 19/27 -> RSI 800/27
    assert close_to(rsi.update(Decimal(9)), Fraction(800, 27))
    # +4: gain (16/27 + 4)/3 = 124/81, loss (38/27)/3 = 38/81 -> RSI 12400/162
    assert close_to(rsi.update(Decimal(13)), Fraction(12400, 162))


def test_flat_prices_give_fifty_and_only_gains_give_hundred() -> None:
    flat = WilderRsi(2)
    for _ in range(4):
        value = flat.update(Decimal(5))
    assert value == Decimal(50)
    up = WilderRsi(2)
    for p in (1, 2, 3, 4):
        value = up.update(Decimal(p))
    assert value == Decimal(100)


def test_buys_when_oversold_and_sells_when_overbought() -> None:
    rsi = make(period=3, volume=Decimal("0.2"))
    # RSI after 11, 10, 9 (as in test_wilder_rsi_by_hand): 66.7, 44.4, 29.6 < 30: buy
    prices = [10, 11, 12, 11, 10, 9]
    out = [(i, s.side, s.volume) for i, p in enumerate(prices) for s in rsi.on_event(tick(p))]
    assert out == [(5, Side.BUY, Decimal("0.2"))]
    assert rsi.holding("BTC/USD")
    # -1 again: gain 16/81, loss 65/81 -> 19.75: holding, so no second buy
    assert rsi.on_event(tick(8)) == ()
    # +4: gain (32/81 + 4)/3 = 356/243, loss 130/243 -> RSI 35600/486 = 73.25 > 70: sell
    (sell,) = rsi.on_event(tick(12))
    assert sell.side is Side.SELL
    assert sell.reason == "RSI3 73.3 above 70"
    assert close_to(rsi.rsi("BTC/USD"), Fraction(35600, 486))
    assert not rsi.holding("BTC/USD")


def test_overbought_without_a_position_does_nothing() -> None:
    rsi = make(period=2)
    assert [s for p in (1, 2, 3, 4, 5) for s in rsi.on_event(tick(p))] == []
    assert rsi.rsi("BTC/USD") == Decimal(100)


def test_defaults_trade_in_most_thirty_second_simulated_runs() -> None:
    traded = 0
    for seed in range(10):
        rsi = make()
        sides = [s.side for t in random_walk(seed) for s in rsi.on_event(t)]
        if sides:
            traded += 1
            assert sides[0] is Side.BUY
        assert all(a is not b for a, b in itertools.pairwise(sides))
    assert traded >= 7


def test_config_rules() -> None:
    with pytest.raises(ValueError, match=r"oversold must be < overbought \(got oversold=80, overbought=20\)"):
        RsiReversionConfig(oversold=Decimal(80), overbought=Decimal(20))
    obj, issues = structure({"period": 1, "overbought": 120}, RsiReversionConfig, "$.p")
    assert obj is None
    assert issues == [
        "period must be > 1 (got 1) @ $.p.period",
        "overbought must be between 0 and 100 (got 120) @ $.p.overbought",
    ]
