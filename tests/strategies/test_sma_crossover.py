"""SMA crossover: hand-computed crosses, position intent, candles, config rules."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from tests.strategies.conftest import bar, random_walk, tick
from tradebot.app.config import structure
from tradebot.core.models import Side
from tradebot.core.strategy import StrategyContext
from tradebot.strategies.sma_crossover import SmaCrossover, SmaCrossoverConfig, create


def make(**params: object) -> SmaCrossover:
    return create(SmaCrossoverConfig(**params), StrategyContext(name="sma", pairs=["BTC/USD", "ETH/USD"]))


def run(strategy: SmaCrossover, prices: list[int], pair: str = "BTC/USD") -> list[tuple[int, Side]]:
    out = []
    for i, p in enumerate(prices):
        for sig in strategy.on_event(tick(p, pair)):
            assert sig.strategy == "sma"
            assert sig.pair == pair
            out.append((i, sig.side))
    return out


def test_golden_and_death_crosses() -> None:
    # fast=2, slow=3; the window after each price and fast*3 - slow*2:
    # [10,10,10] 0 (no regime) | [10,10,9] -1 | [10,9,12] +1 golden | [9,12,13] +7
    # [12,13,8] -3 death | [13,8,7] -11 | [8,7,20] +11 golden
    sma = make(fast=2, slow=3, volume=Decimal("0.5"))
    assert run(sma, [10, 10, 10, 9, 12, 13, 8, 7, 20]) == [(4, Side.BUY), (6, Side.SELL), (8, Side.BUY)]
    assert sma.averages("BTC/USD") == (Decimal("13.5"), Decimal(35) / 3)
    assert sma.holding("BTC/USD")


def test_signal_carries_volume_and_reason() -> None:
    sma = make(fast=2, slow=3, volume=Decimal("0.5"))
    signals = [s for p in [10, 10, 10, 9, 12] for s in sma.on_event(tick(p))]
    assert len(signals) == 1
    assert signals[0].volume == Decimal("0.5")
    assert signals[0].reason == "golden cross: SMA2 10.50 vs SMA3 10.33"


def test_no_sell_without_a_position_and_no_signal_from_the_first_regime() -> None:
    # [10,10,11] +1 sets the regime (no buy) | [10,11,5] death cross while flat: nothing
    # | [11,5,20] golden cross: buy
    sma = make(fast=2, slow=3)
    assert run(sma, [10, 10, 11, 5, 20]) == [(4, Side.BUY)]


def test_touching_equality_is_not_a_cross() -> None:
    # [1,2,3] +1 regime | [2,3,1] fast 4 slow 6: 12-12 = 0 keeps the regime | [3,1,5] +: same regime
    sma = make(fast=2, slow=3)
    assert run(sma, [1, 2, 3, 1, 5]) == []


def test_pairs_are_independent() -> None:
    sma = make(fast=2, slow=3)
    assert run(sma, [10, 10, 10, 9], "ETH/USD") == []
    assert run(sma, [10, 10, 10, 9, 12], "BTC/USD") == [(4, Side.BUY)]
    assert not sma.holding("ETH/USD")
    assert run(sma, [12], "ETH/USD") == [(0, Side.BUY)]


def test_candle_source_uses_closes_of_finished_bars_only() -> None:
    sma = make(fast=2, slow=3, source="candle")
    events = [bar(0, 10), bar(1, 10), bar(2, 10), bar(3, 9), bar(3, 50), tick(1000), bar(4, 12)]
    # finished closes: 10, 10, 10 (bars 0-2), then bar 3 finishes at 50 (its last update)
    out = [s for e in events for s in sma.on_event(e)]
    assert out == []
    # closes 10, 10, 10, 50 set the regime (+1); then bar 4 finishes at 12 ([10,50,12]: +),
    # bar 5 at 1 ([50,12,1]: death cross while flat) and bar 6 at 90 ([12,1,90]: golden cross)
    assert [s.side for e in (bar(5, 1), bar(6, 90), bar(7, 90)) for s in sma.on_event(e)] == [Side.BUY]


def test_defaults_trade_in_a_thirty_second_simulated_run() -> None:
    for seed in range(10):
        sma = make()
        signals = [s for t in random_walk(seed) for s in sma.on_event(t)]
        assert signals, f"seed {seed}: no trade in 150 ticks"
        sides = [s.side for s in signals]
        assert sides[0] is Side.BUY
        assert all(a is not b for a, b in itertools.pairwise(sides))  # never repeats


def test_config_rules() -> None:
    with pytest.raises(ValueError, match=r"fast must be < slow \(got fast=20, slow=5\)"):
        SmaCrossoverConfig(fast=20, slow=5)
    obj, issues = structure({"fast": 20, "slow": 5}, SmaCrossoverConfig, "$.strategies.sma.params")
    assert obj is None
    assert issues == ["fast must be < slow (got fast=20, slow=5) @ $.strategies.sma.params"]
    obj, issues = structure({"volume": "-1", "source": "trades"}, SmaCrossoverConfig, "$.s.params")
    assert obj is None
    assert issues == [
        "volume must be > 0 (got -1) @ $.s.params.volume",
        "source must be one of 'ticker', 'candle' (got 'trades') @ $.s.params.source",
    ]
    obj, issues = structure({"fast": 3, "slow": 8, "volume": "0.25"}, SmaCrossoverConfig, "$")
    assert issues == []
    assert obj == SmaCrossoverConfig(fast=3, slow=8, volume=Decimal("0.25"))
