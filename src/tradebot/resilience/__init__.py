"""Exchange-agnostic resilience primitives: circuit breaker, rate limiting, retries, turns."""

from tradebot.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitBreakers,
)
from tradebot.resilience.ratelimit import (
    DecayingCounter,
    MinSpacing,
    RateTier,
    RequestRateLimiter,
    TradingRateLimiter,
)
from tradebot.resilience.retry import RetryEvent, RetryPolicy, RetryStats, call_with_retry, is_retryable
from tradebot.resilience.turns import Turns

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakers",
    "DecayingCounter",
    "MinSpacing",
    "RateTier",
    "RequestRateLimiter",
    "RetryEvent",
    "RetryPolicy",
    "RetryStats",
    "TradingRateLimiter",
    "Turns",
    "call_with_retry",
    "is_retryable",
]
