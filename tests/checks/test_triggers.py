"""Each check and HALT trigger fires at its threshold and not below it (fake clocks)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import attrs
import pytest

from tradebot.app.config import structure
from tradebot.checks.api_connectivity import ApiConnectivityCheck, ApiConnectivityConfig
from tradebot.checks.api_error_rate import ApiErrorRateCheck, ApiErrorRateConfig
from tradebot.checks.consecutive_losses import ConsecutiveLossesCheck, ConsecutiveLossesConfig
from tradebot.checks.drawdown import PEAK_KEY, DrawdownCheck, DrawdownConfig
from tradebot.checks.resources import ResourceCheck, ResourcesConfig
from tradebot.checks.staleness import StalenessCheck, StalenessConfig
from tradebot.checks.volatility import VolatilityCheck, VolatilityConfig
from tradebot.core.clock import FakeClock
from tradebot.core.errors import ExchangeUnavailable, OrderNotFound, RequestTimeout
from tradebot.core.health import CheckResult, HealthStatus
from tradebot.core.models import Balances, SystemStatus, Ticker, TradingState
from tradebot.core.store import PositionClosed, StateStore
from tradebot.core.trading_state import TradingStateMachine
from tradebot.services.control import send_command

OK, DEGRADED, CRITICAL = HealthStatus.OK, HealthStatus.DEGRADED, HealthStatus.CRITICAL
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Emitted(list[CheckResult]):
    def __call__(self, result: CheckResult) -> None:
        self.append(result)


# --- API connectivity --------------------------------------------------------------------


class FlakyExchange:
    def __init__(self) -> None:
        self.fail = False
        self.status = "online"
        self.stale_balances = False

    async def system_status(self) -> SystemStatus:
        if self.fail:
            raise RequestTimeout("SystemStatus timed out", endpoint="public/SystemStatus")
        return SystemStatus(self.status, T0)

    async def balances(self) -> Balances:
        return Balances(
            {"USD": D(1)}, T0, stale=self.stale_balances, age_s=42.0 if self.stale_balances else 0.0
        )


async def test_api_connectivity_degrades_then_halts_at_the_failure_limit() -> None:
    ex = FlakyExchange()
    check = ApiConnectivityCheck(
        "api-connectivity", ApiConnectivityConfig(degraded_after=1, critical_after=3), ex, FakeClock()
    )
    assert (await check.evaluate()).status is OK
    ex.fail = True
    statuses = [(await check.evaluate()).status for _ in range(3)]
    assert statuses == [DEGRADED, DEGRADED, CRITICAL]
    result = await check.evaluate()
    assert result.escalate is TradingState.HALTED and "4 failed rounds" in result.message
    ex.fail = False
    assert (await check.evaluate()).status is OK  # one success clears the count


async def test_api_connectivity_counts_cached_balances_as_failure() -> None:
    ex = FlakyExchange()
    ex.stale_balances = True
    check = ApiConnectivityCheck("api-connectivity", ApiConnectivityConfig(critical_after=1), ex, FakeClock())
    result = await check.evaluate()
    assert result.status is CRITICAL and "cache" in result.message


@pytest.mark.parametrize(
    ("status", "setting", "expected"),
    [
        ("maintenance", "reduce", TradingState.REDUCING),
        ("maintenance", "halt", TradingState.HALTED),
        ("cancel_only", "reduce", TradingState.REDUCING),
        ("cancel_only", "none", None),
    ],
)
async def test_api_connectivity_maps_exchange_modes(
    status: str, setting: str, expected: TradingState | None
) -> None:
    ex = FlakyExchange()
    ex.status = status
    cfg = ApiConnectivityConfig(on_maintenance=setting, on_cancel_only=setting)
    result = await ApiConnectivityCheck("api-connectivity", cfg, ex, FakeClock()).evaluate()
    assert result.escalate is expected
    assert result.status is (CRITICAL if expected is not None else DEGRADED)
    assert status in result.message


async def test_api_connectivity_post_only_is_degraded_only() -> None:
    ex = FlakyExchange()
    ex.status = "post_only"
    result = await ApiConnectivityCheck(
        "api-connectivity", ApiConnectivityConfig(), ex, FakeClock()
    ).evaluate()
    assert result.status is DEGRADED and result.escalate is None


# --- staleness ---------------------------------------------------------------------------


def tick(pair: str, price: str = "100") -> Ticker:
    p = D(price)
    return Ticker(pair, p, p, p, D(1), T0)


async def test_staleness_fires_at_the_threshold_and_not_before() -> None:
    clock = FakeClock()
    emitted = Emitted()
    check = StalenessCheck(
        "staleness", StalenessConfig(threshold_s=5, startup_grace_s=10), ["BTC/USD"], clock
    )
    await check.start(emitted)
    try:
        check.on_market_event(tick("BTC/USD"))
        await clock.advance(4.99)
        assert emitted == [] and (await check.evaluate()).status is OK
        await clock.advance(0.01)
        assert [r.status for r in emitted] == [CRITICAL]
        assert "BTC/USD (no update for 5.0s)" in emitted[0].message
        assert emitted[0].escalate is TradingState.HALTED
        # fresh data clears it at once and re-arms the deadline
        check.on_market_event(tick("BTC/USD"))
        assert [r.status for r in emitted] == [CRITICAL, OK]
        await clock.advance(4.9)
        assert len(emitted) == 2
        await clock.advance(0.1)
        assert [r.status for r in emitted] == [CRITICAL, OK, CRITICAL]
    finally:
        await check.stop()


async def test_staleness_updates_push_the_deadline_without_firing() -> None:
    clock = FakeClock()
    emitted = Emitted()
    check = StalenessCheck("staleness", StalenessConfig(threshold_s=1, startup_grace_s=1), ["ETH/USD"], clock)
    await check.start(emitted)
    try:
        for _ in range(20):
            check.on_market_event(tick("ETH/USD"))
            await clock.advance(0.9)
        assert emitted == []
    finally:
        await check.stop()


async def test_pair_never_seen_within_grace_is_stale() -> None:
    clock = FakeClock()
    emitted = Emitted()
    check = StalenessCheck(
        "staleness", StalenessConfig(threshold_s=1, startup_grace_s=30), ["BTC/USD", "ETH/USD"], clock
    )
    await check.start(emitted)
    try:
        await clock.advance(29.9)
        check.on_market_event(tick("BTC/USD"))
        assert emitted == []
        await clock.advance(0.1)
        assert emitted[-1].status is CRITICAL and "ETH/USD (never received)" in emitted[-1].message
        assert "BTC/USD" not in emitted[-1].message
    finally:
        await check.stop()


# --- resources -------------------------------------------------------------------------------


class ScriptedSampler:
    def __init__(self) -> None:
        self.values = {
            "host_cpu_pct": 10.0,
            "host_mem_pct": 50.0,
            "mem_headroom_mb": 4000.0,
            "process_cpu_pct": 1.0,
            "process_rss_mb": 80.0,
            "loop_lag_s": 0.0,
        }
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def sample(self) -> dict[str, float]:
        return dict(self.values)


async def test_resources_critical_only_when_sustained_for_the_window() -> None:
    clock = FakeClock()
    sampler = ScriptedSampler()
    cfg = ResourcesConfig(sustained_s=60, mem_headroom_warn_mb=256, mem_headroom_critical_mb=64)
    check = ResourceCheck("resources", cfg, sampler, clock)
    sampler.values["mem_headroom_mb"] = 64.0
    assert (await check.evaluate()).status is OK  # just crossed: not sustained yet
    await clock.advance(59.9)
    assert (await check.evaluate()).status is OK
    await clock.advance(0.1)
    result = await check.evaluate()
    assert result.status is CRITICAL and "mem_headroom_mb" in result.message
    assert result.metrics["mem_headroom_mb"] == 64.0
    # one sample over the limit restarts the clock
    sampler.values["mem_headroom_mb"] = 64.1
    assert (await check.evaluate()).status is DEGRADED  # still under warn for >= 60 s
    sampler.values["mem_headroom_mb"] = 64.0
    await clock.advance(30)
    assert (await check.evaluate()).status is DEGRADED


async def test_host_wide_load_is_at_most_degraded_however_long_it_lasts() -> None:
    clock = FakeClock()
    sampler = ScriptedSampler()
    check = ResourceCheck("resources", ResourcesConfig(sustained_s=60), sampler, clock)
    sampler.values.update(host_cpu_pct=100.0, host_mem_pct=99.9)  # other processes keep the host busy
    assert (await check.evaluate()).status is OK  # not sustained yet
    for _ in range(20):
        await clock.advance(60)
        result = await check.evaluate()
        assert result.status is DEGRADED, result.message
    assert "host_cpu_pct" in result.message and "host_mem_pct" in result.message
    # the bot's own loop lag, sustained, is what HALTs
    sampler.values["loop_lag_s"] = 2.5
    await check.evaluate()
    await clock.advance(60)
    assert (await check.evaluate()).status is CRITICAL


async def test_resources_spike_below_window_is_ok_and_loop_lag_degrades_at_once() -> None:
    clock = FakeClock()
    sampler = ScriptedSampler()
    check = ResourceCheck("resources", ResourcesConfig(sustained_s=10, lag_warn_s=0.25), sampler, clock)
    sampler.values["host_cpu_pct"] = 100.0
    await check.evaluate()
    await clock.advance(9)
    sampler.values["host_cpu_pct"] = 20.0
    assert (await check.evaluate()).status is OK
    sampler.values["loop_lag_s"] = 0.24
    assert (await check.evaluate()).status is OK
    sampler.values["loop_lag_s"] = 0.25
    result = await check.evaluate()
    assert result.status is DEGRADED and "loop_lag_s" in result.message


async def test_real_sampler_measures_a_blocked_loop() -> None:
    import asyncio
    import time

    from tradebot.checks.resources import PsutilSampler

    sampler = PsutilSampler(lag_probe_s=0.01)
    await sampler.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # block the loop on purpose
        await asyncio.sleep(0.05)
        sample = sampler.sample()
    finally:
        await sampler.stop()
    assert sample["loop_lag_s"] >= 0.15
    assert 0 <= sample["host_mem_pct"] <= 100 and sample["process_rss_mb"] > 1


# --- consecutive losses ------------------------------------------------------------------------


def closed(trade: str, pnl: str, *, pair: str = "BTC/USD", full: bool = True) -> PositionClosed:
    return PositionClosed(trade, pair, D(1), D(100), D(100), D(pnl), D(0), D(0) if full else D(1), full, T0)


async def test_consecutive_losses_trip_at_the_limit_and_a_win_resets() -> None:
    emitted = Emitted()
    check = ConsecutiveLossesCheck("consecutive-losses", ConsecutiveLossesConfig(limit=3), None, FakeClock())
    await check.start(emitted)
    check.on_position_closed(closed("a", "-1"))
    check.on_position_closed(closed("b", "-1"))
    assert (await check.evaluate()).status is DEGRADED
    check.on_position_closed(closed("c", "0"))  # break-even is not a loss
    check.on_position_closed(closed("d", "-1"))
    check.on_position_closed(closed("e", "-1"))
    assert (await check.evaluate()).status is DEGRADED
    check.on_position_closed(closed("f", "-0.01"))
    result = await check.evaluate()
    assert result.status is CRITICAL and result.escalate is TradingState.HALTED
    assert emitted[-1].status is CRITICAL
    check.on_position_closed(closed("g", "5"))  # latched until a person resumes
    assert (await check.evaluate()).status is CRITICAL
    check.reset()
    assert (await check.evaluate()).status is OK


async def test_consecutive_losses_count_round_trips_and_ignore_duplicates() -> None:
    check = ConsecutiveLossesCheck("consecutive-losses", ConsecutiveLossesConfig(limit=2), None, FakeClock())
    check.on_position_closed(closed("a", "-3", full=False))
    check.on_position_closed(closed("b", "4", full=True))  # round trip +1: a win
    assert check.count == 0
    check.on_position_closed(closed("c", "-1"))
    check.on_position_closed(closed("c", "-1"))  # the same record twice counts once
    assert check.count == 1 and (await check.evaluate()).status is DEGRADED


async def test_consecutive_losses_survive_a_restart(tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    try:
        with store.transaction() as tx:
            for i in range(3):
                tx.add_realized(closed(f"t{i}", "-2"))
        check = ConsecutiveLossesCheck(
            "consecutive-losses", ConsecutiveLossesConfig(limit=3), store, FakeClock()
        )
        emitted = Emitted()
        await check.start(emitted)
        assert check.count == 3 and emitted[-1].status is CRITICAL
    finally:
        store.close()


async def test_a_resume_with_no_bot_running_is_not_undone_at_the_next_start(tmp_path: Any) -> None:
    """``tradebot resume`` while no bot runs: the latched triggers must not trip again at start
    from the losses and the peak that the person's resume dismissed."""
    store = StateStore(tmp_path)
    try:
        with store.transaction() as tx:
            for i in range(3):
                tx.add_realized(closed(f"t{i}", "-2"))  # at T0
        store.set_kv(PEAK_KEY, "1200")
        trading = TradingStateMachine(store=store)
        await trading.escalate(TradingState.HALTED, "3 losing trades in a row", "check:consecutive-losses")
    finally:
        store.close()
    result = await asyncio.to_thread(send_command, tmp_path, "resume")  # what the CLI does
    assert result.ok and result.state == "active"

    store = StateStore(tmp_path)  # the next start
    try:
        assert store.last_manual_resume() is not None
        losses = ConsecutiveLossesCheck(
            "consecutive-losses", ConsecutiveLossesConfig(limit=3), store, FakeClock()
        )
        await losses.start(Emitted())
        assert losses.count == 0 and (await losses.evaluate()).status is OK
        pf = Equity("1000")
        drawdown = DrawdownCheck("drawdown", DrawdownConfig(max_drawdown_pct=10), pf, store, FakeClock())
        assert (await drawdown.evaluate()).status is OK  # measured from 1000 now, not from the old 1200
        assert store.get_kv(PEAK_KEY) == "1000"
        # what happens after the resume counts, and a restart still remembers that
        later = datetime.now(UTC) + timedelta(seconds=1)
        with store.transaction() as tx:
            for i in range(3):
                record = attrs.evolve(closed(f"n{i}", "-1"), time=later)
                tx.add_realized(record)
                losses.on_position_closed(record)
        assert (await losses.evaluate()).status is CRITICAL
        again = ConsecutiveLossesCheck(
            "consecutive-losses", ConsecutiveLossesConfig(limit=3), store, FakeClock()
        )
        await again.start(Emitted())
        assert again.count == 3 and again.tripped
        pf.value = D("850")
        assert (
            await DrawdownCheck(
                "drawdown", DrawdownConfig(max_drawdown_pct=10), pf, store, FakeClock()
            ).evaluate()
        ).status is CRITICAL  # the peak saved after the resume is kept
    finally:
        store.close()


