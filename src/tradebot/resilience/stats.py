"""What an exchange reports of its resilience: one public capability, read by ``/metrics``.

An exchange that has circuit breakers, rate limits, retries or latency histograms implements
:class:`ReportsResilience`: :meth:`~ReportsResilience.resilience_stats` returns a
:class:`ResilienceStats` snapshot (breakers, rate-limit counter levels, attempts and failures
per endpoint, request and queue-wait histograms), and two methods let the bot hear breaker
transitions and retries as they happen. The bot checks for the capability once, when it
attaches to the exchange; an exchange without it simply has no resilience figures.

:func:`snapshot` builds the snapshot from the toolkit's parts (:mod:`tradebot.api.resilience`),
so an exchange built from them implements the method in one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from tradebot.resilience.breaker import BreakerListener, CircuitBreaker
from tradebot.resilience.ratelimit import DecayingCounter, RequestRateLimiter, TradingRateLimiter
from tradebot.resilience.retry import RetryListener, RetryStats
from tradebot.resilience.timings import Histogram, LatencyHistograms

__all__ = [
    "BreakerStats",
    "EndpointStats",
    "LimitLevel",
    "ReportsResilience",
    "ResilienceStats",
    "TimingSeries",
    "snapshot",
]


@attrs.frozen
class BreakerStats:
    """One circuit breaker: ``state`` is ``closed``, ``half_open`` or ``open``; ``trips`` the
    consecutive trips since it last closed; ``rejected`` the calls it refused while open."""

    name: str
    state: str
    trips: int = 0
    rejected: int = 0


@attrs.frozen
class LimitLevel:
    """A rate-limit counter: its current ``level`` and the highest level it lets through."""

    level: float
    limit: float

    @property
    def fill(self) -> float:
        """``level / limit`` (0 when the limit is 0)."""
        return self.level / self.limit if self.limit else 0.0


@attrs.frozen
class EndpointStats:
    """Calls to one endpoint: attempts (retries included), retries, successes, final failures."""

    attempts: int = 0
    retries: int = 0
    successes: int = 0
    failures: int = 0


@attrs.frozen
class TimingSeries:
    """One latency histogram and its labels (e.g. ``{"group": "private", "outcome": "ok"}``)."""

    labels: Mapping[str, str]
    histogram: Histogram


@attrs.frozen
class ResilienceStats:
    """A snapshot of an exchange's resilience figures; every part may be empty.

    ``request_limit`` is the account's request counter (None without one); ``trading_limits``
    the order-rate counter per pair; ``endpoints`` the calls per endpoint;
    ``request_timings`` the durations of request attempts and ``queue_timings`` how long
    requests waited for their turn.
    """

    breakers: tuple[BreakerStats, ...] = ()
    request_limit: LimitLevel | None = None
    trading_limits: Mapping[str, LimitLevel] = attrs.field(factory=dict)
    endpoints: Mapping[str, EndpointStats] = attrs.field(factory=dict)
    request_timings: tuple[TimingSeries, ...] = ()
    queue_timings: tuple[TimingSeries, ...] = ()


@runtime_checkable
class ReportsResilience(Protocol):
    """Optional exchange capability: its breakers, rate limits, retries and latencies."""

    def resilience_stats(self) -> ResilienceStats:
        """The figures now (cheap: read at every ``/metrics`` scrape)."""
        ...

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        """Call ``listener`` with every breaker transition from now on."""
        ...

    def add_retry_listener(self, listener: RetryListener) -> None:
        """Call ``listener`` with every retry from now on."""
        ...


def _level(counter: DecayingCounter) -> LimitLevel:
    return LimitLevel(level=counter.level, limit=counter.limit)


def _series(timings: LatencyHistograms | None) -> tuple[TimingSeries, ...]:
    if timings is None:
        return ()
    return tuple(TimingSeries(labels, hist) for labels, hist in timings.items())


def snapshot(
    *,
    breakers: Iterable[CircuitBreaker] = (),
    rate_limiter: RequestRateLimiter | None = None,
    trading_limiter: TradingRateLimiter | None = None,
    retry_stats: RetryStats | None = None,
    request_timings: LatencyHistograms | None = None,
    queue_timings: LatencyHistograms | None = None,
) -> ResilienceStats:
    """A :class:`ResilienceStats` read from the resilience toolkit's parts."""
    counter = rate_limiter.counter if rate_limiter is not None else None
    return ResilienceStats(
        breakers=tuple(
            BreakerStats(name=b.name, state=b.state.value, trips=b.trips, rejected=b.rejected)
            for b in breakers
        ),
        request_limit=_level(counter) if counter is not None else None,
        trading_limits={
            pair: _level(c) for pair, c in (trading_limiter.counters() if trading_limiter else {}).items()
        },
        endpoints={
            endpoint: EndpointStats(c.attempts, c.retries, c.successes, c.failures)
            for endpoint, c in (dict(retry_stats.endpoints) if retry_stats is not None else {}).items()
        },
        request_timings=_series(request_timings),
        queue_timings=_series(queue_timings),
    )
