"""Consecutive losses: HALT after ``limit`` losing trades in a row.

Fed by the portfolio's realised-PnL records (one per exposure-reducing fill). With
``count_by = "round_trip"`` (default) the records of a pair are summed until the position
is fully closed, and that round trip counts as one win or loss; with ``"fill"`` every
reducing fill counts. A result of zero or more (net of fees) is not a loss and restarts
the count. Once tripped the trigger stays critical until a manual resume resets it; the
count is rebuilt from the store's records at start, so a restart does not forget it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
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
    one_of,
)

__all__ = ["ConsecutiveLossesCheck", "ConsecutiveLossesConfig", "tradebot_register_halt_triggers"]

ZERO = Decimal(0)


@attrs.frozen
class ConsecutiveLossesConfig(TriggerOptions):
    """``[checks.consecutive-losses]``"""

    limit: int = attrs.field(default=5, validator=gt(0))
    """Losing trades in a row that trip the trigger."""
    warn_at: int | None = attrs.field(default=None, validator=gt(0))
    """Degraded from this many losses in a row (default: one below the limit)."""
    count_by: str = attrs.field(default="round_trip", validator=one_of(("round_trip", "fill")))
    history: int = attrs.field(default=500, validator=gt(0))
    """Realised-PnL records read back from the store at start."""


class ConsecutiveLossesCheck(BaseCheck):
    """Counts consecutive losing trades from position-closed records."""

    def __init__(
        self, name: str, config: ConsecutiveLossesConfig, store: Any = None, clock: Any = None
    ) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.store = store
        self.count = 0
        self.tripped = False
        self.last_pnl: Decimal | None = None
        self._open_pnl: dict[str, Decimal] = {}
        self._seen: set[str] = set()

    async def start(self, emit: Any) -> None:
        await super().start(emit)
        if self.store is not None and hasattr(self.store, "realized_pnl"):
            # trades before a person last resumed were counted then and reset by that resume
            # (made while a bot ran or not): a restart must not count them again
            resumed = self.store.last_manual_resume() if hasattr(self.store, "last_manual_resume") else None
            for record in self.store.realized_pnl(limit=self.config.history):
                if resumed is None or record.time > resumed:
                    self._apply(record)
            if self.count:
                self.emit(self._summary())

    def reset(self) -> None:
        """A person resumed trading: start counting again from zero."""
        self.count = 0
        self.tripped = False
        self._open_pnl.clear()

    def on_position_closed(self, record: Any) -> None:
        """One realised-PnL record (``PositionClosed``) from the portfolio."""
        before = (self.count, self.tripped)
        if not self._apply(record):
            return
        if (self.count, self.tripped) != before:
            self.emit(self._summary())

    def _apply(self, record: Any) -> bool:
        trade_id = str(getattr(record, "trade_id", ""))
        if trade_id:
            if trade_id in self._seen:
                return False
            self._seen.add(trade_id)
            if len(self._seen) > 10 * self.config.history:
                self._seen.clear()
        pnl = Decimal(record.pnl)
        if self.config.count_by == "round_trip":
            total = self._open_pnl.get(record.pair, ZERO) + pnl
            if not record.fully_closed:
                self._open_pnl[record.pair] = total
                return True
            self._open_pnl.pop(record.pair, None)
            pnl = total
        self.last_pnl = pnl
        if pnl < 0:
            self.count += 1
            if self.count >= self.config.limit:
                self.tripped = True
        else:
            self.count = 0
        return True

    def _summary(self) -> CheckResult:
        cfg = self.config
        metrics = {"consecutive_losses": float(self.count), "limit": float(cfg.limit)}
        if self.tripped:
            return self.result(
                HealthStatus.CRITICAL,
                f"{max(self.count, cfg.limit)} losing trades in a row reached the limit of {cfg.limit}",
                metrics,
            )
        warn_at = cfg.warn_at if cfg.warn_at is not None else cfg.limit - 1
        if warn_at >= 1 and self.count >= warn_at:
            return self.result(
                HealthStatus.DEGRADED, f"{self.count} losing trades in a row (limit {cfg.limit})", metrics
            )
        return self.result(
            HealthStatus.OK, f"{self.count} losing trades in a row (limit {cfg.limit})", metrics
        )

    async def evaluate(self) -> CheckResult:
        return self._summary()


def make(config: ConsecutiveLossesConfig | None, context: Any) -> ConsecutiveLossesCheck:
    """Factory: counts from the bot's store history, then from live records."""
    return ConsecutiveLossesCheck(
        "consecutive-losses",
        config or ConsecutiveLossesConfig(),
        getattr(context, "store", None),
        getattr(context, "clock", None),
    )


@hookimpl
def tradebot_register_halt_triggers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="consecutive-losses",
            factory=make,
            config_cls=ConsecutiveLossesConfig,
            description="HALT after N losing round trips in a row",
        )
    ]
