"""Helpers shared by the strategy tests."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tradebot.core.models import Candle, Ticker

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tick(price: str | int, pair: str = "BTC/USD") -> Ticker:
    """A ticker whose mid, bid, ask and last are all ``price``."""
    p = Decimal(price)
    return Ticker(pair=pair, bid=p, ask=p, last=p, volume=Decimal(1), time=T0)


def bar(minute: int, close: str | int, pair: str = "BTC/USD") -> Candle:
    c = Decimal(close)
    return Candle(pair, 1, T0 + timedelta(minutes=minute), c, c, c, c, c, Decimal(1), 1)


def random_walk(seed: int, n: int = 150, start: float = 60_000.0) -> list[Ticker]:
    """Ticks like the built-in simulator's: a geometric random walk (0.06 % per tick) with a
    drift of 0.015 % per tick that changes sign now and then; 150 ticks = 30 s at 5 ticks/s."""
    rng = random.Random(seed)
    mid, drift, out = start, 0.00015, []
    for _ in range(n):
        if rng.random() < 0.02:
            drift = -drift
        mid *= math.exp(drift + rng.gauss(0.0, 0.0006))
        p = Decimal(f"{mid:.1f}")
        out.append(Ticker(pair="BTC/USD", bid=p, ask=p + Decimal("0.1"), last=p, volume=Decimal(1), time=T0))
    return out
