"""Counter-with-decay limiter, minimum spacing and per-pair trading limiter on a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tradebot.core.clock import FakeClock
from tradebot.resilience.ratelimit import (
    DecayingCounter,
    MinSpacing,
    RateTier,
    RequestRateLimiter,
    TradingRateLimiter,
)

STARTER = RateTier("starter", 15, 0.33)


class ExchangeCounter:
    """The exchange's side of the model: rejects a call that pushes the counter over max."""

    def __init__(self, tier: RateTier, clock: FakeClock) -> None:
        self.tier, self.clock = tier, clock
        self.level, self.t = 0.0, clock.monotonic()
        self.rejected = 0
        self.accepted = 0

    def call(self, cost: float) -> None:
        now = self.clock.monotonic()
        self.level = max(0.0, self.level - (now - self.t) * self.tier.decay_per_s)
        self.t = now
        if self.level + cost > self.tier.max_counter:
            self.rejected += 1
        else:
            self.level += cost
            self.accepted += 1


async def run_until_done(clock: FakeClock, tasks: list[asyncio.Task[None]], step: float = 0.05) -> None:
    while not all(t.done() for t in tasks):
        await clock.advance(step)
    for t in tasks:
        t.result()


async def test_sustained_load_above_tier_rate_is_never_rejected() -> None:
    clock = FakeClock()
    limiter = RequestRateLimiter.build(STARTER, min_spacing_s=0.15, clock=clock, margin=1.0)
    exchange = ExchangeCounter(STARTER, clock)

    async def worker(costs: list[int]) -> None:
        for cost in costs:
            await limiter.acquire(cost)
            exchange.call(cost)

    # 6 workers x 20 calls, some costing 2 (ledger/trades), far above 0.33/s
    tasks = [asyncio.create_task(worker([2 if (i + w) % 5 == 0 else 1 for i in range(20)])) for w in range(6)]
    start = clock.monotonic()
    await run_until_done(clock, tasks)
    elapsed = clock.monotonic() - start
    assert exchange.rejected == 0
    assert exchange.accepted == 120
    total_cost = sum(2 if (i + w) % 5 == 0 else 1 for w in range(6) for i in range(20))
    # it really waited: the burst is 14, the rest drains at 0.33/s
    assert elapsed >= (total_cost - 14) / 0.33 - 1
    assert limiter.counter is not None and limiter.counter.waits > 0


async def test_unlimited_client_would_be_rejected() -> None:
    """The same load without the limiter is rejected by the exchange model (the test can fail)."""
    clock = FakeClock()
    exchange = ExchangeCounter(STARTER, clock)
    for _ in range(30):
        exchange.call(1)
        await clock.advance(0.15)
    assert exchange.rejected > 0


async def test_counter_decays_and_first_burst_is_free() -> None:
    clock = FakeClock()
    c = DecayingCounter(RateTier("t", 10, 1.0), clock=clock)
    for _ in range(10):
        assert await c.acquire(1) == 0.0
    assert c.level == pytest.approx(10)
    await clock.advance(4)
    assert c.level == pytest.approx(6)
    task = asyncio.create_task(c.acquire(5))
    await asyncio.sleep(0)  # let it compute its wait at t=4
    await clock.advance(0.5)
    assert not task.done()
    await clock.advance(0.6)
    assert task.done() and task.result() == pytest.approx(1.0, abs=0.01)


async def test_penalize_makes_the_next_call_wait() -> None:
    clock = FakeClock()
    c = DecayingCounter(RateTier("t", 10, 2.0), clock=clock)
    c.penalize()
    assert c.wait_needed(1) == pytest.approx(0.5)


async def test_cost_above_limit_is_refused() -> None:
    c = DecayingCounter(RateTier("t", 10, 2.0), clock=FakeClock(), margin=1)
    with pytest.raises(ValueError, match="can never fit under the limit"):
        await c.acquire(10)


async def test_min_spacing_between_call_starts() -> None:
    clock = FakeClock()
    spacing = MinSpacing(0.15, clock=clock)
    starts: list[float] = []

    async def call() -> None:
        await spacing.acquire()
        starts.append(clock.monotonic())

    tasks = [asyncio.create_task(call()) for _ in range(5)]
    await run_until_done(clock, tasks, step=0.01)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 5
    assert all(g >= 0.15 - 1e-9 for g in gaps)


