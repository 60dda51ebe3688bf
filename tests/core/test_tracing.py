"""One span per hook call and per plugin-object call, carrying the plugin attribute."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tradebot.core import telemetry
from tradebot.core.hookspecs import hookimpl
from tradebot.core.models import Alert, AlertLevel
from tradebot.core.plugins import PluginHost


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("none", span_processor=SimpleSpanProcessor(exporter))
    yield exporter
    telemetry.shutdown_tracing()


class AlertPlugin:
    @hookimpl
    def tradebot_alert(self, alert):  # type: ignore[no-untyped-def]
        if alert.title == "fail":
            raise RuntimeError("cannot send")


async def test_span_per_hook_call_with_plugin_attribute(spans: InMemorySpanExporter) -> None:
    host = PluginHost()
    host.register(AlertPlugin(), "alerter")
    await host.broadcast(
        "tradebot_alert", alert=Alert(level=AlertLevel.INFO, title="ok", message="", source="t")
    )
    await host.broadcast(
        "tradebot_alert", alert=Alert(level=AlertLevel.INFO, title="fail", message="", source="t")
    )
    finished = [s for s in spans.get_finished_spans() if s.attributes.get("tradebot.plugin") == "alerter"]
    assert len(finished) == 2
    assert all(s.attributes["tradebot.hook"] == "tradebot_alert" for s in finished)
    ok, failed = finished
    assert ok.status.status_code != StatusCode.ERROR
    assert failed.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" and "cannot send" in str(e.attributes) for e in failed.events)


async def test_span_per_plugin_object_method(spans: InMemorySpanExporter) -> None:
    class Strategy:
        async def on_event(self, event: int) -> list[int]:
            return [event]

    host = PluginHost()
    proxy = host.wrap("sma", Strategy())
    assert await proxy.on_event(3) == [3]
    (span,) = spans.get_finished_spans()
    assert span.attributes["tradebot.plugin"] == "sma" and span.attributes["tradebot.hook"] == "on_event"


def test_no_spans_when_tracing_off() -> None:
    telemetry.shutdown_tracing()
    host = PluginHost()
    assert host.call("p", "m", lambda: 5) == 5
    assert telemetry.get_tracer() is None


async def test_retries_are_span_events(spans: InMemorySpanExporter) -> None:
    import stamina

    from tradebot.core import tracing
    from tradebot.core.errors import RequestTimeout
    from tradebot.resilience.retry import call_with_retry

    tracing.install_retry_events()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RequestTimeout("slow")
        return "ok"

    stamina.set_testing(True, attempts=5)
    try:
        with tracing.span("order"):
            assert await call_with_retry(flaky, endpoint="private/Balance") == "ok"
    finally:
        stamina.set_testing(False)
    (span,) = [s for s in spans.get_finished_spans() if s.name == "order"]
    retries = [e for e in span.events if e.name == "retry"]
    assert len(retries) == 2
    assert retries[0].attributes["error"] == "RequestTimeout"
