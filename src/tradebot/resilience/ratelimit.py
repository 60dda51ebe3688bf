"""Client-side rate limiting: wait before the exchange would reject.

The model is a counter with continuous decay (Kraken's, and a common one): every call
adds its cost, the counter drains at ``decay_per_s``, and a call that would push it above
``max_counter`` must wait until enough has drained. :class:`RequestRateLimiter` adds a
minimum spacing between consecutive calls; :class:`TradingRateLimiter` keeps one such
counter per trading pair for order placement and cancellation.

Waiting is asynchronous and FIFO; the clock is injectable so tests run on a fake clock.
Each limiter also has a synchronous :meth:`~RequestRateLimiter.try_acquire`: it takes the
call's slot only when nothing has to wait and nobody is queued, so the common case costs
no coroutine and no lock, and a queued caller is never overtaken.
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
        self._queued = 0  # callers inside acquire()'s slow path; the fast path never overtakes them
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

    def fits_now(self, cost: float) -> bool:
        """Whether ``cost`` fits at once with nobody queued ahead (takes nothing)."""
        if cost > self._limit:
            raise ValueError(f"cost {cost} can never fit under the limit {self._limit}")
        return self._queued == 0 and self.wait_needed(cost) <= 0

    def take(self, cost: float) -> None:
        """Add ``cost`` to the counter; only right after :meth:`fits_now` said yes."""
        self._level += cost

    def try_acquire(self, cost: float = 1.0) -> bool:
        """Add ``cost`` if it fits now with nobody queued; False (nothing taken) otherwise."""
        if not self.fits_now(cost):
            return False
        self._level += cost
        return True

    async def acquire(self, cost: float = 1.0) -> float:
        """Wait until ``cost`` fits, then add it. Returns the seconds waited."""
        if self.try_acquire(cost):
            return 0.0
        waited = 0.0
        self._queued += 1
        try:
            async with self._lock:
                while (wait := self.wait_needed(cost)) > 0:
                    # a hair more than needed so float rounding never leaves us just short
                    await self._clock.sleep(wait + 1e-6)
                    waited += wait
                self._level += cost
        finally:
            self._queued -= 1
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
        self._queued = 0  # callers inside acquire()'s slow path; the fast path never overtakes them

    def fits_now(self) -> bool:
        """Whether a call may start at once with nobody queued ahead (takes nothing)."""
        if self.spacing_s == 0:
            return True
        if self._queued:
            return False
        return self._last is None or self._clock.monotonic() >= self._last + self.spacing_s

    def take(self) -> None:
        """Mark a call as started now; only right after :meth:`fits_now` said yes."""
        if self.spacing_s != 0:
            self._last = self._clock.monotonic()

    def try_acquire(self) -> bool:
        """Take this call's slot if it is free now with nobody queued; False otherwise."""
        if not self.fits_now():
            return False
        self.take()
        return True

    async def acquire(self) -> float:
        """Wait for this call's slot. Returns the seconds waited."""
        if self.try_acquire():
            return 0.0
        waited = 0.0
        self._queued += 1
        try:
            async with self._lock:
                if self._last is not None:
                    wait = self._last + self.spacing_s - self._clock.monotonic()
                    if wait > 0:
                        await self._clock.sleep(wait)
                        waited = wait
                self._last = self._clock.monotonic()
        finally:
            self._queued -= 1
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

    def try_acquire(self, cost: float = 1.0, *, counted: bool = True) -> bool:
        """Let a call of ``cost`` start now if neither limit has to wait; all or nothing.

        True: the cost is on the counter and the spacing slot is taken, exactly as
        :meth:`acquire` would have left them without waiting. False: nothing was taken
        (something has to wait, or another caller is queued); await :meth:`acquire`.
        """
        counter = self.counter if counted and cost > 0 else None
        if counter is not None and not counter.fits_now(cost):
            return False
        spacing = self.spacing
        if not spacing.fits_now():
            return False
        if counter is not None:
            counter.take(cost)
        spacing.take()
        return True

    async def acquire(self, cost: float = 1.0, *, counted: bool = True) -> float:
        """Wait until a call of ``cost`` may start. Returns the seconds waited."""
        if self.try_acquire(cost, counted=counted):
            return 0.0
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

    def counters(self) -> dict[str, DecayingCounter]:
        """The counter of every pair used so far."""
        return dict(self._counters)

    async def acquire(self, pair: str, cost: float = 1.0) -> float:
        """Wait until ``cost`` fits in ``pair``'s counter. Returns the seconds waited."""
        if cost <= 0:
            return 0.0
        return await self.counter(pair).acquire(min(cost, self.counter(pair).limit))

    def penalize(self, pair: str) -> None:
        """The exchange rejected an order for rate on ``pair``."""
        self.counter(pair).penalize()