async def test_public_calls_only_observe_spacing() -> None:
    clock = FakeClock()
    limiter = RequestRateLimiter.build(RateTier("t", 2, 0.1), min_spacing_s=0.0, clock=clock)
    for _ in range(50):
        assert await limiter.acquire(1, counted=False) == 0.0


async def test_trading_limiter_is_per_pair() -> None:
    clock = FakeClock()
    limiter = TradingRateLimiter(RateTier("pro", 10, 1.0), clock=clock, margin=0)
    for _ in range(10):
        await limiter.acquire("BTC/USD")
    # another pair still has its full budget
    assert await limiter.acquire("ETH/USD") == 0.0
    task = asyncio.create_task(limiter.acquire("BTC/USD", 2))
    await clock.advance(1.5)
    assert not task.done()
    await clock.advance(0.6)
    assert task.done()


# --- the synchronous fast path --------------------------------------------------------


async def test_try_acquire_takes_cost_and_spacing_only_when_nothing_waits() -> None:
    clock = FakeClock()
    limiter = RequestRateLimiter.build(RateTier("t", 10, 1.0), min_spacing_s=0.2, clock=clock, margin=0)
    assert limiter.counter is not None
    assert limiter.try_acquire(3)
    assert limiter.counter.level == pytest.approx(3)
    # the spacing slot is taken: a second call right away may not start, and takes nothing
    assert not limiter.try_acquire(3)
    assert limiter.counter.level == pytest.approx(3)
    await clock.advance(0.2)
    assert limiter.try_acquire(3)
    assert limiter.counter.level == pytest.approx(6 - 0.2)
    # the counter is the limit now: nothing is taken, not even the spacing slot
    await clock.advance(0.2)
    assert not limiter.try_acquire(5)
    assert limiter.counter.level == pytest.approx(6 - 0.4)
    assert limiter.spacing.try_acquire()  # the slot was left free
    with pytest.raises(ValueError, match="can never fit under the limit"):
        limiter.try_acquire(11)  # can never fit: refused as acquire() refuses it


def test_try_acquire_uncounted_only_observes_spacing() -> None:
    clock = FakeClock()
    limiter = RequestRateLimiter.build(RateTier("t", 2, 0.1), min_spacing_s=0.0, clock=clock)
    for _ in range(50):
        assert limiter.try_acquire(1, counted=False)
    assert limiter.counter is not None and limiter.counter.level == 0


async def test_fast_path_never_overtakes_a_queued_caller() -> None:
    clock = FakeClock()
    counter = DecayingCounter(RateTier("t", 10, 1.0), clock=clock)
    for _ in range(10):
        assert counter.try_acquire(1)
    queued = asyncio.create_task(counter.acquire(5))  # has to wait 5 s
    await asyncio.sleep(0)
    await clock.advance(4)
    # 4 units have drained: a cost of 1 would fit, but the queued caller is first in line
    assert not counter.try_acquire(1)
    assert counter.level == pytest.approx(6)
    await clock.advance(1.1)
    assert queued.done() and queued.result() == pytest.approx(5.0, abs=0.01)
    await clock.advance(10)
    assert counter.try_acquire(1)  # nobody queued any more: the fast path is open again


async def test_spacing_fast_path_never_overtakes_a_queued_caller() -> None:
    clock = FakeClock()
    spacing = MinSpacing(1.0, clock=clock)
    assert spacing.try_acquire()
    queued = asyncio.create_task(spacing.acquire())  # sleeps until its slot, 1 s on
    await asyncio.sleep(0)
    clock._t += 1.5  # time passes, but the sleeper has not been woken yet
    assert not spacing.try_acquire()  # the slot is free by the clock, yet the queued call is first
    await clock.advance(0)
    await asyncio.sleep(0)
    assert queued.done()
    assert not spacing.try_acquire()  # the queued call just started: the next slot is 1 s away
    await clock.advance(1.0)
    assert spacing.try_acquire()
