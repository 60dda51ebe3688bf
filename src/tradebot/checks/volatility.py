"""Volatility: HALT (or REDUCING) when a pair's price range over a window gets too wide.

The measure is the high-low range of the pair's prices within the last ``window_s``
seconds, relative to the low: ``(high - low) / low * 100``. It catches a move in either
direction and a spike that came straight back. Prices are ticker last prices (mid when
there is no last) and candle closes. The check reacts to each price at once; the
condition clears when the wide prices have left the window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from tradebot.api import BaseCheck, CheckResult, ComponentSpec, HealthStatus, TriggerOptions, gt, hookimpl

__all__ = ["PriceWindow", "VolatilityCheck", "VolatilityConfig", "tradebot_register_halt_triggers"]


@attrs.frozen
class VolatilityConfig(TriggerOptions):
    """``[checks.volatility]``"""

    interval_s: float = attrs.field(default=5.0, validator=gt(0))
    window_s: float = attrs.field(default=300.0, validator=gt(0))
    max_change_pct: float = attrs.field(default=5.0, validator=gt(0))
    """Range within the window, in percent of the low, that trips the trigger."""
    warn_change_pct: float | None = attrs.field(default=None, validator=gt(0))
    """Degraded from this range (default: 60 % of the limit)."""
    pairs: list[str] | None = None
    """Pairs to watch (default: every pair that sends prices)."""


class PriceWindow:
    """Prices of the last ``window_s`` seconds with O(1) amortised high and low."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._highs: deque[tuple[float, float]] = deque()  # decreasing prices
        self._lows: deque[tuple[float, float]] = deque()  # increasing prices

    def add(self, t: float, price: float) -> None:
        while self._highs and self._highs[-1][1] <= price:
            self._highs.pop()
        self._highs.append((t, price))
        while self._lows and self._lows[-1][1] >= price:
            self._lows.pop()
        self._lows.append((t, price))
        self.expire(t)

    def expire(self, now: float) -> None:
        horizon = now - self.window_s
        for dq in (self._highs, self._lows):
            while len(dq) > 1 and dq[0][0] < horizon:
                dq.popleft()

    def range_pct(self) -> float:
        if not self._lows:
            return 0.0
        low, high = self._lows[0][1], self._highs[0][1]
        return (high - low) / low * 100 if low > 0 else 0.0


class VolatilityCheck(BaseCheck):
    """Keeps a price window per pair and reports the widest range."""

    def __init__(self, name: str, config: VolatilityConfig, clock: Any = None) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.windows: dict[str, PriceWindow] = {}
        self._status = HealthStatus.OK

    def on_market_event(self, event: Any) -> None:
        pair = getattr(event, "pair", None)
        if pair is None or (self.config.pairs is not None and pair not in self.config.pairs):
            return
        price = _price(event)
        if price is None or price <= 0:
            return
        now = self.clock.monotonic()
        window = self.windows.get(pair)
        if window is None:
            window = self.windows[pair] = PriceWindow(self.config.window_s)
        window.add(now, float(price))
        result = self._summary(now)
        if result.status is not self._status:
            self._status = result.status
            self.emit(result)

    def _summary(self, now: float) -> CheckResult:
        cfg = self.config
        ranges = {}
        for pair, window in self.windows.items():
            window.expire(now)
            ranges[pair] = window.range_pct()
        metrics = {f"range_pct.{p}": r for p, r in ranges.items()}
        if not ranges:
            return self.result(HealthStatus.OK, "no prices yet", metrics)
        pair, widest = max(ranges.items(), key=lambda kv: kv[1])
        text = f"{pair} moved {widest:.2f}% within {cfg.window_s:g}s (limit {cfg.max_change_pct:g}%)"
        warn = cfg.warn_change_pct if cfg.warn_change_pct is not None else cfg.max_change_pct * 0.6
        if widest >= cfg.max_change_pct:
            hot = sorted(p for p, r in ranges.items() if r >= cfg.max_change_pct)
            return self.result(
                HealthStatus.CRITICAL, f"excessive volatility on {', '.join(hot)}: {text}", metrics
            )
        if widest >= warn:
            return self.result(HealthStatus.DEGRADED, text, metrics)
        return self.result(HealthStatus.OK, text, metrics)

    async def evaluate(self) -> CheckResult:
        result = self._summary(self.clock.monotonic())
        self._status = result.status
        return result


def _price(event: Any) -> Decimal | None:
    close = getattr(event, "close", None)
    if close is not None:
        return Decimal(close)
    last = getattr(event, "last", None)
    if last is not None and last > 0:
        return Decimal(last)
    mid = getattr(event, "mid", None)
    return None if mid is None else Decimal(mid)


def make(config: VolatilityConfig | None, context: Any) -> VolatilityCheck:
    """Factory."""
    return VolatilityCheck("volatility", config or VolatilityConfig(), getattr(context, "clock", None))


@hookimpl
def tradebot_register_halt_triggers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="volatility",
            factory=make,
            config_cls=VolatilityConfig,
            description="HALT or REDUCING when a pair's price range over a window exceeds a percent",
        )
    ]
