"""Kraken's rate limiters, driven by a fake clock so decay needs no waiting."""

from __future__ import annotations

import aiohttp

from tradebot.core.clock import FakeClock
from tradebot.simulator import run_simulator
from tradebot.simulator._ratelimit import DecayCounter, order_age_penalty

from .conftest import KrakenTestClient


async def test_decay_counter() -> None:
    clock = FakeClock()
    counter = DecayCounter(3, 1.0, clock)
    assert all(counter.try_add(1) for _ in range(3))
    assert not counter.try_add(1)
    await clock.advance(1.0)
    assert counter.try_add(1) and not counter.try_add(1)
    assert order_age_penalty(1) == 8 and order_age_penalty(400) == 0


async def test_rest_counter_per_tier(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with run_simulator(tick_interval_s=0, rate_tier="starter", clock=clock) as sim:
        kraken = KrakenTestClient(session, sim)
        results = [(await kraken.private("Balance"))["error"] for _ in range(16)]
        assert results[:15] == [[]] * 15
        assert results[15] == ["EAPI:Rate limit exceeded"]
        await clock.advance(3.1)  # starter decays 0.33/s: one call's worth back
        assert (await kraken.private("Balance"))["error"] == []
        assert (await kraken.private("Balance"))["error"] == ["EAPI:Rate limit exceeded"]


async def test_trade_history_costs_two(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with run_simulator(tick_interval_s=0, rate_tier="intermediate", clock=clock) as sim:
        kraken = KrakenTestClient(session, sim)
        errors = [(await kraken.private("TradesHistory"))["error"] for _ in range(11)]
        assert errors.count([]) == 10 and errors[-1] == ["EAPI:Rate limit exceeded"]
        # public calls and order calls are not on the REST counter
        assert (await kraken.public("Time"))["error"] == []
        placed = await kraken.private(
            "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.001"
        )
        assert placed["error"] == []


async def test_matching_engine_limit_per_pair(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with run_simulator(tick_interval_s=0, clock=clock, faults="order_ratelimit=2/1") as sim:
        kraken = KrakenTestClient(session, sim)
        args = dict(type="buy", ordertype="market", volume="0.01")
        assert (await kraken.private("AddOrder", pair="XBTUSD", **args))["error"] == []
        assert (await kraken.private("AddOrder", pair="XBTUSD", **args))["error"] == []
        assert (await kraken.private("AddOrder", pair="XBTUSD", **args))["error"] == [
            "EOrder:Rate limit exceeded"
        ]
        # another pair has its own limiter
        assert (await kraken.private("AddOrder", pair="ETHUSD", **args))["error"] == []
        await clock.advance(1.0)
        assert (await kraken.private("AddOrder", pair="XBTUSD", **args))["error"] == []
        assert sim.state()["orders_created"] == {}
        assert len(sim.account.orders) == 4
