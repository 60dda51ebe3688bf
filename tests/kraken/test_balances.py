"""Balances: last known values served as stale (with age) when the exchange cannot be reached."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from tradebot.core.clock import FakeClock
from tradebot.core.errors import AuthError, ExchangeUnavailable, RequestTimeout
from tradebot.exchanges.kraken.balances import BalanceManager

from .conftest import make_exchange
from .fake_kraken import FakeKraken

DOWN = ("status", 502, b"<title>502: Bad gateway</title>")


async def test_stale_balances_while_down_then_fresh(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path, breaker_min_calls=20, breaker_window=20)
    try:
        server.then("Balance", DOWN, DOWN, DOWN)
        with pytest.raises(ExchangeUnavailable):  # nothing fetched yet: no made-up numbers
            await ex.balances()
        fresh = await ex.balances()
        assert not fresh.stale and fresh.get("USD") == Decimal("171288.6158")
        await asyncio.sleep(0.05)
        server.then("Balance", DOWN, DOWN, DOWN)
        stale = await ex.balances()
        assert stale.stale and stale.age_s >= 0.049  # uvloop's timers keep milliseconds
        assert stale.totals == fresh.totals and stale.as_of == fresh.as_of
        again = await ex.balances()  # the API is back
        assert not again.stale and again.age_s == 0.0 and again.as_of > fresh.as_of
    finally:
        await ex.close()
    assert ex.balance_manager.stale_served == 1


async def test_permanent_errors_are_raised_not_hidden(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    try:
        await ex.balances()
        server.then("Balance", ("json", {"error": ["EAPI:Invalid key"]}))
        with pytest.raises(AuthError):
            await ex.balances()
    finally:
        await ex.close()


async def test_age_follows_the_clock_and_cache_window() -> None:
    clock = FakeClock()
    calls = 0
    fail = False

    async def fetch() -> dict[str, Decimal]:
        nonlocal calls
        calls += 1
        if fail:
            raise RequestTimeout("slow")
        return {"USD": Decimal("10")}

    manager = BalanceManager(fetch, clock=clock, cache_s=5.0)
    assert (await manager.get()).get("USD") == Decimal("10")
    await clock.advance(3)
    cached = await manager.get()
    assert calls == 1 and not cached.stale and cached.age_s == pytest.approx(3)
    await clock.advance(10)
    fail = True
    stale = await manager.get()
    assert calls == 2 and stale.stale and stale.age_s == pytest.approx(13)
    assert manager.age_s == pytest.approx(13)
