"""The runner calls strategies through the plugin host: traced, attributed, quarantined."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tradebot.core import telemetry
from tradebot.core.bus import EventBus
from tradebot.core.hookspecs import hookimpl
from tradebot.core.models import Alert, Side, Signal, Ticker
from tradebot.core.plugins import PluginHost
from tradebot.core.strategy import StrategyRunner

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ticker(price: int) -> Ticker:
    p = Decimal(price)
    return Ticker(pair="BTC/USD", bid=p, ask=p, last=p, volume=Decimal(1), time=T0)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("none", span_processor=SimpleSpanProcessor(exporter))
    yield exporter
    telemetry.shutdown_tracing()


class Alerts:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def tradebot_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)


async def wait_until(predicate: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


async def test_every_mode_is_traced_and_attributed(spans: InMemorySpanExporter) -> None:
    class Inline:
        blocking = False

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            return [Signal(strategy="a", pair=event.pair, side=Side.BUY, volume=Decimal(1))]

    class Threaded:
        def on_event(self, event: Ticker) -> Sequence[Signal]:
            raise ValueError("division by zero in my indicator")

    class Async:
        async def on_event(self, event: Ticker) -> Sequence[Signal]:
            await asyncio.sleep(0)
            return []

    host = PluginHost(quarantine_after=100)
    bus = EventBus()
    got: list[Signal] = []

    async def sink(signals: list[Signal]) -> None:
        got.extend(signals)

    runner = StrategyRunner(bus=bus, sink=sink, host=host)
    runner.add("a", Inline(), plugin="plug-inline")
    runner.add("b", Threaded(), plugin="plug-thread", max_failures=10)
    runner.add("c", Async(), plugin="plug-async")
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    bus.publish_nowait(ticker(1))
    await wait_until(lambda: all(s.calls == 1 for s in runner.stats().values()))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    by_plugin = {s.attributes["tradebot.plugin"]: s for s in spans.get_finished_spans()}
    assert set(by_plugin) == {"plug-inline", "plug-thread", "plug-async"}
    assert all(s.attributes["tradebot.hook"] == "on_event" for s in by_plugin.values())
    failed = by_plugin["plug-thread"]
    assert failed.status.status_code == StatusCode.ERROR
    assert "division by zero in my indicator" in runner["b"].stats.last_error  # type: ignore[operator]
    assert host.failures("plug-thread") == 1
    assert len(got) == 1


async def test_quarantine_is_broadcast_as_a_critical_alert() -> None:
    class Broken:
        async def on_event(self, event: Ticker) -> Sequence[Signal]:
            raise KeyError("price")

    host = PluginHost(quarantine_after=100)
    alerts = Alerts()
    host.register(alerts, "alerts")
    bus = EventBus()

    async def sink(signals: list[Signal]) -> None:
        raise AssertionError("no signal expected")

    runner = StrategyRunner(bus=bus, sink=sink, host=host)
    runner.add("broken", Broken(), plugin="third-party", max_failures=2)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    for i in range(5):
        bus.publish_nowait(ticker(i))
        await asyncio.sleep(0.005)
    await wait_until(lambda: bool(alerts.alerts))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    (alert,) = alerts.alerts
    assert alert.title == "strategy broken quarantined"
    assert alert.level.value == "critical"
    assert "2 consecutive failures" in alert.message and "KeyError" in alert.message
    assert runner["broken"].stats.calls == 2


async def test_plugin_quarantined_by_the_host_stops_its_instance() -> None:
    class Quiet:
        blocking = False

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            return []

    host = PluginHost()
    bus = EventBus()

    async def sink(signals: list[Signal]) -> None:
        return None

    runner = StrategyRunner(bus=bus, sink=sink, host=host)
    runner.add("q", Quiet(), plugin="bad-plugin")
    host.quarantine("bad-plugin", "reloaded module failed to import")
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    bus.publish_nowait(ticker(1))
    await wait_until(lambda: bool(runner.quarantined))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert "quarantined" in runner.quarantined["q"]


async def test_quiet_calls_are_sampled_and_failures_always_traced(spans: InMemorySpanExporter) -> None:
    class Flaky:
        blocking = False

        def __init__(self) -> None:
            self.calls = 0

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            self.calls += 1
            if self.calls in (7, 13):
                raise RuntimeError(f"bad tick {self.calls}")
            if self.calls == 17:
                time.sleep(0.03)
            return []

    host = PluginHost(quarantine_after=100)
    bus = EventBus()

    async def sink(signals: list[Signal]) -> None:
        return None

    runner = StrategyRunner(bus=bus, sink=sink, host=host, trace_every=5, trace_interval_s=0)
    runner.add("flaky", Flaky(), plugin="flaky-plugin", warn_s=0.02, max_failures=10)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    for i in range(20):
        bus.publish_nowait(ticker(i))
        await wait_until(lambda: runner["flaky"].stats.calls == i + 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    finished = [
        s for s in spans.get_finished_spans() if s.attributes.get("tradebot.plugin") == "flaky-plugin"
    ]
    sampled = [s for s in finished if "tradebot.outcome" not in s.attributes]
    after = {s.attributes["tradebot.outcome"]: s for s in finished if "tradebot.outcome" in s.attributes}
    assert len(sampled) == 4  # calls 1, 6, 11, 16
    # call 7 and 13 were not sampled but failed; call 17 was slow: each got its span afterwards
    assert sorted(
        s.attributes["tradebot.outcome"] for s in finished if "tradebot.outcome" in s.attributes
    ) == [
        "error",
        "error",
        "slow",
    ]
    assert after["error"].status.status_code == StatusCode.ERROR
    assert after["error"].attributes["tradebot.strategy"] == "flaky"
    slow = after["slow"]
    assert slow.end_time - slow.start_time >= 30_000_000
    assert runner["flaky"].stats.errors == 2


async def test_sampled_spans_are_at_most_one_per_interval_while_failures_are_all_traced(
    spans: InMemorySpanExporter,
) -> None:
    class Burst:
        blocking = False

        def __init__(self) -> None:
            self.calls = 0

        def on_event(self, event: Ticker) -> Sequence[Signal]:
            self.calls += 1
            if self.calls % 250 == 0:
                raise RuntimeError(f"bad tick {self.calls}")
            return []

    async def sink(signals: list[Signal]) -> None:
        return None

    bus = EventBus()
    # a burst of 2000 ticks within well under a second: 1 in 10 would be 200 spans
    runner = StrategyRunner(
        bus=bus, sink=sink, host=PluginHost(quarantine_after=100), trace_every=10, trace_interval_s=5
    )
    runner.add("burst", Burst(), plugin="burst-plugin", max_failures=100)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    for i in range(2000):
        bus.publish_nowait(ticker(i))
        await asyncio.sleep(0)
    await wait_until(lambda: runner["burst"].stats.calls == 2000)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    finished = [
        s for s in spans.get_finished_spans() if s.attributes.get("tradebot.plugin") == "burst-plugin"
    ]
    sampled = [s for s in finished if "tradebot.outcome" not in s.attributes]
    failed = [s for s in finished if s.attributes.get("tradebot.outcome") == "error"]
    assert len(sampled) == 1  # the first; the interval holds the rest back
    assert len(failed) == 8  # every failure still gets its span
    assert runner["burst"].stats.calls == 2000


def test_trace_interval_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="trace_interval_s"):
        StrategyRunner(bus=EventBus(), sink=lambda s: None, trace_interval_s=-1)  # type: ignore[arg-type, return-value]
