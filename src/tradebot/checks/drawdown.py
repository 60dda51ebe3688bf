"""Drawdown: HALT when equity falls ``max_drawdown_pct`` below its peak.

Equity comes from the portfolio (cash plus positions at the latest marks). The peak is
kept in the store (``checks.drawdown.peak``), so a restart does not forget it; a manual
resume restarts the peak from the equity at that moment, so the operator's decision is
not undone at once (after ``tradebot resume`` with no bot running, the next start measures
from the first equity it sees). Equity snapshots are saved on every new peak and every
``snapshot_interval_s``.

A held pair without a current price is valued at its last known price: the portfolio's
latest mark, else the last mark this check saw (kept in the store, ``checks.drawdown.marks``,
so a restart has it too), else what the position was bought at. A fall of the held pairs
is never hidden by a missing price; once a price used is older than ``price_max_age_s``
the check is at least degraded and says which pair and how old its price is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from tradebot.api import (
    BaseCheck,
    CheckResult,
    ComponentSpec,
    HealthStatus,
    TriggerOptions,
    gt,
    hookimpl,
    in_range,
)

__all__ = ["DrawdownCheck", "DrawdownConfig", "tradebot_register_halt_triggers"]

PEAK_KEY = "checks.drawdown.peak"
MARKS_KEY = "checks.drawdown.marks"

log = logging.getLogger("tradebot.checks.drawdown")


@attrs.frozen
class DrawdownConfig(TriggerOptions):
    """``[checks.drawdown]``"""

    max_drawdown_pct: float = attrs.field(default=10.0, validator=[gt(0), in_range(0, 100)])
    """Drawdown from the peak, in percent, that trips the trigger."""
    warn_drawdown_pct: float | None = attrs.field(default=None, validator=in_range(0, 100))
    """Degraded from this drawdown (default: half the limit)."""
    snapshot_interval_s: float = attrs.field(default=60.0, validator=gt(0))
    price_max_age_s: float = attrs.field(default=120.0, validator=gt(0))
    """A held pair's price older than this (or missing) makes the check degraded."""


class DrawdownCheck(BaseCheck):
    """Compares the portfolio's equity with its (persisted) peak."""

    def __init__(
        self, name: str, config: DrawdownConfig, portfolio: Any, store: Any = None, clock: Any = None
    ) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.portfolio = portfolio
        self.store = store
        self.peak: Decimal | None = None
        self._snapshot_at: float | None = None
        self._known: dict[str, tuple[Decimal, datetime]] = {}
        """Last mark seen per pair, with when (wall clock): the fallback of a missing price."""
        self._stale: list[str] = []
        if store is not None:
            self._known = self._load_marks(store)
            saved = store.get_kv(PEAK_KEY)
            self.peak = Decimal(saved) if saved is not None else store.peak_equity()
            resumed = store.last_manual_resume() if hasattr(store, "last_manual_resume") else None
            peak_at = store.kv_updated_at(PEAK_KEY) if hasattr(store, "kv_updated_at") else None
            if resumed is not None and (peak_at is None or peak_at < resumed):
                # a person resumed after this peak was saved (with no bot running to reset it):
                # measure from the equity seen first, as reset() would have
                self.peak = None

    @staticmethod
    def _load_marks(store: Any) -> dict[str, tuple[Decimal, datetime]]:
        raw = store.get_kv(MARKS_KEY)
        if not raw:
            return {}
        try:
            return {
                pair: (Decimal(price), datetime.fromisoformat(at))
                for pair, (price, at) in json.loads(raw).items()
            }
        except (ValueError, TypeError, InvalidOperation) as exc:
            log.warning("saved last-known prices (%s) unreadable, ignored: %s", MARKS_KEY, exc)
            return {}

    def _save_marks(self) -> None:
        if self.store is not None and self._known:
            data = {pair: [str(price), at.isoformat()] for pair, (price, at) in self._known.items()}
            self.store.set_kv(MARKS_KEY, json.dumps(data, sort_keys=True))

    def _equity(self) -> Decimal | None:
        """Equity with every held pair priced (last known price where there is no current one).

        Sets ``_stale`` to the pairs whose price is missing or older than ``price_max_age_s``.
        """
        self._stale = []
        pf = self.portfolio
        if pf is None:
            return None
        if not (hasattr(pf, "positions") and hasattr(pf, "mark_price") and hasattr(pf, "cash")):
            value = pf.equity
            value = value() if callable(value) else value
            return None if value is None else Decimal(value)
        now = self.clock.now()
        limit = self.config.price_max_age_s
        total = Decimal(pf.cash)
        changed = False
        for pair, pos in pf.positions().items():
            mark = pf.mark_price(pair)
            age_of = getattr(pf, "mark_age_s", None)
            if mark is not None:
                age = age_of(pair) if age_of is not None else 0.0
                age = 0.0 if age is None else age
                seen = self._known.get(pair)
                if seen is None or seen[0] != mark:
                    self._known[pair] = (mark, now)
                    changed = True
                price = mark
            elif pair in self._known:
                price, at = self._known[pair]
                age = (now - at).total_seconds()
            else:
                price, age = pos.avg_price, float("inf")
            if age > limit:
                shown = "no price seen" if age == float("inf") else f"price {price} is {age:.0f}s old"
                self._stale.append(f"{pair} ({shown}; valued at {price})")
            total += pos.volume * price
        if changed:
            self._save_marks()
        return total

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
            return self.result(HealthStatus.DEGRADED, "equity not known (a held pair has no price)")
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
        if self._stale:
            text += f"; price too old (over {cfg.price_max_age_s:g}s): " + ", ".join(self._stale)
        if drawdown >= cfg.max_drawdown_pct:
            return self.result(HealthStatus.CRITICAL, text, metrics)
        if drawdown >= warn or self._stale:
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
