"""Market-data staleness: an event-driven deadline per pair.

Each pair has a deadline ``threshold_s`` after its last update. One waiter per pair sleeps
until the deadline; an update only moves the timestamp (no timer churn per tick), and the
waiter, on waking, sleeps again for whatever is left. So staleness is reported the moment
the deadline passes, not a polling interval later. A pair never seen within
``startup_grace_s`` of the start is stale too. Fresh data clears the condition at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import BaseCheck, CheckResult, ComponentSpec, HealthStatus, TriggerOptions, gt, hookimpl

__all__ = ["StalenessCheck", "StalenessConfig", "tradebot_register_checks"]


@attrs.frozen
class StalenessConfig(TriggerOptions):
    """``[checks.staleness]``"""

    interval_s: float = attrs.field(default=5.0, validator=gt(0))
    threshold_s: float = attrs.field(default=30.0, validator=gt(0))
    """A pair without an update for this long is stale (critical)."""
    startup_grace_s: float = attrs.field(default=60.0, validator=gt(0))
    """A pair must send its first update within this long after the start."""
    pairs: list[str] | None = None
    """Pairs to watch (default: the bot's pairs)."""


class StalenessCheck(BaseCheck):
    """Tracks the last update per pair on the monotonic clock and reports stale pairs."""

    def __init__(self, name: str, config: StalenessConfig, pairs: Sequence[str], clock: Any = None) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.pairs = list(pairs)
        self._watched = frozenset(self.pairs)
        self.last_seen: dict[str, float] = {}
        self._deadline: dict[str, float] = {}
        self._stale: set[str] = set()
        self._waiters: dict[str, asyncio.Task[None]] = {}
        self.started_at: float | None = None

    async def start(self, emit: Any) -> None:
        await super().start(emit)
        now = self.clock.monotonic()
        self.started_at = now
        for pair in self.pairs:
            seen = self.last_seen.get(pair)
            self._deadline[pair] = (
                seen + self.config.threshold_s if seen is not None else now + self.config.startup_grace_s
            )
            self._waiters[pair] = asyncio.ensure_future(self._wait(pair))

    async def stop(self) -> None:
        waiters, self._waiters = list(self._waiters.values()), {}
        from tradebot.api import cancel_and_wait

        for task in waiters:
            task.cancel()
        for task in waiters:
            await cancel_and_wait(task)
        await super().stop()

    def on_market_event(self, event: Any) -> None:
        """Any ticker or candle of a watched pair proves the feed is alive."""
        pair = getattr(event, "pair", None)
        if pair not in self._watched:
            return
        now = self.clock.monotonic()
        first = pair not in self.last_seen
        self.last_seen[pair] = now
        self._deadline[pair] = now + self.config.threshold_s
        if self._emit is None:
            return
        if first and self.config.threshold_s < self.config.startup_grace_s:
            # the waiter sleeps towards the longer start-up deadline: move it earlier
            self._rearm(pair)
        if pair in self._stale:
            self._stale.discard(pair)
            self.emit(self._summary())
            if pair not in self._waiters:
                self._rearm(pair)

    def _rearm(self, pair: str) -> None:
        old = self._waiters.pop(pair, None)
        if old is not None:
            old.cancel()
        self._waiters[pair] = asyncio.ensure_future(self._wait(pair))

    async def _wait(self, pair: str) -> None:
        try:
            while True:
                remaining = self._deadline[pair] - self.clock.monotonic()
                if remaining <= 0:
                    break
                await self.clock.sleep(remaining)
            self._stale.add(pair)
            self.emit(self._summary())
        finally:
            if self._waiters.get(pair) is asyncio.current_task():
                del self._waiters[pair]

    def _age(self, pair: str, now: float) -> float:
        seen = self.last_seen.get(pair)
        return now - (seen if seen is not None else (self.started_at if self.started_at is not None else now))

    def _summary(self) -> CheckResult:
        now = self.clock.monotonic()
        ages = {pair: self._age(pair, now) for pair in self.pairs}
        metrics = {f"age_s.{pair}": age for pair, age in ages.items()}
        metrics["stale_pairs"] = float(len(self._stale))
        if self._stale:
            parts = []
            for pair in sorted(self._stale):
                if pair in self.last_seen:
                    parts.append(f"{pair} (no update for {ages[pair]:.1f}s)")
                else:
                    parts.append(f"{pair} (never received)")
            return self.result(
                HealthStatus.CRITICAL,
                f"market data stale for {', '.join(parts)}; threshold {self.config.threshold_s:g}s",
                metrics,
            )
        oldest = max(ages.values(), default=0.0)
        return self.result(HealthStatus.OK, f"market data fresh (oldest {oldest:.1f}s)", metrics)

    async def evaluate(self) -> CheckResult:
        if self.started_at is not None:
            now = self.clock.monotonic()
            for pair, deadline in self._deadline.items():
                if now >= deadline:
                    self._stale.add(pair)
        return self._summary()


def make(config: StalenessConfig | None, context: Any) -> StalenessCheck:
    """Factory: watch the configured pairs, or the bot's pairs."""
    config = config or StalenessConfig()
    pairs = config.pairs
    if pairs is None:
        settings = getattr(context, "settings", None)
        pairs = list(settings.bot.pairs) if settings is not None else []
    return StalenessCheck("staleness", config, pairs, getattr(context, "clock", None))


@hookimpl
def tradebot_register_checks() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="staleness",
            factory=make,
            config_cls=StalenessConfig,
            description="Per-pair deadline on market data; stale or never-seen pairs HALT",
        )
    ]
