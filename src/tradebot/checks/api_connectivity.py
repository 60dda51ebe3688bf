"""API connectivity check: a light authenticated call plus the exchange's system status.

Every ``interval_s`` the check asks the exchange for its system status and its balances
(an authenticated call). A failed round (error, timeout, or balances the exchange could
only serve from its cache) counts as one failure; ``degraded_after`` consecutive failures
make the check degraded, ``critical_after`` make it critical (HALT by default). Any
success clears the count.

``maintenance`` and ``cancel_only`` mean no new orders can be placed: the check is then
critical and asks for the state configured in ``on_maintenance`` / ``on_cancel_only``
(REDUCING by default; ``none`` only reports). ``post_only`` is degraded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import (
    BaseCheck,
    CheckResult,
    ComponentSpec,
    HealthStatus,
    TradingState,
    TriggerOptions,
    gt,
    hookimpl,
    one_of,
)

__all__ = ["ApiConnectivityCheck", "ApiConnectivityConfig", "tradebot_register_checks"]

_STATES = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "none": None}


@attrs.frozen
class ApiConnectivityConfig(TriggerOptions):
    """``[checks.api-connectivity]``"""

    interval_s: float = attrs.field(default=10.0, validator=gt(0))
    degraded_after: int = attrs.field(default=1, validator=gt(0))
    """Consecutive failed rounds before the check is degraded."""
    critical_after: int = attrs.field(default=3, validator=gt(0))
    """Consecutive failed rounds before the check is critical (``on_critical`` applies)."""
    call_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    """Longest wait for each call."""
    check_balance: bool = True
    """Make the authenticated Balance call (off for exchanges without credentials)."""
    on_maintenance: str = attrs.field(default="reduce", validator=one_of(tuple(_STATES)))
    on_cancel_only: str = attrs.field(default="reduce", validator=one_of(tuple(_STATES)))

    def __attrs_post_init__(self) -> None:
        if self.critical_after < self.degraded_after:
            raise ValueError(
                f"critical_after must be >= degraded_after (got {self.critical_after} < {self.degraded_after})"
            )


class ApiConnectivityCheck(BaseCheck):
    """Counts consecutive failed connectivity rounds; reads the exchange's system status."""

    def __init__(self, name: str, config: ApiConnectivityConfig, exchange: Any, clock: Any = None) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.exchange = exchange
        self.failures = 0
        self.last_error = ""

    async def evaluate(self) -> CheckResult:
        cfg = self.config
        if self.exchange is None:
            return self.degraded("no exchange to check")
        started = self.clock.monotonic()
        status: str | None = None
        try:
            async with asyncio.timeout(cfg.call_timeout_s):  # not wait_for: it can lose a cancel
                sys_status = await self.exchange.system_status()
            status = sys_status.status
            if cfg.check_balance:
                async with asyncio.timeout(cfg.call_timeout_s):
                    balances = await self.exchange.balances()
                if getattr(balances, "stale", False):
                    raise ConnectionError(
                        f"balances served from cache, {getattr(balances, 'age_s', 0):.0f}s old"
                    )
        except Exception as exc:  # noqa: BLE001 - every failure is what this check measures
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            self.failures = 0
            self.last_error = ""
        latency = self.clock.monotonic() - started
        metrics = {"consecutive_failures": float(self.failures), "latency_s": latency}
        if self.failures >= cfg.critical_after:
            return self.result(
                HealthStatus.CRITICAL,
                f"exchange unreachable: {self.failures} failed rounds in a row (limit {cfg.critical_after}); "
                f"last error {self.last_error}",
                metrics,
            )
        if self.failures >= cfg.degraded_after:
            return self.result(
                HealthStatus.DEGRADED,
                f"{self.failures} failed round(s) in a row (critical at {cfg.critical_after}); last error {self.last_error}",
                metrics,
            )
        if self.failures == 0 and status is not None and status != "online":
            return self._status_result(status, metrics)
        return self.result(
            HealthStatus.OK, f"exchange {status or 'reachable'} ({latency * 1000:.0f} ms)", metrics
        )

    def _status_result(self, status: str, metrics: dict[str, float]) -> CheckResult:
        setting = {"maintenance": self.config.on_maintenance, "cancel_only": self.config.on_cancel_only}.get(
            status
        )
        if setting is None:
            return self.result(HealthStatus.DEGRADED, f"exchange is in {status} mode", metrics)
        target = _STATES[setting]
        if target is None:
            return self.result(
                HealthStatus.DEGRADED, f"exchange is in {status} mode: no new orders possible", metrics
            )
        return self.result(
            HealthStatus.CRITICAL,
            f"exchange is in {status} mode: no new orders possible",
            metrics,
            escalate=target,
        )


def make(config: ApiConnectivityConfig | None, context: Any) -> ApiConnectivityCheck:
    """Factory: the check on the bot's exchange."""
    return ApiConnectivityCheck(
        "api-connectivity",
        config or ApiConnectivityConfig(),
        getattr(context, "exchange", None),
        getattr(context, "clock", None),
    )


@hookimpl
def tradebot_register_checks() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="api-connectivity",
            factory=make,
            config_cls=ApiConnectivityConfig,
            description="Balance + SystemStatus calls; consecutive failures degrade then HALT; maintenance/cancel_only reduce",
        )
    ]
