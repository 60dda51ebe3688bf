"""stamina-based retries: transient only, never for non-idempotent calls, counted per endpoint."""

from __future__ import annotations

import pytest
import stamina

from tradebot.core.errors import (
    AuthError,
    CircuitOpen,
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    RateLimited,
    RequestTimeout,
)
from tradebot.resilience.retry import RetryEvent, RetryPolicy, RetryStats, call_with_retry, is_retryable


@pytest.fixture(autouse=True)
def fast_retries():
    with stamina.set_testing(True, attempts=4):
        yield


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_transient_errors_are_retried_and_counted() -> None:
    events: list[RetryEvent] = []
    stats = RetryStats([events.append])
    fn = Flaky(RequestTimeout("slow"), ExchangeUnavailable("busy"))
    assert await call_with_retry(fn, endpoint="public/Ticker", stats=stats) == "done"
    assert fn.calls == 3
    counts = stats.of("public/Ticker")
    assert (counts.attempts, counts.retries, counts.successes, counts.failures) == (3, 2, 1, 0)
    assert [(e.attempt, e.error_type) for e in events] == [(2, "RequestTimeout"), (3, "ExchangeUnavailable")]


async def test_permanent_error_is_not_retried() -> None:
    stats = RetryStats()
    fn = Flaky(AuthError("bad key"))
    with pytest.raises(AuthError):
        await call_with_retry(fn, endpoint="private/Balance", stats=stats)
    assert fn.calls == 1
    assert stats.of("private/Balance").failures == 1


async def test_gives_up_after_attempts() -> None:
    fn = Flaky(*(RequestTimeout("t") for _ in range(10)))
    with pytest.raises(RequestTimeout):
        await call_with_retry(fn, endpoint="public/Time")
    assert fn.calls == 4  # testing mode: attempts=4


async def test_non_idempotent_call_runs_once_even_in_testing_mode() -> None:
    fn = Flaky(RequestTimeout("t"))
    with pytest.raises(RequestTimeout):
        await call_with_retry(fn, endpoint="private/AddOrder", idempotent=False)
    assert fn.calls == 1


@pytest.mark.parametrize("exc", [CircuitOpen("open"), OrderOutcomeUnknown("?"), ValueError("bug")])
async def test_never_retried(exc: Exception) -> None:
    fn = Flaky(exc)
    with pytest.raises(type(exc)):
        await call_with_retry(fn, endpoint="x")
    assert fn.calls == 1


def test_rate_limited_uses_server_wait_when_short() -> None:
    assert is_retryable(RateLimited("slow down", retry_after_s=3.0)) == 3.0
    assert is_retryable(RateLimited("locked out", retry_after_s=900.0)) is False
    assert is_retryable(RateLimited("slow down")) is True


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="attempts must be > 0"):
        RetryPolicy(attempts=0)
