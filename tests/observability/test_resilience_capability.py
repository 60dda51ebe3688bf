"""An exchange's resilience figures reach ``/metrics`` through one public capability,
:class:`tradebot.api.ReportsResilience`, checked once when metrics attach: a third-party
exchange built from the public toolkit gets its breakers, rate limits, calls and latencies
rendered exactly like Kraken's; an exchange without the capability simply has none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tradebot.api import FakeClock, NetworkError, ReportsResilience, ResilienceStats
from tradebot.api.resilience import (
    BreakerConfig,
    BreakerListener,
    CircuitBreakers,
    LatencyHistograms,
    RateTier,
    RequestRateLimiter,
    RetryListener,
    RetryStats,
    TradingRateLimiter,
    snapshot,
)
from tradebot.app.config import settings_from_dict
from tradebot.core.context import BotContext
from tradebot.core.plugins import PluginHost
from tradebot.services.metrics import BotMetrics

RESILIENCE_FAMILIES = (
    "tradebot_breaker_state",
    "tradebot_breaker_trips",
    "tradebot_ratelimiter_fill",
    "tradebot_api_calls",
    "tradebot_api_failures",
    "tradebot_exchange_request_duration_seconds",
    "tradebot_exchange_queue_wait_seconds",
)


class Venue:
    """A third-party exchange made of the public resilience toolkit, with the capability."""

    name = "venue"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.breakers = CircuitBreakers(
            "venue", ("public", "private"), BreakerConfig(window_size=1, min_calls=1), clock=self.clock
        )
        self.limiter = RequestRateLimiter.build(
            RateTier("venue", max_counter=10, decay_per_s=1), min_spacing_s=0, clock=self.clock, margin=0
        )
        self.trading = TradingRateLimiter(
            RateTier("venue-trading", max_counter=20, decay_per_s=1), clock=self.clock, margin=0
        )
        self.retries = RetryStats()
        self.requests = LatencyHistograms(("group", "outcome"))
        self.waits = LatencyHistograms(("group",))

    def resilience_stats(self) -> ResilienceStats:
        return snapshot(
            breakers=self.breakers,
            rate_limiter=self.limiter,
            trading_limiter=self.trading,
            retry_stats=self.retries,
            request_timings=self.requests,
            queue_timings=self.waits,
        )

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        self.breakers.add_listener(listener)

    def add_retry_listener(self, listener: RetryListener) -> None:
        self.retries.add_listener(listener)


class PlainVenue:
    """A third-party exchange without the capability."""

    name = "plain"


def _scrape(exchange: Any, after_attach: Callable[[], None] = lambda: None) -> dict[str, Any]:
    context = BotContext(settings=settings_from_dict({"bot": {"pairs": ["BTC/USD"]}}), plugins=PluginHost())
    context.exchange = exchange
    metrics = BotMetrics()
    metrics.attach(context)
    after_attach()
    try:
        return {f.name: f for f in text_string_to_metric_families(metrics.render_prometheus())}
    finally:
        metrics.shutdown()


def _samples(fams: dict[str, Any], name: str, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in fams[name].samples if s.name == name + suffix}


def test_a_third_party_exchange_with_the_capability_has_its_figures_in_metrics() -> None:
    venue = Venue()
    assert isinstance(venue, ReportsResilience)
    venue.limiter.try_acquire(4)
    venue.trading.counter("ETH/USD").take(5)
    venue.retries.attempted("private/Balance")
    venue.retries.finished("private/Balance", ok=False)
    venue.requests.observe(("private", "ok"), 0.02)
    venue.waits.observe(("private",), 0.001)
    breaker = venue.breakers["private"]

    def trip() -> None:  # after attaching: the transition is heard through the capability
        breaker.record(breaker.acquire(), NetworkError("down"))  # window 1, min_calls 1

    fams = _scrape(venue, trip)

    states = {dict(k)["breaker"]: v for k, v in _samples(fams, "tradebot_breaker_state").items()}
    assert states == {breaker.name: 2.0, venue.breakers["public"].name: 0.0}  # open, closed
    assert {dict(k)["role"] for k in _samples(fams, "tradebot_breaker_state")} == {"exchange"}
    trips = {dict(k)["breaker"]: v for k, v in _samples(fams, "tradebot_breaker_trips", "_total").items()}
    assert trips == {breaker.name: 1.0, venue.breakers["public"].name: 0.0}
    fill = {dict(k)["limiter"]: v for k, v in _samples(fams, "tradebot_ratelimiter_fill").items()}
    assert fill["rest"] == 0.4 and fill["trading:ETH/USD"] == 0.25
    calls = _samples(fams, "tradebot_api_calls", "_total")
    assert calls == {(("endpoint", "private/Balance"), ("role", "exchange")): 1.0}
    failures = _samples(fams, "tradebot_api_failures", "_total")
    assert failures == {(("endpoint", "private/Balance"), ("role", "exchange")): 1.0}
    requests = _samples(fams, "tradebot_exchange_request_duration_seconds", "_count")
    assert requests == {(("group", "private"), ("outcome", "ok"), ("role", "exchange")): 1.0}
    waits = _samples(fams, "tradebot_exchange_queue_wait_seconds", "_count")
    assert waits == {(("group", "private"), ("role", "exchange")): 1.0}
    # the transition was heard through the capability's listener
    transitions = _samples(fams, "tradebot_breaker_transitions", "_total")
    assert sum(transitions.values()) == 1.0


def test_an_exchange_without_the_capability_has_no_resilience_figures() -> None:
    plain = PlainVenue()
    assert not isinstance(plain, ReportsResilience)
    fams = _scrape(plain)
    for name in RESILIENCE_FAMILIES:
        assert name not in fams or not fams[name].samples, name
    assert fams["tradebot_uptime_seconds"].samples  # the rest of /metrics is there
