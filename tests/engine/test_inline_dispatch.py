"""Inline strategies share one dispatcher; what may wait runs on each instance's own task."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tests.engine.test_strategy_runner import PAIR, Recorder, Sink, buy, running, settle, ticker
from tradebot.core.bus import EventBus
from tradebot.core.models import Signal, Ticker
from tradebot.core.plugins import PluginHost
from tradebot.core.strategy import StrategyRunner


class GatedSink:
    """A sink that holds the signals of one strategy until released (an order stuck in flight)."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.gate = asyncio.Event()
        self.signals: list[Signal] = []

    async def __call__(self, signals: list[Signal]) -> None:
        if signals[0].strategy == self.held:
            await self.gate.wait()
        self.signals.extend(signals)


class Quiet:
    """Inline, returns no signals, remembers the prices it saw."""

    blocking = False

    def __init__(self) -> None:
        self.seen: list[Decimal] = []

    def on_event(self, event: Ticker) -> Sequence[Signal]:
        self.seen.append(event.last)
        return ()


async def test_inline_instances_share_one_subscription() -> None:
    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    a, b = runner.add("a", Recorder("a")), runner.add("b", Recorder("b"))
    assert a.subscription is b.subscription
    assert len(bus.subscriptions) == 1
    async with running(runner):
        for i in range(5):
            bus.publish_nowait(ticker(i))
            await settle(lambda: a.stats.calls == i + 1 and b.stats.calls == i + 1)


async def test_an_order_in_flight_for_one_instance_never_delays_another() -> None:
    bus = EventBus()
    sink = GatedSink(held="slow")
    runner = StrategyRunner(bus=bus, sink=sink)
    slow, fast = Recorder("slow"), Recorder("fast")
    runner.add("slow", slow)
    runner.add("fast", fast)
    async with running(runner):
        for i in range(1, 6):
            bus.publish_nowait(ticker(i))
            await asyncio.sleep(0.005)
        # the fast instance traded every tick while the slow one's first order hangs
        await settle(lambda: len([s for s in sink.signals if s.strategy == "fast"]) == 5)
        assert [s.strategy for s in sink.signals] == ["fast"] * 5
        # the held instance is called at most twice before its first batch is handed over
        assert len(slow.events) <= 2
        sink.gate.set()
        await settle(lambda: len([s for s in sink.signals if s.strategy == "slow"]) >= 2)
        bus.publish_nowait(ticker(6))
        await settle(lambda: slow.events[-1].last == Decimal(6))
    # while it waited it missed nothing but superseded prices, and saw them in order
    prices = [e.last for e in slow.events]
    assert prices == sorted(prices)
    assert prices[0] == Decimal(1) and prices[-1] == Decimal(6)
    assert len(fast.events) == 6


async def test_detached_instance_gets_the_latest_price_then_rejoins_the_dispatcher() -> None:
    bus = EventBus()
    sink = GatedSink(held="held")
    runner = StrategyRunner(bus=bus, sink=sink)
    held = Recorder("held")
    handle = runner.add("held", held)
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: len(held.events) == 1)
        bus.publish_nowait(ticker(2))  # second batch: now detached
        await settle(lambda: handle.detached)
        for i in range(3, 200):
            bus.publish_nowait(ticker(i))
        await asyncio.sleep(0.01)
        assert handle.backlog is not None and len(handle.backlog) <= 3  # conflated: bounded
        sink.gate.set()
        await settle(lambda: held.events[-1].last == Decimal(199))
        await settle(lambda: not handle.detached)
        assert len(held.events) < 10
        bus.publish_nowait(ticker(500))
        await settle(lambda: held.events[-1].last == Decimal(500))


