"""The price path is reproducible under a seed and moves like a market."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from tradebot.simulator._catalog import default_catalog
from tradebot.simulator._market import Market

START = datetime(2026, 1, 1, tzinfo=UTC)


def path(seed: int, ticks: int = 300) -> list[tuple[str, ...]]:
    market = Market(default_catalog(), seed, START)
    out = []
    for _ in range(ticks):
        market.step(START)
        out.append(tuple(str(market[key].last) for key in ("XXBTZUSD", "XETHZUSD")))
    return out


def test_same_seed_same_path() -> None:
    assert path(7) == path(7)
    assert path(7) != path(8)


def test_path_moves_and_changes_direction() -> None:
    prices = [float(p[0]) for p in path(3, 600)]
    assert len(set(prices)) > 100
    moves = [math.copysign(1, b - a) for a, b in zip(prices[::50], prices[50::50], strict=False) if a != b]
    assert 1 in moves and -1 in moves
    assert 0.7 < prices[-1] / prices[0] < 1.3


def test_bid_below_ask_and_on_tick() -> None:
    market = Market(default_catalog(), 1, START)
    for _ in range(100):
        market.step(START)
        for pm in market.pairs.values():
            assert pm.bid < pm.ask
            assert (pm.ask / pm.pair.tick_size) % 1 == 0


def test_candles_follow_ticks() -> None:
    market = Market(default_catalog(), 1, START)
    pm = market["XXBTZUSD"]
    for _ in range(20):
        market.step(START)
    bar = pm.candles[1][-1]
    assert bar.count == 20 and bar.close == pm.last and bar.low <= pm.last <= bar.high
    assert len(pm.candles[1]) == 720
