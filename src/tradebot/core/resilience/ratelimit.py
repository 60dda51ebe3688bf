"""Client-side rate limiting: wait before the exchange would reject.

The model is a counter with continuous decay (Kraken's, and a common one): every call
adds its cost, the counter drains at ``decay_per_s``, and a call that would push it above
``max_counter`` must wait until enough has drained. :class:`RequestRateLimiter` adds a
minimum spacing between consecutive calls; :class:`TradingRateLimiter` keeps one such
counter per trading pair for order placement and cancellation.

Waiting is asynchronous and FIFO; the clock is injectable so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.validate import gt, non_empty

__all__ = ["DecayingCounter", "MinSpacing", "RateTier", "RequestRateLimiter", "TradingRateLimiter"]


@attrs.frozen
class RateTier:
    """A counter limit: at most ``max_counter``, draining ``decay_per_s`` per second."""

    name: str = attrs.field(validator=non_empty)
    max_counter: float = attrs.field(validator=gt(0))
    decay_per_s: float = attrs.field(validator=gt(0))


class DecayingCounter:
    """A counter that drains continuously; :meth:`acquire` waits until a cost fits.

    ``margin`` is kept free below the limit because the exchange's copy of the counter
    drifts from ours by network latency.
    """

    def __init__(self, tier: RateTier, *, clock: Clock | None = None, margin: float = 0.0) -> None:
        if margin < 0 or margin >= tier.max_counter:
            raise ValueError(f"margin must be >= 0 and < max_counter {tier.max_counter} (got {margin!r})")
        self.tier = tier
        self._clock: Clock = clock or SystemClock()
        self._limit = tier.max_counter - margin
        self._level = 0.0
        self._updated = self._clock.monotonic()
        self._lock = asyncio.Lock()
        self.waits = 0
        self.waited_s = 0.0

    @property
    def level(self) -> float:
        """The counter now (after decay)."""
        now = self._clock.monotonic()
        self._level = max(0.0, self._level - (now - self._updated) * self.tier.decay_per_s)
        self._updated = now
        return self._level

    @property
    def limit(self) -> float:
        """The highest level this limiter lets the counter reach."""
        return self._limit

    def wait_needed(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0 when it fits now)."""
        excess = self.level + cost - self._limit
        return max(0.0, excess / self.tier.decay_per_s)

    async def acquire(self, cost: float = 1.0) -> float:
        """Wait until ``cost`` fits, then add it. Returns the seconds waited."""
        if cost > self._limit:
            raise ValueError(f"cost {cost} can never fit under the limit {self._limit}")
        waited = 0.0
        async with self._lock:
            while (wait := self.wait_needed(cost)) > 0:
                # a hair more than needed so float rounding never leaves us just short
                await self._clock.sleep(wait + 1e-6)
                waited += wait
            self._level += cost
        if waited:
            self.waits += 1
            self.waited_s += waited
        return waited

    def penalize(self) -> None:
        """The exchange said we are over the limit: treat the counter as full."""
        _ = self.level
        self._level = max(self._level, self._limit)


class MinSpacing:
    """At least ``spacing_s`` seconds between the starts of consecutive calls."""

    def __init__(self, spacing_s: float, *, clock: Clock | None = None) -> None:
        if spacing_s < 0:
            raise ValueError(f"spacing_s must be >= 0 (got {spacing_s!r})")
        self.spacing_s = spacing_s
        self._clock: Clock = clock or SystemClock()
        self._last: float | None = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for this call's slot. Returns the seconds waited."""
        if self.spacing_s == 0:
            return 0.0
        waited = 0.0
        async with self._lock:
            if self._last is not None:
                wait = self._last + self.spacing_s - self._clock.monotonic()
                if wait > 0:
                    await self._clock.sleep(wait)
                    waited = wait
            self._last = self._clock.monotonic()
        return waited


@attrs.define
class RequestRateLimiter:
    """The per-API-key request limiter: a decaying counter plus minimum spacing.

    ``counter`` is None for calls that do not count against a key (public endpoints);
    they only observe the spacing.
    """

    counter: DecayingCounter | None
    spacing: MinSpacing

    @classmethod
    def build(
        cls, tier: RateTier | None, *, min_spacing_s: float, clock: Clock | None = None, margin: float = 1.0
    ) -> RequestRateLimiter:
        """A limiter for ``tier`` (None: spacing only)."""
        counter = DecayingCounter(tier, clock=clock, margin=margin) if tier else None
        return cls(counter, MinSpacing(min_spacing_s, clock=clock))

    async def acquire(self, cost: float = 1.0, *, counted: bool = True) -> float:
        """Wait until a call of ``cost`` may start. Returns the seconds waited."""
        waited = 0.0
        if counted and self.counter is not None and cost > 0:
            waited += await self.counter.acquire(cost)
        waited += await self.spacing.acquire()
        return waited

    def penalize(self) -> None:
        """The exchange rejected a call for rate: back off as if the counter were full."""
        if self.counter is not None:
            self.counter.penalize()


class TradingRateLimiter:
    """One decaying counter per trading pair (order placement / cancellation)."""

    def __init__(self, tier: RateTier, *, clock: Clock | None = None, margin: float = 2.0) -> None:
        self.tier = tier
        self._clock = clock
        self._margin = margin
        self._counters: dict[str, DecayingCounter] = {}

    def counter(self, pair: str) -> DecayingCounter:
        """The counter of ``pair`` (created on first use)."""
        if pair not in self._counters:
            self._counters[pair] = DecayingCounter(self.tier, clock=self._clock, margin=self._margin)
        return self._counters[pair]

    async def acquire(self, pair: str, cost: float = 1.0) -> float:
        """Wait until ``cost`` fits in ``pair``'s counter. Returns the seconds waited."""
        if cost <= 0:
            return 0.0
        return await self.counter(pair).acquire(min(cost, self.counter(pair).limit))

    def penalize(self, pair: str) -> None:
        """The exchange rejected an order for rate on ``pair``."""
        self.counter(pair).penalize()

