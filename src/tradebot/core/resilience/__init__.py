"""Exchange-agnostic resilience primitives: circuit breaker, rate limiting, retries, turns."""

from tradebot.core.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitBreakers,
)
from tradebot.core.resilience.ratelimit import (
    DecayingCounter,
    MinSpacing,
    RateTier,
    RequestRateLimiter,
    TradingRateLimiter,
)
from tradebot.core.resilience.retry import RetryEvent, RetryPolicy, RetryStats, call_with_retry, is_retryable
from tradebot.core.resilience.turns import Turns

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
