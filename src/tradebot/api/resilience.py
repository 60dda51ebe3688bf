"""The resilience toolkit, public for exchange plugins: circuit breakers, request and trading
rate limits, retries with backoff, turns for requests that must go one at a time, and cheap
latency histograms that ``/metrics`` renders.

Part of the public API (:data:`tradebot.api.API_VERSION` versions these names too). The
built-in Kraken plugin builds its REST client from these parts; a third-party exchange
plugin may do the same.

An exchange reports its figures to ``/metrics`` through the optional capability
:class:`ReportsResilience` (a :class:`ResilienceStats` snapshot; :func:`snapshot` builds one
from these parts); the bot checks for it once, when it attaches to the exchange.
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
from tradebot.resilience.stats import (
    BreakerStats,
    EndpointStats,
    LimitLevel,
    ReportsResilience,
    ResilienceStats,
    TimingSeries,
    snapshot,
)
from tradebot.resilience.timings import Histogram, LatencyHistograms
from tradebot.resilience.turns import Turns

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "BreakerStats",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakers",
    "EndpointStats",
    "Histogram",
    "LatencyHistograms",
    "LimitLevel",
    "RateTier",
    "ReportsResilience",
    "RequestRateLimiter",
    "ResilienceStats",
    "RetryEvent",
    "RetryListener",
    "RetryPolicy",
    "RetryStats",
    "TimingSeries",
    "TradingRateLimiter",
    "Turns",
    "call_with_retry",
    "is_retryable",
    "retry_after_failure",
    "snapshot",
]
