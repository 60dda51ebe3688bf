"""Strategy runner: timeouts, off-loop blocking strategies, quarantine, cancellation safety."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tradebot.app.config import StrategyInstance
from tradebot.core.bus import EventBus
from tradebot.core.models import Candle, Side, Signal, Ticker
from tradebot.core.strategy import CallMode, PriceSampler, StrategyContext, StrategyRunner

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAIR = "BTC/USD"


def ticker(price: int, pair: str = PAIR) -> Ticker:
    p = Decimal(price)
    return Ticker(pair=pair, bid=p, ask=p, last=p, volume=Decimal(1), time=T0)


def buy(name: str, pair: str = PAIR) -> Signal:
    return Signal(strategy=name, pair=pair, side=Side.BUY, volume=Decimal("0.01"))


class Sink:
    """Collects what the runner hands to the risk gate."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    async def __call__(self, signals: list[Signal]) -> None:
        self.signals.extend(signals)


class Recorder:
    """A quick strategy that remembers every event and buys on each."""

    blocking = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Ticker] = []

    def on_event(self, event: Ticker) -> Sequence[Signal]:
        self.events.append(event)
        return [buy(self.name, event.pair)]


class AsyncSleeper:
    """Async strategy that sleeps ``delays[i]`` on its i-th call, then buys."""

    def __init__(self, name: str, delays: list[float]) -> None:
        self.name = name
        self.delays = delays
        self.calls = 0

    async def on_event(self, event: Ticker) -> Sequence[Signal]:
        delay = self.delays[min(self.calls, len(self.delays) - 1)]
        self.calls += 1
        await asyncio.sleep(delay)
        return [buy(self.name)]


class BlockingSleeper:
    """Plain ``def`` strategy that blocks its thread with time.sleep, then buys."""

    def __init__(self, name: str, delay: float) -> None:
        self.name = name
        self.delay = delay
        self.calls = 0
        self.running = 0
        self.max_running = 0
        self.returned = 0
        self._lock = threading.Lock()

    def on_event(self, event: Ticker) -> Sequence[Signal]:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(self.delay)
        with self._lock:
            self.running -= 1
            self.returned += 1
        return [buy(self.name)]