async def test_a_failure_is_counted_before_the_next_call_and_quarantine_spares_the_others() -> None:
    class Broken:
        blocking = False

        def __init__(self) -> None:
            self.calls = 0

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            self.calls += 1
            raise ValueError("bad")

    quarantined: list[str] = []
    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink(), on_quarantine=lambda name, why: quarantined.append(name))
    broken, quiet = Broken(), Quiet()
    runner.add("broken", broken, max_failures=3)
    runner.add("quiet", quiet)
    async with running(runner):
        for i in range(50):
            bus.publish_nowait(ticker(i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await settle(lambda: len(quiet.seen) >= 1 and quiet.seen[-1] == Decimal(49))
    assert broken.calls == 3  # never called again once three failures in a row were counted
    assert quarantined == ["broken"]
    assert runner["broken"].stats.errors == 3
    assert "quarantined" not in str(runner.quarantined.get("quiet"))


async def test_host_faults_are_attributed_and_a_success_resets_the_count() -> None:
    class Sometimes:
        blocking = False

        def __init__(self) -> None:
            self.calls = 0

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("glitch")
            return ()

    host = PluginHost(quarantine_after=5)
    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink(), host=host)
    handle = runner.add("s", Sometimes(), plugin="some-plugin")
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: handle.stats.calls == 1)
        bus.publish_nowait(ticker(2))
        await settle(lambda: handle.stats.errors == 1)
        assert host.failures("some-plugin") == 1
        assert "PluginError" in (handle.stats.last_error or "")
        bus.publish_nowait(ticker(3))
        await settle(lambda: handle.stats.calls == 3)
    assert host.failures("some-plugin") == 0
    assert handle.stats.consecutive_failures == 0


async def test_a_quarantined_plugin_is_refused_by_the_dispatcher() -> None:
    host = PluginHost()
    bus = EventBus()
    quiet = Quiet()
    runner = StrategyRunner(bus=bus, sink=Sink(), host=host)
    runner.add("q", quiet, plugin="q-plugin")
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: len(quiet.seen) == 1)
        host.quarantine("q-plugin", "switched off by the operator")
        bus.publish_nowait(ticker(2))
        await settle(lambda: "q" in runner.quarantined)
    assert quiet.seen == [Decimal(1)]
    assert "q-plugin" in runner.quarantined["q"]


async def test_each_inline_instance_sees_only_its_pairs() -> None:
    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    btc, eth = Quiet(), Quiet()
    runner.add("btc", btc, pairs=[PAIR])
    runner.add("eth", eth, pairs=["ETH/USD"])
    async with running(runner):
        bus.publish_nowait(ticker(1, PAIR))
        bus.publish_nowait(ticker(2, "ETH/USD"))
        bus.publish_nowait(ticker(3, "SOL/USD"))  # nobody trades it: not even queued
        await settle(lambda: btc.seen == [Decimal(1)] and eth.seen == [Decimal(2)])
        await asyncio.sleep(0.01)
    assert btc.seen == [Decimal(1)] and eth.seen == [Decimal(2)]
    assert bus.subscriptions[0].stats.delivered == 2


async def test_inline_instance_added_while_running_and_an_awaitable_result_is_finished() -> None:
    class ReturnsAwaitable:
        blocking = False

        def on_event(self, event: Ticker) -> Any:
            async def later() -> list[Signal]:
                await asyncio.sleep(0.01)
                return [buy("late")]

            return later()

    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("first", Quiet())
    async with running(runner):
        await asyncio.sleep(0)
        runner.add("late", ReturnsAwaitable(), timeout_s=1)
        await asyncio.sleep(0.01)
        bus.publish_nowait(ticker(1))
        await settle(lambda: len(sink.signals) == 1)
    assert sink.signals[0].strategy == "late"
    assert runner["late"].stats.succeeded == 1


async def test_awaitable_result_past_the_timeout_counts_as_timed_out() -> None:
    class Hangs:
        blocking = False

        def on_event(self, event: Ticker) -> Any:
            return asyncio.sleep(5, result=[buy("h")])

    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    runner.add("h", Hangs(), timeout_s=0.05)
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: runner["h"].stats.timeouts == 1)
    assert sink.signals == []
    assert "timed out" in (runner["h"].stats.last_error or "")


async def test_a_run_after_a_cancelled_one_trades_again() -> None:
    bus = EventBus()
    sink = Sink()
    runner = StrategyRunner(bus=bus, sink=sink)
    rec = Recorder("r")
    runner.add("r", rec)
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: len(sink.signals) == 1)
    async with running(runner) as second:  # as a supervisor restarting the component does
        for i in range(2, 6):
            bus.publish_nowait(ticker(i))
            await settle(lambda: len(sink.signals) == i)
        assert not second.done()
    assert [e.last for e in rec.events] == [Decimal(i) for i in range(1, 6)]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


