"""The health monitor: escalation, logging once, persistence, auto-resume, resets, reports."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.checks.api_error_rate import ApiErrorRateCheck, ApiErrorRateConfig
from tradebot.checks.staleness import StalenessCheck, StalenessConfig
from tradebot.core.clock import FakeClock, SystemClock
from tradebot.core.errors import ExchangeUnavailable
from tradebot.core.health import (
    BaseCheck,
    CheckResult,
    HealthMonitor,
    HealthReport,
    HealthStatus,
    MonitoringSettings,
    TriggerOptions,
)
from tradebot.core.hookspecs import hookimpl
from tradebot.core.models import Ticker, TradingState
from tradebot.core.plugins import PluginHost
from tradebot.core.store import StateStore
from tradebot.core.trading_state import TradingStateMachine


class Switch(BaseCheck):
    """A check whose status a test sets."""

    def __init__(self, name: str, clock: Any, **options: Any) -> None:
        super().__init__(name, TriggerOptions(**options), clock)
        self.status = HealthStatus.OK
        self.calls = 0
        self.resets = 0

    async def evaluate(self) -> CheckResult:
        self.calls += 1
        return self.result(self.status, f"switch is {self.status.value}", {"calls": self.calls})

    def reset(self) -> None:
        self.resets += 1


class Broken(BaseCheck):
    async def evaluate(self) -> CheckResult:
        raise RuntimeError("bug in the check")


class Reports:
    def __init__(self) -> None:
        self.reports: list[HealthReport] = []

    @hookimpl
    def tradebot_health_report(self, report: HealthReport) -> None:
        self.reports.append(report)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = StateStore(tmp_path)
    yield s
    s.close()


async def test_critical_result_halts_with_the_check_as_source_and_is_logged_once(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    trading = TradingStateMachine(store=store, clock=clock)
    check = Switch("switch", clock, interval_s=1)
    host = PluginHost()
    reports = Reports()
    host.register(reports, "reports")
    monitor = HealthMonitor([check], trading=trading, store=store, plugins=host, clock=clock)
    caplog.set_level(logging.INFO, logger="tradebot.health")
    await monitor.start()
    await monitor.run_round()
    check.status = HealthStatus.CRITICAL
    for _ in range(5):
        await clock.advance(1)
        await monitor.run_round()
    assert trading.state is TradingState.HALTED
    assert trading.source == "check:switch" and "switch is critical" in trading.reason
    changes = [r for r in caplog.records if r.name == "tradebot.health"]
    assert len(changes) == 1 and "ok -> critical" in changes[0].getMessage()
    assert len(reports.reports) == 6 and reports.reports[-1].status is HealthStatus.CRITICAL
    assert reports.reports[-1].trading_state is TradingState.HALTED
    # persisted: one row for the first result, one for the change, none for repeats
    rows = store.recent_health(10)
    assert [r.status for r in rows] == ["critical", "ok"]


async def test_periodic_snapshot_is_persisted_and_intervals_are_honoured(store: StateStore) -> None:
    clock = FakeClock()
    fast, slow = Switch("fast", clock, interval_s=1), Switch("slow", clock, interval_s=5)
    monitor = HealthMonitor(
        [fast, slow], store=store, clock=clock, settings=MonitoringSettings(persist_interval_s=3)
    )
    await monitor.start()
    for _ in range(10):
        await monitor.run_round()
        await clock.advance(1)
    assert fast.calls == 10 and slow.calls == 2
    assert len([r for r in store.recent_health(100) if r.check == "fast"]) == 4  # t=0,3,6,9
    await monitor.run_round()  # t=10: too soon after t=9 to be saved...
    assert len([r for r in store.recent_health(100) if r.check == "fast"]) == 4
    await monitor.stop()  # ...but the last result of each check is saved at stop, once
    await monitor.stop()
    saved = [r for r in store.recent_health(100) if r.check == "fast"]
    assert len(saved) == 5 and saved[0].metrics_json == '{"calls": 11.0}'  # newest first
    assert len([r for r in store.recent_health(100) if r.check == "slow"]) == 3  # t=0, 5, 10: none repeated


async def test_reduce_then_halt_and_never_loosen(store: StateStore) -> None:
    clock = FakeClock()
    trading = TradingStateMachine(store=store, clock=clock)
    reducer = Switch("reducer", clock, on_critical="reduce")
    halter = Switch("halter", clock, on_critical="halt")
    monitor = HealthMonitor([reducer, halter], trading=trading, clock=clock)
    reducer.status = HealthStatus.CRITICAL
    await monitor.run_round()
    assert trading.state is TradingState.REDUCING
    halter.status = HealthStatus.CRITICAL
    await monitor.check_now("halter")
    assert trading.state is TradingState.HALTED and trading.source == "check:halter"
    await monitor.check_now("reducer")
    assert trading.state is TradingState.HALTED


async def test_alert_only_check_and_broken_check_do_not_halt() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    quiet = Switch("quiet", clock, on_critical="none")
    quiet.status = HealthStatus.CRITICAL
    broken = Broken("broken", TriggerOptions(), clock)
    monitor = HealthMonitor([quiet, broken], trading=trading, clock=clock)
    report = await monitor.run_round()
    assert trading.state is TradingState.ACTIVE
    assert report.status is HealthStatus.CRITICAL
    assert report.results["broken"].status is HealthStatus.DEGRADED
    assert "RuntimeError: bug in the check" in report.results["broken"].message


class Flaky(BaseCheck):
    """A check that raises while ``failing`` is set, and is ok otherwise."""

    def __init__(self, name: str, clock: Any, **options: Any) -> None:
        super().__init__(name, TriggerOptions(**options), clock)
        self.failing = True

    async def evaluate(self) -> CheckResult:
        if self.failing:
            raise RuntimeError("bug in the check")
        return self.ok("fine again")


async def test_a_check_failing_rounds_in_a_row_is_blind_and_asks_for_its_own_state() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    drawdown = Flaky("drawdown", clock, interval_s=1, on_critical="reduce", auto_resume_after_s=2)
    monitor = HealthMonitor([drawdown], trading=trading, clock=clock)  # blind after 3 by default
    statuses = []
    for _ in range(3):
        statuses.append((await monitor.run_round()).results["drawdown"].status)
        await clock.advance(1)
    assert statuses == [HealthStatus.DEGRADED, HealthStatus.DEGRADED, HealthStatus.CRITICAL]
    assert trading.state is TradingState.REDUCING and trading.source == "check:drawdown"
    assert "failed 3 times in a row" in trading.reason and "RuntimeError: bug in the check" in trading.reason
    drawdown.failing = False  # fixed (e.g. its module reloaded): its own auto-resume rule applies
    for _ in range(4):
        await monitor.run_round()
        await clock.advance(1)
    assert trading.state is TradingState.ACTIVE


async def test_a_check_that_answers_between_failures_starts_counting_again() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    check = Flaky("check", clock, interval_s=1)
    monitor = HealthMonitor([check], trading=trading, clock=clock)
    for failing in (True, True, False, True, True, False, True, True):
        check.failing = failing
        await monitor.run_round()
        await clock.advance(1)
    assert trading.state is TradingState.ACTIVE
    assert monitor.report().results["check"].status is HealthStatus.DEGRADED


class Slow(BaseCheck):
    async def evaluate(self) -> CheckResult:
        await asyncio.sleep(1)
        return self.ok("late")


async def test_a_check_that_only_times_out_stays_degraded() -> None:
    """Slow is not broken: api-connectivity timing out on a slow exchange has its own thresholds."""
    trading = TradingStateMachine()
    check = Slow("slow", TriggerOptions(interval_s=0.01))
    monitor = HealthMonitor([check], trading=trading, settings=MonitoringSettings(check_timeout_s=0.01))
    for _ in range(5):
        report = await monitor.run_round()
    assert report.results["slow"].status is HealthStatus.DEGRADED and trading.state is TradingState.ACTIVE


async def test_a_manual_resume_gives_a_blind_check_blind_after_more_rounds() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    check = Flaky("drawdown", clock, interval_s=1)
    monitor = HealthMonitor([check], trading=trading, clock=clock)
    for _ in range(3):
        await monitor.run_round()
        await clock.advance(1)
    assert trading.state is TradingState.HALTED
    await trading.resume("operator resume", "operator:cli")
    for expected in (TradingState.ACTIVE, TradingState.ACTIVE, TradingState.HALTED):  # still broken
        await monitor.run_round()
        await clock.advance(1)
        assert trading.state is expected


@pytest.mark.parametrize(("blind_after", "on_critical"), [(0, "halt"), (3, "none")])
async def test_a_failing_check_never_halts_when_told_not_to(blind_after: int, on_critical: str) -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    check = Flaky("check", clock, interval_s=1, on_critical=on_critical)
    monitor = HealthMonitor(
        [check], trading=trading, clock=clock, settings=MonitoringSettings(blind_after=blind_after)
    )
    for _ in range(6):
        report = await monitor.run_round()
        await clock.advance(1)
    assert trading.state is TradingState.ACTIVE
    expected = (
        HealthStatus.DEGRADED if blind_after == 0 else HealthStatus.CRITICAL
    )  # alert-only: shown, no HALT
    assert report.results["check"].status is expected


async def test_a_quarantined_check_plugin_is_blind_and_halts(tmp_path: Path) -> None:
    """The host refuses every call to a quarantined plugin: its check stops protecting, so HALT."""
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    host = PluginHost(quarantine_after=2)
    check = host.wrap("broken-plugin", Flaky("drawdown", clock, interval_s=1))
    monitor = HealthMonitor([check], trading=trading, clock=clock)
    for _ in range(4):
        await monitor.run_round()
        await clock.advance(1)
    assert host.is_quarantined("broken-plugin")
    assert trading.state is TradingState.HALTED and trading.source == "check:drawdown"


async def test_auto_resume_after_the_condition_cleared_long_enough() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    check = Switch("switch", clock, interval_s=1, auto_resume_after_s=10)
    other = Switch("other", clock, interval_s=1)
    monitor = HealthMonitor([check, other], trading=trading, clock=clock)
    check.status = HealthStatus.CRITICAL
    await monitor.run_round()
    assert trading.state is TradingState.HALTED
    check.status = HealthStatus.OK
    for _ in range(10):
        await clock.advance(1)
        await monitor.run_round()
        if clock.monotonic() - 1000 < 11:
            assert trading.state is TradingState.HALTED
    await clock.advance(1)
    await monitor.run_round()
    assert trading.state is TradingState.ACTIVE and trading.source == "check:switch (auto-resume)"


async def test_no_auto_resume_while_another_trigger_is_critical_or_when_off() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    check = Switch("switch", clock, interval_s=1, auto_resume_after_s=2)
    other = Switch("other", clock, interval_s=1)
    monitor = HealthMonitor([check, other], trading=trading, clock=clock)
    check.status = HealthStatus.CRITICAL
    await monitor.run_round()
    check.status = HealthStatus.OK
    other.status = HealthStatus.CRITICAL
    for _ in range(5):
        await clock.advance(1)
        await monitor.run_round()
    assert trading.state is TradingState.HALTED and trading.source == "check:switch"
    # a check without auto-resume never resumes by itself
    manual = Switch("manual", clock, interval_s=1)
    t2 = TradingStateMachine(clock=clock)
    m2 = HealthMonitor([manual], trading=t2, clock=clock)
    manual.status = HealthStatus.CRITICAL
    await m2.run_round()
    manual.status = HealthStatus.OK
    for _ in range(30):
        await clock.advance(10)
        await m2.run_round()
    assert t2.state is TradingState.HALTED


async def test_manual_resume_resets_latched_triggers() -> None:
    clock = FakeClock()
    trading = TradingStateMachine(clock=clock)
    errors = ApiErrorRateCheck("api-error-rate", ApiErrorRateConfig(max_errors=2, window_s=60), clock)
    monitor = HealthMonitor([errors], trading=trading, clock=clock)
    await monitor.start()
    try:
        monitor.record_error(ExchangeUnavailable("down"))
        monitor.record_error(ExchangeUnavailable("down"))
        assert await monitor.process_pending() == 2
        assert trading.state is TradingState.HALTED
        await trading.resume("checked the exchange", "operator:cli")
        assert (await errors.evaluate()).status is HealthStatus.OK
        await monitor.run_round()
        assert trading.state is TradingState.ACTIVE
    finally:
        await monitor.stop()


async def test_event_driven_result_escalates_without_waiting_for_a_round() -> None:
    clock = SystemClock()
    trading = TradingStateMachine(clock=clock)
    check = StalenessCheck(
        "staleness", StalenessConfig(threshold_s=0.1, startup_grace_s=0.1), ["BTC/USD"], clock
    )
    monitor = HealthMonitor(
        [check], trading=trading, clock=clock, settings=MonitoringSettings(round_interval_s=60)
    )
    task = asyncio.ensure_future(monitor.run())
    try:
        await asyncio.sleep(0.3)
        assert trading.state is TradingState.HALTED and trading.source == "check:staleness"
        assert monitor.rounds == 1  # only the first round ran: the HALT came from the event
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_market_events_reach_checks_through_the_plugin_host(tmp_path: Path) -> None:
    """Built from the real plugin host and config, as the bot builds it."""
    from tradebot.app.bootstrap import prepare
    from tradebot.app.config import settings_from_dict
    from tradebot.core.context import BotContext

    settings = settings_from_dict(
        {
            "plugins": {
                "enabled": ["staleness", "volatility", "api-error-rate", "paper", "maintain", "sma-crossover"]
            },
            "checks": {"staleness": {"threshold_s": 0.05, "startup_grace_s": 0.05, "pairs": ["BTC/USD"]}},
            "bot": {"exchange": "paper"},
            "risk": {"accept_unprotected": True},
            "strategies": {"sma": {"plugin": "sma-crossover"}},
        }
    )
    prepared = prepare(settings=settings)
    trading = TradingStateMachine()
    ctx = BotContext(settings=prepared.settings, plugins=prepared.host, trading=trading, state_dir=tmp_path)
    monitor = HealthMonitor.from_context(ctx)
    assert sorted(monitor.checks) == ["api-error-rate", "staleness", "volatility"]
    task = asyncio.ensure_future(monitor.run())
    try:
        for _ in range(10):
            monitor.on_market_event(Ticker("BTC/USD", D(100), D(100), D(100), D(1), SystemClock().now()))
            await asyncio.sleep(0.02)
        assert trading.state is TradingState.ACTIVE
        await asyncio.sleep(0.15)
        assert trading.state is TradingState.HALTED
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
