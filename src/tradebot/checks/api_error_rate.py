"""API error rate: HALT when ``max_errors`` exchange errors happen within ``window_s``.

The running bot feeds :meth:`ApiErrorRateCheck.record_error` with every failed exchange
call: each failed request of a client that reports them (the Kraken exchange: every attempt
that is retried and every call that fails for good, order placements included), else each
exchange call that raises (see :mod:`tradebot.core.exchange_calls`), including those made
while starting. Error classes named in ``ignore`` (e.g. ``OrderNotFound``) are not counted. The check is
critical while the window holds ``max_errors`` or more; errors age out of the window, and
a manual resume clears it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import BaseCheck, CheckResult, ComponentSpec, HealthStatus, TriggerOptions, gt, hookimpl

__all__ = ["ApiErrorRateCheck", "ApiErrorRateConfig", "tradebot_register_halt_triggers"]


@attrs.frozen
class ApiErrorRateConfig(TriggerOptions):
    """``[checks.api-error-rate]``"""

    interval_s: float = attrs.field(default=5.0, validator=gt(0))
    max_errors: int = attrs.field(default=10, validator=gt(0))
    """Errors within the window that trip the trigger."""
    window_s: float = attrs.field(default=60.0, validator=gt(0))
    warn_errors: int | None = attrs.field(default=None, validator=gt(0))
    """Degraded from this many errors in the window (default: half of ``max_errors``)."""
    ignore: list[str] = attrs.field(factory=list)
    """Exception class names not to count (matched against the class and its bases)."""


def _kind(exc: BaseException) -> str:
    """The error's class name (a reported failed request names the error behind it)."""
    kind = getattr(exc, "error_type", None)
    return kind if isinstance(kind, str) and kind else type(exc).__name__


class ApiErrorRateCheck(BaseCheck):
    """A sliding window of error times on the monotonic clock."""

    def __init__(self, name: str, config: ApiErrorRateConfig, clock: Any = None) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self._times: deque[tuple[float, str]] = deque()
        self._status = HealthStatus.OK

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._times and self._times[0][0] <= horizon:
            self._times.popleft()

    def _ignored(self, exc: BaseException) -> bool:
        names = {cls.__name__ for cls in type(exc).__mro__} | {_kind(exc)}
        return bool(names & set(self.config.ignore))

    def record_error(self, exc: BaseException) -> None:
        """Count one failed exchange call."""
        if self._ignored(exc):
            return
        now = self.clock.monotonic()
        self._times.append((now, _kind(exc)))
        # bounded: only the newest max_errors matter for the decision, plus margin for metrics
        while len(self._times) > 10 * self.config.max_errors:
            self._times.popleft()
        self._prune(now)
        result = self._summary(now)
        if result.status is not self._status:
            self._status = result.status
            self.emit(result)

    def reset(self) -> None:
        """A person resumed trading: forget the errors so far."""
        self._times.clear()
        self._status = HealthStatus.OK

    def _summary(self, now: float) -> CheckResult:
        cfg = self.config
        count = len(self._times)
        metrics = {"errors_in_window": float(count), "window_s": cfg.window_s}
        kinds = ", ".join(f"{k} x{n}" for k, n in Counter(k for _, k in self._times).most_common(3))
        text = f"{count} API errors in the last {cfg.window_s:g}s (limit {cfg.max_errors})" + (
            f": {kinds}" if kinds else ""
        )
        warn = cfg.warn_errors if cfg.warn_errors is not None else max(1, cfg.max_errors // 2)
        if count >= cfg.max_errors:
            return self.result(HealthStatus.CRITICAL, text, metrics)
        if count >= warn:
            return self.result(HealthStatus.DEGRADED, text, metrics)
        return self.result(HealthStatus.OK, text, metrics)

    async def evaluate(self) -> CheckResult:
        now = self.clock.monotonic()
        self._prune(now)
        result = self._summary(now)
        self._status = result.status
        return result


def make(config: ApiErrorRateConfig | None, context: Any) -> ApiErrorRateCheck:
    """Factory."""
    return ApiErrorRateCheck(
        "api-error-rate", config or ApiErrorRateConfig(), getattr(context, "clock", None)
    )


@hookimpl
def tradebot_register_halt_triggers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="api-error-rate",
            factory=make,
            config_cls=ApiErrorRateConfig,
            description="HALT when N exchange errors happen within T seconds",
        )
    ]
