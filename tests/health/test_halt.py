"""HALT end to end: detection latency, persistence across restarts, position policies, risk gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.checks.staleness import StalenessCheck, StalenessConfig
from tradebot.core.clock import FakeClock, SystemClock
from tradebot.core.executor import OrderExecutor
from tradebot.core.health import (
    BaseCheck,
    CheckResult,
    HealthMonitor,
    MonitoringSettings,
    TriggerOptions,
)
from tradebot.core.models import OrderRequest, OrderType, Side, Signal, Ticker, TradingState
from tradebot.core.policy import HaltSettings, PolicyRunner
from tradebot.core.portfolio import Portfolio
from tradebot.core.risk import RejectReason, RiskGate, RiskLimits, RiskRejection
from tradebot.core.store import StateStore
from tradebot.core.trading_state import TradingStateMachine
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.plugins.policies.close import CloseConfig, ClosePolicy
from tradebot.plugins.policies.maintain import MaintainConfig, MaintainPolicy
from tradebot.plugins.policies.reduce import ReduceConfig, ReducePolicy
from tradebot.simulator import Simulator, run_simulator


async def test_staleness_detected_within_threshold_plus_50ms_on_a_real_loop() -> None:
    threshold = 0.2
    for _ in range(3):
        trading = TradingStateMachine()
        halted_at: list[float] = []
        trading.listeners.append(lambda change: halted_at.append(time.monotonic()))
        check = StalenessCheck(
            "staleness", StalenessConfig(threshold_s=threshold, startup_grace_s=5), ["BTC/USD"], SystemClock()
        )
        monitor = HealthMonitor([check], trading=trading, settings=MonitoringSettings(round_interval_s=10))
        task = asyncio.ensure_future(monitor.run())
        try:
            for _ in range(5):  # a live feed ...
                monitor.on_market_event(Ticker("BTC/USD", D(1), D(1), D(1), D(1), SystemClock().now()))
                last = time.monotonic()
                await asyncio.sleep(0.05)
            await asyncio.sleep(threshold + 0.15)  # ... that stops
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert trading.state is TradingState.HALTED
        latency = halted_at[0] - last
        assert threshold <= latency <= threshold + 0.05, latency


class Tripwire(BaseCheck):
    def __init__(self, clock: Any) -> None:
        super().__init__("tripwire", TriggerOptions(), clock)

    async def evaluate(self) -> CheckResult:
        return self.critical("tripped")


async def test_halt_survives_a_restart_with_a_real_store(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    trading = TradingStateMachine(store=store)
    trading.restore()
    await HealthMonitor([Tripwire(SystemClock())], trading=trading, store=store).run_round()
    assert trading.state is TradingState.HALTED
    store.close()

    store = StateStore(tmp_path)  # the next process
    try:
        again = TradingStateMachine(store=store)
        assert again.restore() is True
        assert again.state is TradingState.HALTED
        assert again.source == "check:tripwire" and again.reason == "tripwire: tripped"
        assert [r.check for r in store.recent_health(5)] == ["tripwire"]
    finally:
        store.close()


# --- position policies against the simulator, through Kraken and the executor ------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(tick_interval_s=0.02, heartbeat_s=0.2) as simulator:
        yield simulator


class Rig:
    def __init__(self, sim: Simulator, tmp_path: Path) -> None:
        self.sim = sim
        self.exchange = KrakenExchange(
            KrakenConfig(
                base_url=sim.base_url,
                ws_url=sim.ws_url,
                min_spacing_s=0.0,
                request_timeout_s=2.0,
                connect_timeout_s=1.0,
                order_lookup_delay_s=0.0,
            ),
            api_key=sim.api_key,
            api_secret=sim.api_secret,
            state_dir=tmp_path / "kraken",
        )
        self.store = StateStore(tmp_path)
        self.trading = TradingStateMachine(store=self.store)
        self.portfolio = Portfolio(self.store, starting_cash=D(100000))
        self.executor = OrderExecutor(
            self.exchange,
            self.store,
            self.portfolio,
            poll_interval_s=0.05,
            not_found_grace_s=0.2,
            lookup_backoff_s=0.05,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Rig:
        await self.exchange.start()
        self._task = asyncio.ensure_future(self.executor.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.exchange.close()
        self.store.close()

    async def buy(self, pair: str, volume: str) -> str:
        cid = f"open-{pair.replace('/', '')}-{volume}"
        await self.executor.submit(OrderRequest(pair, Side.BUY, OrderType.MARKET, D(volume), cid))
        for _ in range(100):
            if self.portfolio.position(pair).volume == D(volume):
                return cid
            await asyncio.sleep(0.02)
        raise AssertionError(f"{pair} was not filled: {self.store.get_order(cid)}")


async def test_close_flattens_every_position_exactly_once_when_the_answer_is_lost(
    sim: Simulator, tmp_path: Path
) -> None:
    async with Rig(sim, tmp_path) as rig:
        await rig.buy("BTC/USD", "0.02")
        await rig.buy("ETH/USD", "0.5")
        sim.faults.add("drop_response,on=AddOrder,n=1")  # the first flatten order is placed, its answer lost
        policy = ClosePolicy(
            CloseConfig(max_attempts=3, settle_s=3, poll_s=0.05), rig.executor, rig.portfolio, SystemClock()
        )
        runner = PolicyRunner(policy, trading=rig.trading)
        await rig.trading.halt("drawdown: limit reached", "check:drawdown")
        assert runner._task is not None
        outcome = await asyncio.wait_for(runner._task, 10)
        assert outcome is not None and outcome.done, outcome
        assert rig.portfolio.positions() == {}
        state = sim.state()
        assert len(state["orders_created"]) == 4  # two opens, one flatten per pair
        assert all(n == 1 for n in state["orders_created"].values())
        assert all(n == 1 for n in state["add_order_calls"].values())  # never resent
        assert rig.exchange.orders_resolved_by_lookup == 1
        assert outcome.orders_placed == 2 and "every position closed" in outcome.message
        # applying it again (a restart finds HALTED) places nothing new
        again = await policy.apply(rig.trading.history[-1])
        assert again.done and len(sim.state()["orders_created"]) == 4


async def test_close_reports_what_is_left_when_it_cannot_finish(sim: Simulator, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        await rig.buy("BTC/USD", "0.01")
        sim.faults.add("status=cancel_only")
        policy = ClosePolicy(
            CloseConfig(max_attempts=2, settle_s=0.2, poll_s=0.05), rig.executor, rig.portfolio, SystemClock()
        )
        outcome = await policy.apply(
            await rig.trading.halt("exchange in cancel_only", "check:api-connectivity")
        )
        assert not outcome.done
        assert outcome.remaining == {"BTC/USD": D("0.01")}
        assert "NOT flat" in outcome.message and "BTC/USD 0.01" in outcome.message


async def test_maintain_keeps_positions_and_says_so(sim: Simulator, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        await rig.buy("BTC/USD", "0.01")
        runner = PolicyRunner(
            MaintainPolicy(MaintainConfig(), rig.executor, rig.portfolio), trading=rig.trading
        )
        await rig.trading.halt("test", "operator:cli")
        outcome = await asyncio.wait_for(runner._task, 5)  # type: ignore[arg-type]
        assert outcome is not None and outcome.done
        assert "positions kept as they are: BTC/USD 0.01" in outcome.message
        assert rig.portfolio.position("BTC/USD").volume == D("0.01")
        assert len(sim.state()["orders_created"]) == 1


# --- REDUCING and the reduce policy through the risk gate ------------------------------------------------


def _signal(side: Side, volume: str) -> Signal:
    return Signal("test", "BTC/USD", side, D(volume))


async def test_reducing_rejects_exposure_increasing_orders_and_accepts_reducing_ones(tmp_path: Path) -> None:
    from tradebot.core.models import Fill

    store = StateStore(tmp_path)
    try:
        clock = FakeClock()
        trading = TradingStateMachine(store=store, clock=clock)
        portfolio = Portfolio(store, starting_cash=D(10000), clock=clock)
        portfolio.apply_fill(Fill("t1", "c1", "o1", "BTC/USD", Side.BUY, D(100), D("0.5"), D(0), clock.now()))
        portfolio.set_mark("BTC/USD", D(100))
        gate = RiskGate(RiskLimits(), trading, portfolio, clock=clock)

        class Reducer(BaseCheck):
            async def evaluate(self) -> CheckResult:
                return self.critical("exchange in maintenance")

        await HealthMonitor(
            [Reducer("api-connectivity", TriggerOptions(on_critical="reduce"), clock)], trading=trading
        ).run_round()
        assert trading.state is TradingState.REDUCING
        with pytest.raises(RiskRejection) as rejected:
            gate.approve(_signal(Side.BUY, "0.1"))
        assert rejected.value.code is RejectReason.NOT_REDUCING
        order = gate.approve(_signal(Side.SELL, "2"))
        assert order.side is Side.SELL and order.volume == D("0.5")  # clipped: never flips the position

        # HALTED: maintain denies everything; reduce lets reducing orders through
        await trading.halt("drawdown", "check:drawdown")
        maintain_runner = PolicyRunner(MaintainPolicy(MaintainConfig(), None, portfolio), trading=trading)
        with pytest.raises(RiskRejection) as halted:
            RiskGate(RiskLimits(), maintain_runner.risk_view(), portfolio, clock=clock).approve(
                _signal(Side.SELL, "0.1")
            )
        assert halted.value.code is RejectReason.HALTED
        reduce_runner = PolicyRunner(
            ReducePolicy(ReduceConfig(), None, portfolio),
            trading=trading,
            settings=HaltSettings(position_policy="reduce"),
        )
        reduce_gate = RiskGate(RiskLimits(), reduce_runner.risk_view(), portfolio, clock=clock)
        assert reduce_gate.approve(_signal(Side.SELL, "0.1")).volume == D("0.1")
        with pytest.raises(RiskRejection) as adding:
            reduce_gate.approve(_signal(Side.BUY, "0.1"))
        assert adding.value.code is RejectReason.NOT_REDUCING
        assert trading.state is TradingState.HALTED  # the view never changes the real state
    finally:
        store.close()


async def test_balance_check_halt_lets_no_reducing_sell_through_until_a_person_resumes(
    tmp_path: Path,
) -> None:
    """Under ``reduce`` a HALT normally lets exposure-reducing sells through; a HALT because the
    exchange's balances do not match the journal does not (the coins may not be the bot's), and
    the policy itself is not run. A person's resume ends that; the next HALT reduces again."""
    from tradebot.core.models import Fill
    from tradebot.core.policy import BALANCE_CHECK_SOURCE

    store = StateStore(tmp_path)
    try:
        clock = FakeClock()
        trading = TradingStateMachine(store=store, clock=clock)
        portfolio = Portfolio(store, starting_cash=D(10000), clock=clock)
        portfolio.apply_fill(Fill("t1", "c1", "o1", "BTC/USD", Side.BUY, D(100), D("0.5"), D(0), clock.now()))
        portfolio.set_mark("BTC/USD", D(100))

        class CountingReduce(ReducePolicy):
            applied = 0

            async def apply(self, change: Any) -> Any:
                CountingReduce.applied += 1
                return await super().apply(change)

        runner = PolicyRunner(
            CountingReduce(ReduceConfig(), None, portfolio),
            trading=trading,
            settings=HaltSettings(position_policy="reduce"),
            positions=lambda: {p: pos.volume for p, pos in portfolio.positions().items()},
        )
        gate = RiskGate(RiskLimits(), runner.risk_view(), portfolio, clock=clock)
        await trading.halt("USD: the bot's cash is 10000 but the exchange holds 100", BALANCE_CHECK_SOURCE)
        assert runner._task is not None
        outcome = await runner._task
        assert outcome is not None and outcome.policy == "maintain" and CountingReduce.applied == 0
        assert (
            outcome.remaining == {"BTC/USD": D("0.5")}
            and "instead of the configured 'reduce'" in outcome.message
        )
        with pytest.raises(RiskRejection) as refused:
            gate.approve(_signal(Side.SELL, "0.1"))
        assert refused.value.code is RejectReason.HALTED
        await trading.halt_anew("drawdown 30%", "check:drawdown")  # a second cause: still untrusted
        assert runner._task is not None
        assert (await runner._task) is not None and CountingReduce.applied == 0
        with pytest.raises(RiskRejection):
            gate.approve(_signal(Side.SELL, "0.1"))

        await trading.resume("account checked", "operator:cli")
        await trading.halt("drawdown 30%", "check:drawdown")
        assert runner._task is not None
        outcome = await runner._task
        assert outcome is not None and outcome.policy == "reduce" and CountingReduce.applied == 1
        assert gate.approve(_signal(Side.SELL, "0.1")).volume == D("0.1")
    finally:
        store.close()


async def test_reduce_policy_cancels_only_exposure_adding_orders(sim: Simulator, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        await rig.buy("BTC/USD", "0.02")
        far_buy = OrderRequest("BTC/USD", Side.BUY, OrderType.LIMIT, D("0.01"), "adds", price=D(1000))
        far_sell = OrderRequest(
            "BTC/USD", Side.SELL, OrderType.LIMIT, D("0.01"), "reduces", price=D(10_000_000)
        )
        await rig.executor.submit(far_buy)
        await rig.executor.submit(far_sell)
        outcome = await ReducePolicy(ReduceConfig(), rig.executor, rig.portfolio).apply(
            await rig.trading.halt("t", "operator:cli")
        )
        assert outcome.orders_cancelled == 1
        working = {e.client_order_id for e in rig.executor.working_orders()}
        assert working == {"reduces"}
