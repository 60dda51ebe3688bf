"""Drawdown: HALT when equity falls ``max_drawdown_pct`` below its peak.

Equity comes from the portfolio (cash plus positions at the latest marks). The peak is
kept in the store (``checks.drawdown.peak``), so a restart does not forget it; a manual
resume restarts the peak from the equity at that moment, so the operator's decision is
not undone at once (after ``tradebot resume`` with no bot running, the next start measures
from the first equity it sees). Equity snapshots are saved on every new peak and every
``snapshot_interval_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from tradebot.core.components import ComponentSpec
from tradebot.core.health import BaseCheck, CheckResult, HealthStatus, TriggerOptions
from tradebot.core.hookspecs import hookimpl
from tradebot.core.validate import gt, in_range

__all__ = ["DrawdownCheck", "DrawdownConfig", "tradebot_register_halt_triggers"]

PEAK_KEY = "checks.drawdown.peak"


@attrs.frozen
class DrawdownConfig(TriggerOptions):
    """``[checks.drawdown]``"""

    max_drawdown_pct: float = attrs.field(default=10.0, validator=[gt(0), in_range(0, 100)])
    """Drawdown from the peak, in percent, that trips the trigger."""
    warn_drawdown_pct: float | None = attrs.field(default=None, validator=in_range(0, 100))
    """Degraded from this drawdown (default: half the limit)."""
    snapshot_interval_s: float = attrs.field(default=60.0, validator=gt(0))


class DrawdownCheck(BaseCheck):
    """Compares the portfolio's equity with its (persisted) peak."""

    def __init__(self, name: str, config: DrawdownConfig, portfolio: Any, store: Any = None, clock: Any = None) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.portfolio = portfolio
        self.store = store
        self.peak: Decimal | None = None
        self._snapshot_at: float | None = None
        if store is not None:
            saved = store.get_kv(PEAK_KEY)
            self.peak = Decimal(saved) if saved is not None else store.peak_equity()
            resumed = store.last_manual_resume() if hasattr(store, "last_manual_resume") else None
            peak_at = store.kv_updated_at(PEAK_KEY) if hasattr(store, "kv_updated_at") else None
            if resumed is not None and (peak_at is None or peak_at < resumed):
                # a person resumed after this peak was saved (with no bot running to reset it):
                # measure from the equity seen first, as reset() would have
                self.peak = None

    def _equity(self) -> Decimal | None:
        if self.portfolio is None:
            return None
        value = self.portfolio.equity
        value = value() if callable(value) else value
        return None if value is None else Decimal(value)

    def _save_peak(self, peak: Decimal) -> None:
        self.peak = peak
        if self.store is not None:
            self.store.set_kv(PEAK_KEY, str(peak))

    def reset(self) -> None:
        """A person resumed trading: measure from the equity now (from the first one known,
        when a held pair has no price yet)."""
        equity = self._equity()
        if equity is not None:
            self._save_peak(equity)
        else:
            self.peak = None  # the old peak must not undo the resume when prices come back

    def _snapshot(self, new_peak: bool) -> None:
        now = self.clock.monotonic()
        due = self._snapshot_at is None or now - self._snapshot_at >= self.config.snapshot_interval_s
        snap = getattr(self.portfolio, "snapshot_equity", None)
        if snap is not None and (new_peak or due):
            snap()
            self._snapshot_at = now

    async def evaluate(self) -> CheckResult:
        cfg = self.config
        equity = self._equity()
        if equity is None:
            return self.result(HealthStatus.OK, "equity not known yet (a held pair has no price)")
        new_peak = self.peak is None or equity > self.peak
        if new_peak:
            self._save_peak(equity)
        self._snapshot(new_peak)
        peak = self.peak if self.peak is not None else equity
        if peak <= 0:
            return self.result(HealthStatus.OK, f"no positive equity to measure from (equity {equity})")
        drawdown = float((peak - equity) / peak * 100)
        metrics = {"equity": float(equity), "peak": float(peak), "drawdown_pct": drawdown}
        warn = cfg.warn_drawdown_pct if cfg.warn_drawdown_pct is not None else cfg.max_drawdown_pct / 2
        text = f"drawdown {drawdown:.2f}% from peak {peak:.2f} (equity {equity:.2f}, limit {cfg.max_drawdown_pct:g}%)"
        if drawdown >= cfg.max_drawdown_pct:
            return self.result(HealthStatus.CRITICAL, text, metrics)
        if drawdown >= warn:
            return self.result(HealthStatus.DEGRADED, text, metrics)
        return self.result(HealthStatus.OK, text, metrics)


def make(config: DrawdownConfig | None, context: Any) -> DrawdownCheck:
    """Factory: the bot's portfolio and store."""
    return DrawdownCheck(
        "drawdown",
        config or DrawdownConfig(),
        getattr(context, "portfolio", None),
        getattr(context, "store", None),
        getattr(context, "clock", None),
    )


@hookimpl
def tradebot_register_halt_triggers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="drawdown",
            factory=make,
            config_cls=DrawdownConfig,
            description="HALT when equity falls a given percent below its peak",
        )
    ]
