"""The health model and the monitor that turns check results into trading-state changes.

Each check reports a :class:`CheckResult` (ok / degraded / critical, a message, numeric
metrics and the time). The aggregate of a :class:`HealthReport` is the worst result.

:class:`HealthMonitor` runs periodic checks at their own interval, takes results from
event-driven checks (staleness deadlines, losses, error bursts) the moment they happen,
and for a critical result asks the :class:`~tradebot.core.trading_state.TradingStateMachine`
for the stricter state the check names (REDUCING or HALTED), with the check as source.
A check's status change is logged once and persisted (plus a periodic snapshot), so
``tradebot health`` can show it. Every round broadcasts ``tradebot_health_report``.

Resume semantics: *present-condition* checks (connectivity, staleness, resources,
volatility) re-escalate while their condition persists, even right after a manual resume.
*Latched* triggers (drawdown, consecutive losses, error rate) are reset by a manual resume
(their ``reset()`` is called), so the operator's decision starts a fresh count instead of
being undone a second later. An optional per-check ``auto_resume_after_s`` returns to
ACTIVE once the check that caused the current state has been ok for that long and no
other escalating check is critical.

A check that cannot answer (it raises or times out; a quarantined plugin's check raises on
every call) is degraded, and after ``blind_after`` failures in a row that raised it is
*blind*: it counts as critical and asks for the state its own critical results would,
because trading on without the protection it gives is what a HALT trigger exists to
prevent. A check that only times out stays degraded (slow is not broken); a manual resume
restarts the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import TradebotError, describe
from tradebot.core.models import TradingState, TradingStateChange
from tradebot.core.trading_state import is_manual_resume
from tradebot.core.validate import ge, gt, one_of

if TYPE_CHECKING:
    from tradebot.core.context import BotContext

__all__ = [
    "BaseCheck",
    "Check",
    "CheckResult",
    "HealthMonitor",
    "HealthReport",
    "HealthStatus",
    "MonitoringSettings",
    "TriggerOptions",
    "check_source",
]

log = logging.getLogger("tradebot.health")

SOURCE_PREFIX = "check:"


def check_source(name: str) -> str:
    """The trading-state ``source`` a check's escalation carries (``check:<name>``)."""
    return f"{SOURCE_PREFIX}{name}"


class HealthStatus(enum.StrEnum):
    """How healthy one check (or the whole bot) is."""

    OK = "ok"
    DEGRADED = "degraded"
    CRITICAL = "critical"

    @property
    def severity(self) -> int:
        return {"ok": 0, "degraded": 1, "critical": 2}[self.value]