async def settle(predicate: Any, timeout: float = 2.0) -> None:
    """Yield to the loop until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def running(runner: StrategyRunner) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class LoopLag:
    """Measures how late a 5 ms timer fires: a blocked loop shows up as lag."""

    def __init__(self) -> None:
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.max_lag = max(self.max_lag, time.perf_counter() - t - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def test_call_modes() -> None:
    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    assert runner.add("a", AsyncSleeper("a", [0])).mode is CallMode.ASYNC
    assert runner.add("b", BlockingSleeper("b", 0)).mode is CallMode.THREAD
    assert runner.add("c", Recorder("c")).mode is CallMode.INLINE
    assert runner.add("d", Recorder("d"), blocking=True).mode is CallMode.THREAD
    with pytest.raises(ValueError, match="already added"):
        runner.add("a", Recorder("a"))
    with pytest.raises(TypeError, match="on_event"):
        runner.add("e", object())


def test_limits_come_from_the_instance_config() -> None:
    runner = StrategyRunner(bus=EventBus(), sink=Sink())
    inst = StrategyInstance(
        plugin="sma-crossover", pairs=["ETH/USD"], timeout_s=0.2, warn_s=0.1, max_failures=7
    )
    handle = runner.add("sma", Recorder("sma"), instance=inst)
    assert (handle.plugin, handle.pairs, handle.timeout_s, handle.warn_s, handle.max_failures) == (
        "sma-crossover",
        ("ETH/USD",),
        0.2,
        0.1,
        7,
    )
    assert runner.add("x", Recorder("x"), instance=inst, timeout_s=1.5).timeout_s == 1.5


async def test_async_strategy_past_its_timeout_is_cancelled_and_its_signals_dropped() -> None:
    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    slow = AsyncSleeper("slow", [1.0, 0.0])
    runner.add("slow", slow, timeout_s=0.05)
    async with running(runner):
        started = time.perf_counter()
        bus.publish_nowait(ticker(1))
        await settle(lambda: runner["slow"].stats.timeouts == 1)
        assert time.perf_counter() - started < 0.5
        assert sink.signals == []
        bus.publish_nowait(ticker(2))
        await settle(lambda: len(sink.signals) == 1)
    stats = runner["slow"].stats
    assert (stats.calls, stats.timeouts, stats.succeeded, stats.consecutive_failures) == (2, 1, 1, 0)
    assert stats.max_s >= 0.049  # uvloop's timers keep milliseconds: the timeout may fire a little early


async def test_blocking_strategy_runs_off_the_loop_and_a_late_result_is_discarded() -> None:
    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    blocker = BlockingSleeper("blocker", 0.3)
    runner.add("blocker", blocker, timeout_s=0.1, max_failures=10)
    async with running(runner):
        with LoopLag() as lag:
            bus.publish_nowait(ticker(1))
            await settle(lambda: runner["blocker"].stats.timeouts == 1)
            # more events while the thread is still busy: no second thread is started
            for i in range(20):
                bus.publish_nowait(ticker(2 + i))
                await asyncio.sleep(0.005)
            await settle(lambda: blocker.returned >= 1)
            await asyncio.sleep(0.02)
        assert lag.max_lag < 0.05, f"event loop stalled for {lag.max_lag:.3f}s"
        assert blocker.max_running == 1
        assert sink.signals == []  # the late result of the timed-out call never reached the sink
    assert runner["blocker"].stats.waits >= 1


async def test_strategy_is_not_called_again_until_its_abandoned_call_returns() -> None:
    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    blocker = BlockingSleeper("blocker", 0.6)  # far longer than the 40 x 5 ms of publishing
    runner.add("blocker", blocker, timeout_s=0.05, max_failures=100)
    async with running(runner):
        for i in range(40):
            bus.publish_nowait(ticker(i))
            await asyncio.sleep(0.005)
        assert blocker.calls == 1
        await settle(lambda: blocker.calls == 2, timeout=2.0)
        # the call after the wait gets the newest price, not the one queued first
    assert blocker.max_running == 1


async def test_stuck_blocking_strategy_is_quarantined_after_repeated_timeouts() -> None:
    bus = EventBus()
    reported: list[tuple[str, str]] = []
    runner = StrategyRunner(bus=bus, sink=Sink(), on_quarantine=lambda n, r: reported.append((n, r)))
    blocker = BlockingSleeper("stuck", 2.0)
    runner.add("stuck", blocker, timeout_s=0.05, max_failures=3)
    async with running(runner):
        for i in range(30):
            bus.publish_nowait(ticker(i))
            await asyncio.sleep(0.01)
            if reported:
                break
        await settle(lambda: bool(reported), timeout=1.0)
    assert blocker.calls == 1
    assert reported[0][0] == "stuck"
    assert "3 consecutive failures" in reported[0][1]
    assert runner.quarantined.keys() == {"stuck"}


class Raiser:
    """Raises on every call."""

    blocking = False

    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: Ticker) -> Sequence[Signal]:
        self.calls += 1
        raise ValueError("bad maths")


async def test_failing_strategy_is_quarantined_while_another_keeps_trading() -> None:
    bus = EventBus()
    sink = Sink()
    reported: list[tuple[str, str]] = []

    async def on_quarantine(name: str, reason: str) -> None:
        reported.append((name, reason))

    runner = StrategyRunner(bus=bus, sink=sink, on_quarantine=on_quarantine)
    bad = Raiser()
    good = Recorder("good")
    runner.add("bad", bad, max_failures=3)
    runner.add("good", good)
    async with running(runner):
        for i in range(10):
            await bus.publish(ticker(i))
            await asyncio.sleep(0)
        await settle(lambda: len(good.events) == 10)
    assert bad.calls == 3
    assert reported == [("bad", "3 consecutive failures, last: on_event raised ValueError: bad maths")]
    assert runner["bad"].stats.errors == 3
    assert [s.strategy for s in sink.signals] == ["good"] * 10
    assert [e.last for e in good.events] == [Decimal(i) for i in range(10)]
    assert runner.quarantined.keys() == {"bad"}


async def test_repeated_async_timeouts_quarantine_and_a_success_resets_the_count() -> None:
    bus = EventBus()
    reported: list[str] = []
    runner = StrategyRunner(bus=bus, sink=Sink(), on_quarantine=lambda n, r: reported.append(n))
    flaky = AsyncSleeper("flaky", [1, 1, 0, 1, 1, 1])
    runner.add("flaky", flaky, timeout_s=0.03, max_failures=3)
    async with running(runner):
        for i in range(6):
            bus.publish_nowait(ticker(i))
            await settle(lambda: runner["flaky"].stats.calls == i + 1)
    stats = runner["flaky"].stats
    assert (stats.timeouts, stats.succeeded) == (5, 1)
    assert reported == ["flaky"]
    assert flaky.calls == 6


async def test_cancelling_the_runner_mid_call_never_submits_that_calls_signals() -> None:
    bus = EventBus()
    sink = Sink()
    entered = asyncio.Event()
    stopped: list[bool] = []

    class HalfWay:
        async def on_event(self, event: Ticker) -> Sequence[Signal]:
            entered.set()
            await asyncio.sleep(0.2)
            return [buy("half")]

        async def stop(self) -> None:
            stopped.append(True)

    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("half", HalfWay(), timeout_s=1)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    bus.publish_nowait(ticker(1))
    await asyncio.wait_for(entered.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    assert sink.signals == []
    assert stopped == [True]


async def test_cancelling_mid_call_of_a_thread_strategy_discards_its_result() -> None:
    bus = EventBus()
    sink = Sink()
    blocker = BlockingSleeper("t", 0.15)
    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("t", blocker, timeout_s=1)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    bus.publish_nowait(ticker(1))
    await settle(lambda: blocker.calls == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await settle(lambda: blocker.returned == 1)
    await asyncio.sleep(0.02)
    assert sink.signals == []


async def test_inline_strategy_that_overran_counts_as_timed_out() -> None:
    class Hog:
        blocking = False

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            time.sleep(0.08)
            return [buy("hog")]

    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("hog", Hog(), timeout_s=0.05)
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: runner["hog"].stats.calls == 1)
    assert runner["hog"].stats.timeouts == 1
    assert "blocked the event loop" in (runner["hog"].stats.last_error or "")
    assert sink.signals == []


async def test_slow_calls_are_logged_and_measured(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("lazy", AsyncSleeper("lazy", [0.06, 0.0]), timeout_s=0.3, warn_s=0.04)
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: runner["lazy"].stats.calls == 1)
        bus.publish_nowait(ticker(2))
        await settle(lambda: runner["lazy"].stats.calls == 2)
    stats = runner["lazy"].stats
    assert stats.slow == 1
    assert len(sink.signals) == 2
    assert 0.059 <= stats.max_s < 0.3  # uvloop's timers keep milliseconds: a sleep may end a little early
    assert stats.mean_s == pytest.approx(stats.total_s / 2)
    hist = stats.histogram()
    assert hist["<=0.1"] == 1
    assert sum(hist.values()) == 2
    assert any("was slow" in r.getMessage() and "'lazy'" in r.getMessage() for r in caplog.records)


async def test_conflation_under_a_slow_strategy_keeps_memory_bounded() -> None:
    bus = EventBus()
    seen: list[Decimal] = []

    class Slow:
        async def on_event(self, event: Ticker) -> Sequence[Signal]:
            seen.append(event.last)
            await asyncio.sleep(0.002)
            return []

    runner = StrategyRunner(bus=bus, sink=Sink())
    handle = runner.add("slow", Slow(), timeout_s=1)
    async with running(runner):
        for i in range(100_000):
            bus.publish_nowait(ticker(i))
            if i % 2000 == 0:
                await asyncio.sleep(0)
        await settle(lambda: seen[-1] == Decimal(99_999))
    assert handle.subscription.stats.max_depth == 1
    assert len(seen) < 500


async def test_bad_results_count_as_failures() -> None:
    class Wrong:
        blocking = False

        def __init__(self) -> None:
            self.outputs: list[Any] = [
                "buy",
                [buy("w", pair="DOGE/USD")],
                [Signal(strategy="other", pair=PAIR, side=Side.SELL, volume=Decimal(1))],
            ]

        def on_event(self, event: Ticker) -> Any:
            return self.outputs.pop(0)

    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("w", Wrong(), pairs=[PAIR], max_failures=5)
    async with running(runner):
        for i in range(3):
            bus.publish_nowait(ticker(i))
            await settle(lambda: runner["w"].stats.calls == i + 1)
    assert runner["w"].stats.errors == 2
    # a signal naming another strategy is re-stamped with the instance that produced it
    assert [(s.strategy, s.side) for s in sink.signals] == [("w", Side.SELL)]


async def test_failing_start_quarantines_and_stop_runs_for_started_ones() -> None:
    calls: list[str] = []

    class NoStart(Recorder):
        def start(self) -> None:
            raise RuntimeError("no config file")

    class Tidy(Recorder):
        async def start(self) -> None:
            calls.append("start")

        def stop(self) -> None:
            calls.append("stop")

    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    broken = NoStart("broken")
    runner.add("broken", broken)
    runner.add("tidy", Tidy("tidy"))
    async with running(runner):
        await settle(lambda: "broken" in runner.quarantined)
        bus.publish_nowait(ticker(1))
        await asyncio.sleep(0.01)
    assert broken.events == []
    assert "start raised RuntimeError: no config file" in runner.quarantined["broken"]
    assert calls == ["start", "stop"]


async def test_runner_ends_when_the_bus_closes() -> None:
    bus = EventBus()
    rec = Recorder("r")
    runner = StrategyRunner(bus=bus, sink=Sink())
    runner.add("r", rec)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    await bus.publish(ticker(1))
    bus.close()
    await asyncio.wait_for(task, 1)
    assert len(rec.events) == 1


async def test_sink_failure_does_not_count_against_the_strategy() -> None:
    async def broken_sink(signals: list[Signal]) -> None:
        raise RuntimeError("executor down")

    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=broken_sink)
    runner.add("r", Recorder("r"), max_failures=1)
    async with running(runner):
        for i in range(3):
            bus.publish_nowait(ticker(i))
            await settle(lambda: runner["r"].stats.calls == i + 1)
    assert runner["r"].stats.sink_errors == 3
    assert runner.quarantined == {}


def test_strategy_context_defaults() -> None:
    ctx = StrategyContext(name="sma", pairs=["BTC/USD"])
    assert ctx.pairs == ("BTC/USD",)
    assert ctx.logger.name == "tradebot.strategy.sma"
    assert ctx.clock.monotonic() > 0


def test_price_sampler_ticker_mids_and_finished_candles() -> None:
    ticks = PriceSampler("ticker")
    t = Ticker(pair=PAIR, bid=Decimal(99), ask=Decimal(102), last=Decimal(100), volume=Decimal(1), time=T0)
    assert ticks.sample(t) == Decimal("100.5")

    def bar(minute: int, close: int) -> Candle:
        c = Decimal(close)
        return Candle(PAIR, 1, T0.replace(minute=minute), c, c, c, c, c, Decimal(1), 1)

    bars = PriceSampler("candle")
    assert bars.sample(t) is None
    assert bars.sample(bar(0, 10)) is None
    assert bars.sample(bar(0, 11)) is None  # same bar, updated
    assert bars.sample(bar(1, 12)) == Decimal(11)  # bar 0 finished at 11
    assert bars.sample(bar(0, 13)) is None  # a late update of a counted bar
    assert bars.sample(bar(2, 14)) == Decimal(12)
    assert ticks.sample(bar(3, 1)) is None
    with pytest.raises(ValueError, match="source must be one of"):
        PriceSampler("trades")