async def test_only_a_persons_resume_is_remembered(tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    try:
        trading = TradingStateMachine(store=store, clock=FakeClock())
        await trading.escalate(TradingState.HALTED, "no prices", "check:staleness")
        await trading.auto_resume("check:staleness", "prices flow again")
        assert trading.state is TradingState.ACTIVE and store.last_manual_resume() is None
        await trading.escalate(TradingState.HALTED, "drawdown 12%", "check:drawdown")
        await trading.resume("operator resume", "operator:http")
        assert store.last_manual_resume() == trading.since
    finally:
        store.close()


# --- drawdown --------------------------------------------------------------------------------------


class Equity:
    def __init__(self, value: str) -> None:
        self.value = D(value)
        self.snapshots = 0

    def equity(self) -> D | None:
        return self.value

    def snapshot_equity(self) -> None:
        self.snapshots += 1


async def test_drawdown_fires_at_the_limit_from_the_peak(tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    try:
        pf = Equity("1000")
        check = DrawdownCheck("drawdown", DrawdownConfig(max_drawdown_pct=10), pf, store, FakeClock())
        assert (await check.evaluate()).status is OK
        pf.value = D("1200")
        await check.evaluate()
        pf.value = D("1080.01")  # 9.999 % below 1200
        result = await check.evaluate()
        assert result.status is DEGRADED and result.metrics["peak"] == 1200.0
        pf.value = D("1080")  # exactly 10 %
        result = await check.evaluate()
        assert result.status is CRITICAL and result.escalate is TradingState.HALTED
        # the peak is persisted: a new check (a restart) still sees the drawdown
        again = DrawdownCheck("drawdown", DrawdownConfig(max_drawdown_pct=10), pf, store, FakeClock())
        assert (await again.evaluate()).status is CRITICAL
        again.reset()  # a manual resume measures from the equity now
        assert (await again.evaluate()).status is OK
        assert store.get_kv("checks.drawdown.peak") == "1080"
        assert pf.snapshots >= 2
    finally:
        store.close()


async def test_a_resume_while_prices_are_missing_is_kept_when_they_return(tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    try:
        pf = Equity("1200")
        check = DrawdownCheck("drawdown", DrawdownConfig(max_drawdown_pct=10), pf, store, FakeClock())
        await check.evaluate()
        pf.value = D("1000")
        assert (await check.evaluate()).status is CRITICAL
        pf.value = None  # type: ignore[assignment]  # a held pair has no price right now
        check.reset()  # a person resumes in that gap
        pf.value = D("1000")
        assert (await check.evaluate()).status is OK  # measured from the equity seen after the resume
    finally:
        store.close()


async def test_drawdown_without_a_price_is_not_a_made_up_number() -> None:
    class NoMark:
        def equity(self) -> None:
            return None

    result = await DrawdownCheck("drawdown", DrawdownConfig(), NoMark(), None, FakeClock()).evaluate()
    assert result.status is DEGRADED and "not known" in result.message


async def test_drawdown_values_a_pair_without_a_price_at_its_last_known_one(tmp_path: Any) -> None:
    """BTC falls 50 % and then its price goes missing (a restart): the drawdown still shows,
    and once the last known price is older than the limit the check says so."""
    from tradebot.core.models import Fill, Side
    from tradebot.core.portfolio import Portfolio

    store = StateStore(tmp_path)
    try:
        clock = FakeClock()
        cfg = DrawdownConfig(max_drawdown_pct=10, price_max_age_s=60)
        pf = Portfolio(store, starting_cash=D(1000), clock=clock)
        pf.apply_fill(Fill("t1", "c1", "o1", "BTC/USD", Side.BUY, D(100), D(9), D(0), clock.now()))
        pf.set_mark("BTC/USD", D(100))
        check = DrawdownCheck("drawdown", cfg, pf, store, clock)
        assert (await check.evaluate()).status is OK  # equity 1000, the peak
        pf.set_mark("BTC/USD", D(50))
        assert (await check.evaluate()).status is CRITICAL  # equity 550
        # a restart: the portfolio has no price of BTC yet
        pf2 = Portfolio(store, clock=clock)
        assert pf2.mark_price("BTC/USD") is None and pf2.equity() is None
        again = DrawdownCheck("drawdown", cfg, pf2, store, clock)
        result = await again.evaluate()
        assert result.status is CRITICAL and result.metrics["equity"] == 550.0
        await clock.advance(61)
        result = await again.evaluate()
        assert "BTC/USD (price 50 is 61s old; valued at 50)" in result.message
        # back to the peak price, but too old to trust: degraded, not ok
        store.set_kv(
            "checks.drawdown.marks",
            json.dumps({"BTC/USD": ["112", (clock.now() - timedelta(seconds=90)).isoformat()]}),
        )
        third = DrawdownCheck("drawdown", cfg, Portfolio(store, clock=clock), store, clock)
        third.peak = D(1000)
        result = await third.evaluate()
        assert result.status is DEGRADED and "price 112 is 90s old" in result.message
    finally:
        store.close()


async def test_drawdown_without_any_price_values_at_cost_and_is_degraded(tmp_path: Any) -> None:
    from tradebot.core.models import Fill, Side
    from tradebot.core.portfolio import Portfolio

    store = StateStore(tmp_path)
    try:
        clock = FakeClock()
        pf = Portfolio(store, starting_cash=D(1000), clock=clock)
        pf.apply_fill(Fill("t1", "c1", "o1", "BTC/USD", Side.BUY, D(100), D(2), D(0), clock.now()))
        result = await DrawdownCheck("drawdown", DrawdownConfig(), pf, store, clock).evaluate()
        assert result.status is DEGRADED and "BTC/USD (no price seen; valued at 100)" in result.message
    finally:
        store.close()


# --- API error rate ----------------------------------------------------------------------------------


async def test_api_error_rate_fires_at_n_errors_within_the_window() -> None:
    clock = FakeClock()
    emitted = Emitted()
    check = ApiErrorRateCheck(
        "api-error-rate", ApiErrorRateConfig(max_errors=5, window_s=10, warn_errors=3), clock
    )
    await check.start(emitted)
    for _ in range(4):
        check.record_error(ExchangeUnavailable("EService:Unavailable"))
        await clock.advance(1)
    assert [r.status for r in emitted] == [DEGRADED]
    check.record_error(OrderNotFound("gone"))  # every error class counts unless listed in ignore
    assert emitted[-1].status is CRITICAL and emitted[-1].escalate is TradingState.HALTED
    assert "ExchangeUnavailable x4" in emitted[-1].message


async def test_api_error_rate_old_errors_age_out_and_ignored_ones_do_not_count() -> None:
    clock = FakeClock()
    check = ApiErrorRateCheck(
        "api-error-rate", ApiErrorRateConfig(max_errors=3, window_s=10, ignore=["OrderNotFound"]), clock
    )
    check.record_error(ExchangeUnavailable("x"))
    await clock.advance(5)
    check.record_error(ExchangeUnavailable("x"))
    for _ in range(5):
        check.record_error(OrderNotFound("x"))
    await clock.advance(5)  # the first error is exactly window_s old: out
    check.record_error(ExchangeUnavailable("x"))
    assert (await check.evaluate()).status is DEGRADED
    check.record_error(ExchangeUnavailable("x"))
    assert (await check.evaluate()).status is CRITICAL
    await clock.advance(10)
    assert (await check.evaluate()).status is OK


# --- volatility --------------------------------------------------------------------------------------


async def test_volatility_fires_at_the_range_limit_within_the_window() -> None:
    clock = FakeClock()
    emitted = Emitted()
    check = VolatilityCheck(
        "volatility", VolatilityConfig(window_s=60, max_change_pct=5, on_critical="reduce"), clock
    )
    await check.start(emitted)
    check.on_market_event(tick("BTC/USD", "100"))
    await clock.advance(10)
    check.on_market_event(tick("BTC/USD", "104.99"))
    assert all(r.status is not CRITICAL for r in emitted)
    check.on_market_event(tick("BTC/USD", "105"))
    assert emitted[-1].status is CRITICAL and emitted[-1].escalate is TradingState.REDUCING
    assert "BTC/USD" in emitted[-1].message
    # once the low leaves the window the range is narrow again
    await clock.advance(55)
    check.on_market_event(tick("BTC/USD", "105"))
    assert emitted[-1].status is OK


async def test_volatility_catches_a_drop_and_a_spike_back() -> None:
    clock = FakeClock()
    check = VolatilityCheck("volatility", VolatilityConfig(window_s=60, max_change_pct=5), clock)
    for price in ("100", "94", "100"):
        check.on_market_event(tick("ETH/USD", price))
        await clock.advance(1)
    result = await check.evaluate()
    assert result.status is CRITICAL and result.metrics["range_pct.ETH/USD"] == pytest.approx(6.383, rel=1e-3)


# --- config ---------------------------------------------------------------------------------------------


def test_config_errors_name_the_rule_and_the_path() -> None:
    obj, issues = structure({"threshold_s": -5}, StalenessConfig, "$.checks.staleness")
    assert obj is None and issues == ["threshold_s must be > 0 (got -5) @ $.checks.staleness.threshold_s"]
    obj, issues = structure({"on_critical": "panic"}, DrawdownConfig, "$.checks.drawdown")
    assert obj is None and "on_critical" in issues[0] and "$.checks.drawdown.on_critical" in issues[0]
    obj, issues = structure({"limit": 3, "limmit": 4}, ConsecutiveLossesConfig, "$.checks.consecutive-losses")
    assert obj is None and "limmit" in issues[0]
    obj, issues = structure(
        {"degraded_after": 5, "critical_after": 2}, ApiConnectivityConfig, "$.checks.api-connectivity"
    )
    assert obj is None and "critical_after must be >= degraded_after" in issues[0]
    obj, issues = structure(
        {"auto_resume_after_s": 30, "interval_s": 2}, VolatilityConfig, "$.checks.volatility"
    )
    assert issues == [] and attrs.asdict(obj)["auto_resume_after_s"] == 30


async def test_api_error_rate_names_and_ignores_a_failed_request_by_its_error() -> None:
    from tradebot.core.exchange_calls import FailedCall

    clock = FakeClock()
    check = ApiErrorRateCheck(
        "api-error-rate", ApiErrorRateConfig(max_errors=2, window_s=10, ignore=["RateLimited"]), clock
    )
    check.record_error(FailedCall("private/AddOrder", "RateLimited"))
    assert (await check.evaluate()).status is OK
    check.record_error(FailedCall("private/AddOrder", "ExchangeUnavailable", "HTTP 502"))
    check.record_error(FailedCall("private/AddOrder", "ExchangeUnavailable", "HTTP 502"))
    result = await check.evaluate()
    assert result.status is CRITICAL and "ExchangeUnavailable x2" in result.message