def worst(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The most severe status (OK for none)."""
    return max(statuses, key=lambda s: s.severity, default=HealthStatus.OK)


@attrs.frozen
class CheckResult:
    """One evaluation of one check.

    ``escalate`` is the trading state this result asks for (only meaningful when
    critical); None means the result never changes the trading state.
    """

    check: str
    status: HealthStatus
    message: str
    time: datetime
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    escalate: TradingState | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status.value,
            "message": self.message,
            "time": self.time.isoformat(),
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "escalate": self.escalate.value if self.escalate is not None else None,
        }


def _finite(value: float) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@attrs.frozen
class HealthReport:
    """The latest result of every check, the aggregate status and the trading state."""

    status: HealthStatus
    results: Mapping[str, CheckResult]
    trading_state: TradingState
    trading_reason: str
    trading_source: str
    time: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "time": self.time.isoformat(),
            "trading": {
                "state": self.trading_state.value,
                "reason": self.trading_reason,
                "source": self.trading_source,
            },
            "checks": {name: r.as_json() for name, r in sorted(self.results.items())},
        }


@attrs.frozen
class MonitoringSettings:
    """``[monitoring]``: how the health monitor runs (thresholds live with each check)."""

    round_interval_s: float = attrs.field(default=1.0, validator=gt(0))
    """How often due checks run and a health report is broadcast."""
    check_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    """A check slower than this counts as degraded for that round."""
    persist_interval_s: float = attrs.field(default=30.0, validator=gt(0))
    """Besides every status change, each check's latest result is saved this often."""
    history_size: int = attrs.field(default=1000, validator=gt(0))
    """Results kept in memory (the store keeps its own bounded history)."""
    blind_after: int = attrs.field(default=3, validator=ge(0))
    """A check that keeps failing (it raises, or its plugin is quarantined) this many
    evaluations in a row no longer protects against what it checks: it then counts as
    critical and asks for the state its own critical results would (``on_critical``, for
    checks built on :class:`BaseCheck`). A manual resume restarts the count. A check that
    only times out stays degraded. 0 leaves a failing check degraded however long it fails."""


ON_CRITICAL = ("halt", "reduce", "none")


@attrs.frozen
class TriggerOptions:
    """Fields every check config shares (checks' config classes inherit from this)."""

    interval_s: float = attrs.field(default=5.0, validator=gt(0))
    """How often the monitor evaluates the check."""
    on_critical: str = attrs.field(default="halt", validator=one_of(ON_CRITICAL))
    """Trading state a critical result asks for: ``halt``, ``reduce`` or ``none`` (alert only)."""
    auto_resume_after_s: float | None = attrs.field(default=None, validator=ge(0))
    """Return to ACTIVE once this check has been ok this long (off when unset)."""

    def target(self) -> TradingState | None:
        return {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING}.get(self.on_critical)


Emit = Callable[[CheckResult], None]


@runtime_checkable
class Check(Protocol):
    """What the monitor needs from a check.

    Optional methods, used when present: ``start(emit)`` / ``stop()`` for event-driven
    checks (``emit(result)`` delivers a result at once), ``reset()`` (called on a manual
    resume), and the feeds ``on_market_event(event)``, ``on_position_closed(record)``,
    ``on_fill(fill)``, ``record_error(exc)``.
    """

    name: str
    interval_s: float
    auto_resume_after_s: float | None

    async def evaluate(self) -> CheckResult:
        """The check's status now."""


# --- optional capabilities of a check: checked once, when the monitor takes the check ---------


@runtime_checkable
class _Starts(Protocol):
    async def start(self, emit: Emit) -> None: ...


@runtime_checkable
class _Stops(Protocol):
    async def stop(self) -> None: ...


@runtime_checkable
class _Resets(Protocol):
    def reset(self) -> None: ...


@runtime_checkable
class _HasOptions(Protocol):
    options: TriggerOptions


@runtime_checkable
class _FedMarketEvents(Protocol):
    def on_market_event(self, event: Any) -> None: ...


@runtime_checkable
class _FedClosedPositions(Protocol):
    def on_position_closed(self, record: Any) -> None: ...


@runtime_checkable
class _FedFills(Protocol):
    def on_fill(self, fill: Any) -> None: ...


@runtime_checkable
class _FedErrors(Protocol):
    def record_error(self, exc: BaseException) -> None: ...


_FEEDS: dict[str, Any] = {  # feed method -> the Protocol saying a check takes it
    "on_market_event": _FedMarketEvents,
    "on_position_closed": _FedClosedPositions,
    "on_fill": _FedFills,
    "record_error": _FedErrors,
}


class BaseCheck:
    """Common plumbing for checks: name, options, clock, result helpers, emitting."""

    def __init__(self, name: str, options: TriggerOptions, clock: Clock | None = None) -> None:
        self.name = name
        self.options = options
        self.clock: Clock = clock or SystemClock()
        self._emit: Emit | None = None

    @property
    def interval_s(self) -> float:
        return self.options.interval_s

    @property
    def auto_resume_after_s(self) -> float | None:
        return self.options.auto_resume_after_s

    async def start(self, emit: Emit) -> None:
        """Remember where event-driven results go; subclasses start their timers here."""
        self._emit = emit

    async def stop(self) -> None:
        """Stop timers; subclasses extend."""
        self._emit = None

    def emit(self, result: CheckResult) -> None:
        """Hand a result to the monitor now (no-op before start)."""
        if self._emit is not None:
            self._emit(result)

    def result(
        self,
        status: HealthStatus,
        message: str,
        metrics: Mapping[str, float] | None = None,
        *,
        escalate: TradingState | str | None = "configured",
    ) -> CheckResult:
        """A result of this check now.

        A critical result carries the configured escalation unless ``escalate`` names
        another state (or None for none); non-critical results never escalate.
        """
        target = self.options.target() if escalate == "configured" else escalate
        return CheckResult(
            check=self.name,
            status=status,
            message=message,
            time=self.clock.now(),
            metrics=dict(metrics or {}),
            escalate=target if status is HealthStatus.CRITICAL else None,  # type: ignore[arg-type]
        )

    def ok(self, message: str, **metrics: float) -> CheckResult:
        return self.result(HealthStatus.OK, message, metrics)

    def degraded(self, message: str, **metrics: float) -> CheckResult:
        return self.result(HealthStatus.DEGRADED, message, metrics)

    def critical(self, message: str, **metrics: float) -> CheckResult:
        return self.result(HealthStatus.CRITICAL, message, metrics)


class TradingLike(Protocol):
    state: TradingState
    reason: str
    source: str
    listeners: list[Any]

    async def escalate(self, target: TradingState, reason: str, source: str) -> TradingStateChange | None: ...

    async def auto_resume(self, source: str, reason: str) -> TradingStateChange | None: ...


class HealthStore(Protocol):
    def append_health(
        self, check: str, status: str, message: str, metrics_json: str, time: datetime
    ) -> None: ...


class Broadcaster(Protocol):
    async def broadcast(self, hook: str, **kwargs: Any) -> None: ...


@attrs.define
class _Track:
    """Per-check bookkeeping of the monitor."""

    check: Any
    next_due: float = 0.0
    latest: CheckResult | None = None
    ok_since: float | None = None
    persisted_at: float | None = None
    persisted: CheckResult | None = None  # the last result saved to the store
    failures: int = 0  # evaluations in a row that raised


class HealthMonitor:
    """Runs checks, keeps their latest results and history, escalates, broadcasts reports."""

    def __init__(
        self,
        checks: Iterable[Any],
        *,
        trading: TradingLike | None = None,
        store: HealthStore | None = None,
        plugins: Broadcaster | None = None,
        clock: Clock | None = None,
        settings: MonitoringSettings | None = None,
    ) -> None:
        self.settings = settings or MonitoringSettings()
        self.trading = trading
        self.store = store
        self.plugins = plugins
        self.clock: Clock = clock or SystemClock()
        self._tracks: dict[str, _Track] = {}
        for check in checks:
            if check.name in self._tracks:
                raise ValueError(f"two checks are named {check.name!r}")
            self._tracks[check.name] = _Track(check=check)
        # what each check can do, learnt once here rather than asked at every event
        self._feeds: dict[str, list[tuple[str, Callable[..., Any]]]] = {
            method: [
                (t.check.name, getattr(t.check, method))
                for t in self._tracks.values()
                if isinstance(t.check, proto)
            ]
            for method, proto in _FEEDS.items()
        }
        self._starts = [t for t in self._tracks.values() if isinstance(t.check, _Starts)]
        self._stops = [t for t in self._tracks.values() if isinstance(t.check, _Stops)]
        self._resets = [t for t in self._tracks.values() if isinstance(t.check, _Resets)]
        self.history: deque[CheckResult] = deque(maxlen=self.settings.history_size)
        self._queue: asyncio.Queue[CheckResult] = asyncio.Queue()
        self._started = False
        self.rounds = 0
        self.last_report: HealthReport | None = None
        if trading is not None:
            trading.listeners.append(self._on_trading_change)

    # --- building from a bot ------------------------------------------------------------

    @classmethod
    def from_context(cls, ctx: BotContext) -> HealthMonitor:
        """Build every loaded check and HALT trigger with its validated config.

        Position-closed records of ``ctx.portfolio`` are fed to checks that take them.
        The caller feeds market events (:meth:`on_market_event`) and exchange errors
        (:meth:`record_error`), and runs :meth:`run` as a task.
        """
        checks = []
        host = ctx.plugins
        for category in ("halt-trigger", "check"):
            for name in sorted(host.components(category)):
                config = ctx.settings.plugin_config(category, name)
                try:
                    checks.append(host.build(category, name, config, ctx))
                except TradebotError as exc:
                    log.error("check %r could not be built, running without it: %s", name, exc)
        settings = ctx.settings.section("monitoring") or MonitoringSettings()
        monitor = cls(
            checks, trading=ctx.trading, store=ctx.store, plugins=host, clock=ctx.clock, settings=settings
        )
        portfolio = ctx.portfolio
        if portfolio is not None and hasattr(portfolio, "listeners"):
            portfolio.listeners.append(monitor.on_position_closed)
        return monitor

    # --- feeds -----------------------------------------------------------------------------

    @property
    def checks(self) -> dict[str, Any]:
        return {name: t.check for name, t in self._tracks.items()}

    def _feed(self, method: str, *args: Any) -> None:
        for name, fn in self._feeds[method]:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - one failing check never stops the feed
                log.warning("check %r failed in %s: %s", name, method, exc)

    def on_market_event(self, event: Any) -> None:
        """A ticker or candle arrived (subscribe this to the event bus)."""
        self._feed("on_market_event", event)

    def on_position_closed(self, record: Any) -> None:
        """A fill reduced a position (the portfolio's position-closed listener)."""
        self._feed("on_position_closed", record)

    def on_fill(self, fill: Any) -> None:
        """An order was (partly) filled."""
        self._feed("on_fill", fill)

    def record_error(self, exc: BaseException) -> None:
        """An exchange call failed (wire the exchange/executor error path here)."""
        self._feed("record_error", exc)

    def submit(self, result: CheckResult) -> None:
        """Deliver a result now (what event-driven checks' ``emit`` calls)."""
        self._queue.put_nowait(result)

    # --- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the checks, then run rounds and process results until cancelled."""
        await self.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._consume(), name="health-results")
                tg.create_task(self._rounds(), name="health-rounds")
        finally:
            await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        now = self.clock.monotonic()
        for track in self._tracks.values():
            track.next_due = now
        for track in self._starts:
            try:
                await track.check.start(self.submit)
            except Exception as exc:  # noqa: BLE001
                log.error("check %r failed to start: %s", track.check.name, exc)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        # what `tradebot health` shows after the bot stopped: each check's last result, not
        # the one saved up to persist_interval_s earlier
        for track in self._tracks.values():
            if track.latest is not None and track.latest is not track.persisted:
                self._persist(track.latest)
                track.persisted = track.latest
        for track in self._stops:
            with contextlib.suppress(Exception):
                await track.check.stop()

    async def process_pending(self) -> int:
        """Process every result delivered so far (what the monitor's task does continuously)."""
        count = 0
        while not self._queue.empty():
            await self.process(self._queue.get_nowait())
            count += 1
        return count

    async def _consume(self) -> None:
        while True:
            result = await self._queue.get()
            await self.process(result)

    async def _rounds(self) -> None:
        while True:
            await self.run_round()
            await self.clock.sleep(self.settings.round_interval_s)

    async def run_round(self) -> HealthReport:
        """Evaluate every due check, process results, auto-resume, broadcast the report."""
        now = self.clock.monotonic()
        due = [t for t in self._tracks.values() if t.next_due <= now]
        for t in due:
            t.next_due = now + t.check.interval_s
        results = await asyncio.gather(*(self._evaluate(t) for t in due))
        for result in results:
            await self.process(result)
        await self._maybe_auto_resume()
        report = self.report()
        self.last_report = report
        self.rounds += 1
        if self.plugins is not None:
            await self.plugins.broadcast("tradebot_health_report", report=report)
        return report

    async def check_now(self, name: str) -> CheckResult:
        """Evaluate one check at once and process its result."""
        result = await self._evaluate(self._tracks[name])
        await self.process(result)
        return result

    async def _evaluate(self, track: _Track) -> CheckResult:
        check = track.check
        try:
            async with asyncio.timeout(self.settings.check_timeout_s):  # not wait_for: it can lose a cancel
                result: CheckResult = await check.evaluate()
        except TimeoutError:
            # slow is not broken: a check timing out often measures a slow exchange, which
            # is its own business (api-connectivity's thresholds); it stays degraded
            track.failures = 0
            return self._failed(track, f"check did not answer within {self.settings.check_timeout_s:g}s")
        except Exception as exc:  # noqa: BLE001 - a broken check is reported, it never stops the monitor
            track.failures += 1
            return self._failed(track, f"check failed: {type(exc).__name__}: {describe(exc)}")
        track.failures = 0
        return result

    def _failed(self, track: _Track, message: str) -> CheckResult:
        """A check that could not answer: degraded, then critical once it is blind (see ``blind_after``)."""
        name, limit = track.check.name, self.settings.blind_after
        if not limit or track.failures < limit:
            return CheckResult(
                check=name, status=HealthStatus.DEGRADED, message=message, time=self.clock.now()
            )
        options = track.check.options if isinstance(track.check, _HasOptions) else None
        target = options.target() if isinstance(options, TriggerOptions) else None
        return CheckResult(
            check=name,
            status=HealthStatus.CRITICAL,
            message=f"{message}; failed {track.failures} times in a row, so it no longer protects against what"
            " it checks",
            time=self.clock.now(),
            metrics={"failures": float(track.failures)},
            escalate=target,
        )

    async def process(self, result: CheckResult) -> None:
        """Record a result, log/persist status changes and escalate a critical one."""
        from tradebot.core.secrets import redact

        if (
            shown := redact(result.message)
        ) != result.message:  # a check's words go to the state, alerts, /status
            result = attrs.evolve(result, message=shown)
        track = self._tracks.get(result.check)
        if track is None:
            log.warning("result from unknown check %r ignored", result.check)
            return
        previous = track.latest
        track.latest = result
        self.history.append(result)
        now = self.clock.monotonic()
        changed = previous is None or previous.status is not result.status
        if result.status is HealthStatus.OK:
            if track.ok_since is None or changed:
                track.ok_since = now
        else:
            track.ok_since = None
        if changed:
            self._log_change(previous, result)
        if (
            changed
            or track.persisted_at is None
            or now - track.persisted_at >= self.settings.persist_interval_s
        ):
            self._persist(result)
            track.persisted_at, track.persisted = now, result
        if (
            result.status is HealthStatus.CRITICAL
            and result.escalate is not None
            and self.trading is not None
            and result.escalate.severity > self.trading.state.severity
        ):
            await self.trading.escalate(
                result.escalate, f"{result.check}: {result.message}", check_source(result.check)
            )

    def _log_change(self, previous: CheckResult | None, result: CheckResult) -> None:
        level = {
            HealthStatus.OK: logging.INFO,
            HealthStatus.DEGRADED: logging.WARNING,
            HealthStatus.CRITICAL: logging.ERROR,
        }[result.status]
        if previous is None and result.status is HealthStatus.OK:
            level = logging.DEBUG
        was = previous.status.value if previous is not None else "unknown"
        log.log(
            level,
            "health %s: %s -> %s: %s",
            result.check,
            was,
            result.status.value,
            result.message,
            extra={"check": result.check, "status": result.status.value},
        )

    def _persist(self, result: CheckResult) -> None:
        if self.store is None:
            return
        try:
            metrics = json.dumps({k: _finite(v) for k, v in result.metrics.items()}, sort_keys=True)
            self.store.append_health(result.check, result.status.value, result.message, metrics, result.time)
        except Exception as exc:  # noqa: BLE001 - losing one history row must not stop monitoring
            log.warning("could not save health of %s: %s", result.check, exc)

    async def _maybe_auto_resume(self) -> None:
        trading = self.trading
        if trading is None or trading.state is TradingState.ACTIVE:
            return
        if not trading.source.startswith(SOURCE_PREFIX):
            return
        name = trading.source[len(SOURCE_PREFIX) :]
        track = self._tracks.get(name)
        if track is None or track.check.auto_resume_after_s is None or track.ok_since is None:
            return
        cleared_for = self.clock.monotonic() - track.ok_since
        if cleared_for < track.check.auto_resume_after_s:
            return
        blocking = [
            t.check.name
            for t in self._tracks.values()
            if t.latest is not None
            and t.latest.status is HealthStatus.CRITICAL
            and t.latest.escalate is not None
        ]
        if blocking:
            return
        await trading.auto_resume(trading.source, f"{name} ok for {cleared_for:.1f}s")

    def _on_trading_change(self, change: TradingStateChange) -> None:
        """A manual resume restarts latched triggers from a clean slate."""
        if not is_manual_resume(change):
            return
        for track in self._tracks.values():
            track.failures = 0  # a blind check gets blind_after more rounds before it HALTs again
        for track in self._resets:
            try:
                track.check.reset()
            except Exception as exc:  # noqa: BLE001
                log.warning("check %r failed to reset: %s", track.check.name, exc)

    # --- reading ------------------------------------------------------------------------------

    def report(self) -> HealthReport:
        """The latest result of every check that has reported, with the aggregate."""
        results = {n: t.latest for n, t in self._tracks.items() if t.latest is not None}
        trading = self.trading
        return HealthReport(
            status=worst(r.status for r in results.values()),
            results=results,
            trading_state=trading.state if trading is not None else TradingState.ACTIVE,
            trading_reason=trading.reason if trading is not None else "",
            trading_source=trading.source if trading is not None else "",
            time=self.clock.now(),
        )

    @property
    def status(self) -> HealthStatus:
        return worst(t.latest.status for t in self._tracks.values() if t.latest is not None)
