"""The resilience toolkit, public for exchange plugins: circuit breakers, request and trading
rate limits, retries with backoff, turns for requests that must go one at a time, and cheap
latency histograms that ``/metrics`` renders.

Part of the public API (:data:`tradebot.api.API_VERSION` versions these names too). The
built-in Kraken plugin builds its REST client from these parts; a third-party exchange
plugin may do the same.
"""

from __future__ import annotations

from tradebot.resilience.breaker import (
    BreakerConfig,
    BreakerListener,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitBreakers,
)
from tradebot.resilience.ratelimit import RateTier, RequestRateLimiter, TradingRateLimiter
from tradebot.resilience.retry import (
    RetryEvent,
    RetryListener,
    RetryPolicy,
    RetryStats,
    call_with_retry,
    is_retryable,
    retry_after_failure,
)
from tradebot.resilience.timings import LatencyHistograms
from tradebot.resilience.turns import Turns

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakers",
    "LatencyHistograms",
    "RateTier",
    "RequestRateLimiter",
    "RetryEvent",
    "RetryListener",
    "RetryPolicy",
    "RetryStats",
    "TradingRateLimiter",
    "Turns",
    "call_with_retry",
    "is_retryable",
    "retry_after_failure",
]
