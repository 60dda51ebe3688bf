"""Circuit breaker: trips on transient failures only, fast-fails, probes and closes."""

from __future__ import annotations

import contextlib
import time

import pytest

from tradebot.core.clock import FakeClock
from tradebot.core.errors import CircuitOpen, ConnectionFailed, InsufficientFunds, RateLimited, RequestTimeout
from tradebot.resilience.breaker import BreakerConfig, BreakerState, BreakerTransition, CircuitBreaker

CFG = BreakerConfig(
    window_size=4,
    min_calls=4,
    failure_rate=0.5,
    half_open_calls=2,
    open_wait_s=10.0,
    open_wait_max_s=35.0,
    backoff_factor=2.0,
)


async def ok() -> str:
    return "ok"


def failing(exc: Exception):
    async def run() -> str:
        raise exc

    return run


async def trip(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(RequestTimeout):
            await breaker.call(failing(RequestTimeout("t")))


async def test_opens_at_failure_rate_after_min_calls() -> None:
    clock = FakeClock()
    b = CircuitBreaker("kraken.public", CFG, clock=clock)
    await b.call(ok)
    await b.call(ok)
    with pytest.raises(ConnectionFailed):
        await b.call(failing(ConnectionFailed("reset")))
    assert b.state is BreakerState.CLOSED  # 3 calls < min_calls
    with pytest.raises(ConnectionFailed):
        await b.call(failing(ConnectionFailed("reset")))
    assert b.state is BreakerState.OPEN  # 2 of 4 = 50 %
    with pytest.raises(CircuitOpen) as info:
        await b.call(ok)
    assert "kraken.public" in str(info.value)
    assert b.rejected == 1


async def test_permanent_errors_do_not_count_as_failures() -> None:
    b = CircuitBreaker("kraken.trading", CFG, clock=FakeClock())
    for _ in range(10):
        with pytest.raises(InsufficientFunds):
            await b.call(failing(InsufficientFunds("no money")))
    assert b.state is BreakerState.CLOSED
    assert b.failure_rate == 0.0


async def test_rate_limit_answers_are_neutral_the_limiter_paces_instead() -> None:
    """A burst of look-ups after a restart meets the exchange's rate limit: that is the exchange
    up and pacing us, and must not cut every private call off for the breaker's open wait."""
    b = CircuitBreaker("kraken.private", CFG, clock=FakeClock())
    for _ in range(10):
        with pytest.raises(RateLimited):
            await b.call(failing(RateLimited("EAPI:Rate limit exceeded")))
    assert b.state is BreakerState.CLOSED
    assert b.failure_rate == 0.0
    with pytest.raises(ConnectionFailed):  # (real failures still count among them)
        await b.call(failing(ConnectionFailed("reset")))
    assert b.failure_rate == 1.0


async def test_foreign_and_cancelled_errors_are_neutral() -> None:
    b = CircuitBreaker("x", CFG, clock=FakeClock())
    for _ in range(6):
        with pytest.raises(KeyError):
            await b.call(failing(KeyError("bug")))
    assert b.state is BreakerState.CLOSED
    assert b.failure_rate == 0.0


async def test_half_open_probes_then_close_and_listeners_see_every_transition() -> None:
    clock = FakeClock()
    seen: list[BreakerTransition] = []
    b = CircuitBreaker("kraken.private", CFG, clock=clock, listeners=[seen.append])
    await trip(b)
    assert b.state is BreakerState.OPEN
    await clock.advance(9.9)
    assert b.state is BreakerState.OPEN
    await clock.advance(0.2)
    assert b.state is BreakerState.HALF_OPEN
    # two probe permits; a third concurrent caller is refused
    t1 = b.acquire()
    t2 = b.acquire()
    with pytest.raises(CircuitOpen):
        b.acquire()
    b.record(t1, None)
    assert b.state is BreakerState.HALF_OPEN
    b.record(t2, None)
    assert b.state is BreakerState.CLOSED
    assert [(t.previous, t.current) for t in seen] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert seen[0].open_wait_s == 10.0
    assert b.trips == 0


async def test_failed_probe_reopens_with_exponentially_longer_capped_wait() -> None:
    clock = FakeClock()
    seen: list[BreakerTransition] = []
    b = CircuitBreaker("kraken.public", CFG, clock=clock, listeners=[seen.append])
    await trip(b)
    waits = []
    for _ in range(3):
        wait = b.retry_after_s()
        waits.append(round(wait, 6))
        await clock.advance(wait + 0.001)
        assert b.state is BreakerState.HALF_OPEN
        with pytest.raises(RequestTimeout):
            await b.call(failing(RequestTimeout("still down")))
        assert b.state is BreakerState.OPEN
    assert waits == [10.0, 20.0, 35.0]  # 40 capped at 35
    assert b.trips == 4


async def test_outcome_of_call_started_before_trip_is_ignored() -> None:
    clock = FakeClock()
    b = CircuitBreaker("x", CFG, clock=clock)
    slow_ticket = b.acquire()
    await trip(b)
    await clock.advance(10.5)
    assert b.state is BreakerState.HALF_OPEN
    b.record(slow_ticket, RequestTimeout("late"))  # stale: must not re-open
    assert b.state is BreakerState.HALF_OPEN


async def test_open_breaker_fails_fast() -> None:
    b = CircuitBreaker("x", CFG, clock=FakeClock())
    await trip(b)
    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        with contextlib.suppress(CircuitOpen):
            b.acquire()
    per_call = (time.perf_counter() - start) / n
    assert per_call < 50e-6  # microseconds, not a network round trip


def test_config_validation_names_the_rule() -> None:
    with pytest.raises(ValueError, match="min_calls must be <= window_size"):
        BreakerConfig(window_size=3, min_calls=5)
    with pytest.raises(ValueError, match="open_wait_s must be > 0"):
        BreakerConfig(open_wait_s=0)


async def test_reset_closes() -> None:
    b = CircuitBreaker("x", CFG, clock=FakeClock())
    await trip(b)
    b.reset()
    assert b.state is BreakerState.CLOSED
    assert await b.call(ok) == "ok"


def test_failure_count_follows_the_window_and_trips_as_a_full_recount_would() -> None:
    """The breaker keeps its failure count as outcomes enter and leave the window; it must trip
    exactly when recounting the whole window would say so."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(1, 8)
        cfg = BreakerConfig(
            window_size=size,
            min_calls=rng.randint(1, size),
            failure_rate=rng.choice([0.25, 0.5, 1.0]),
            open_wait_s=1.0,
        )
        b = CircuitBreaker("x", cfg, clock=FakeClock())
        window: list[bool] = []
        for _ in range(30):
            failed = rng.random() < 0.3
            b.record(b.acquire(), RequestTimeout("t") if failed else None)
            window = [*window, failed][-cfg.window_size :]
            should_trip = len(window) >= cfg.min_calls and sum(window) / len(window) >= cfg.failure_rate
            if should_trip:
                assert b.state is BreakerState.OPEN
                break
            assert b.state is BreakerState.CLOSED
            assert b.failure_rate == pytest.approx(sum(window) / len(window))