async def test_strategies_raising_oddities_are_quarantined_and_the_others_keep_trading() -> None:
    class Odd:
        blocking = False

        def __init__(self, error: BaseException) -> None:
            self.error = error

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            raise self.error

    for host in (None, PluginHost()):
        bus = EventBus()
        sink = Sink()
        runner = StrategyRunner(bus=bus, sink=sink, host=host)
        runner.add("unprintable", Odd(_Unprintable()), plugin="odd-1", max_failures=2)
        runner.add("cancels", Odd(asyncio.CancelledError()), plugin="odd-2", max_failures=2)
        runner.add("good", Recorder("good"))
        async with running(runner) as task:
            for i in range(1, 5):
                bus.publish_nowait(ticker(i))
                await settle(lambda: len(sink.signals) == i)
            await settle(lambda: len(runner.quarantined) == 2)
            assert not task.done()
        assert "cannot be shown" in runner.quarantined["unprintable"]
        assert "CancelledError" in runner.quarantined["cancels"]


async def test_an_overrun_counts_even_when_the_warning_threshold_is_above_the_timeout() -> None:
    class Hog:
        blocking = False

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            import time

            time.sleep(0.03)
            return ()

    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    handle = runner.add("hog", Hog(), timeout_s=0.02, warn_s=2, max_failures=2)
    async with running(runner):
        for i in range(2):
            bus.publish_nowait(ticker(i))
            await settle(lambda: handle.stats.calls == i + 1)
        await settle(lambda: "hog" in runner.quarantined)
    assert handle.stats.timeouts == 2 and handle.stats.succeeded == 0


async def test_an_instance_never_sees_pairs_of_one_quarantined_beside_it() -> None:
    class Fails:
        blocking = False

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            raise ValueError("x")

    bus = EventBus()
    runner = StrategyRunner(bus=bus, sink=Sink())
    btc = Quiet()
    runner.add("btc", btc, pairs=[PAIR])
    runner.add("eth", Fails(), pairs=["ETH/USD"], max_failures=1)
    async with running(runner):
        bus.publish_nowait(ticker(1, "ETH/USD"))
        await settle(lambda: "eth" in runner.quarantined)
        bus.publish_nowait(ticker(2, "ETH/USD"))  # queued for the group before it shrank, or after
        bus.publish_nowait(ticker(3, PAIR))
        await settle(lambda: btc.seen == [Decimal(3)])
    assert btc.seen == [Decimal(3)]


async def test_a_group_emptied_by_quarantine_forms_again_with_its_own_dispatcher() -> None:
    class Fails:
        blocking = False

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            raise ValueError("x")

    class Waits:
        async def on_event(self, event: Ticker) -> Sequence[Signal]:
            return []

    bus = EventBus()
    sink = Sink()
    added: list[Any] = []

    runner: StrategyRunner

    def replace(name: str, reason: str) -> None:
        added.append(runner.add("fresh", Recorder("fresh")))  # from inside the quarantine report

    runner = StrategyRunner(bus=bus, sink=sink, on_quarantine=replace)
    runner.add("keeps-run-alive", Waits())
    runner.add("bad", Fails(), max_failures=1)
    async with running(runner):
        bus.publish_nowait(ticker(1))
        await settle(lambda: bool(added))
        for i in range(2, 5):
            bus.publish_nowait(ticker(i))
            await settle(lambda: len(sink.signals) == i - 1)
    assert [s.strategy for s in sink.signals] == ["fresh"] * 3


async def test_an_awaitable_result_is_not_charged_for_waiting_behind_earlier_signals() -> None:
    class SlowSink(Sink):
        async def __call__(self, signals: list[Signal]) -> None:
            await asyncio.sleep(0.15)  # longer than the strategy's whole timeout
            await super().__call__(signals)

    class Mixed:
        """Trades BTC at once; for ETH it needs a quick async look-up first."""

        blocking = False

        def on_event(self, event: Ticker) -> Any:
            if event.pair == PAIR:
                return [buy("m")]
            return self._look_up()

        async def _look_up(self) -> list[Signal]:
            await asyncio.sleep(0.001)
            return [buy("m", pair="ETH/USD")]

    bus = EventBus()
    sink = SlowSink()
    runner = StrategyRunner(bus=bus, sink=sink)
    handle = runner.add("m", Mixed(), timeout_s=0.1, max_failures=3)
    async with running(runner):
        bus.publish_nowait(ticker(1, PAIR))
        await asyncio.sleep(0.01)
        bus.publish_nowait(ticker(2, "ETH/USD"))  # its look-up waits behind the BTC order
        await settle(lambda: len(sink.signals) == 2, timeout=3)
    assert [s.pair for s in sink.signals] == [PAIR, "ETH/USD"]
    assert handle.stats.timeouts == 0 and handle.quarantined is None
    assert handle.stats.max_s < 0.1  # the look-up's own time, not the wait behind the sink
