"""Inline strategies share one dispatcher; what may wait runs on each instance's own task."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tradebot.core.bus import EventBus
from tradebot.core.models import Signal, Ticker
from tradebot.core.plugins import PluginHost

from tests.engine.test_strategy_runner import PAIR, Recorder, Sink, buy, running, settle, ticker
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
