"""One trace per market event: tick -> strategy -> risk gate -> order -> report.

The guarded call path (:mod:`tradebot.core.plugins`) opens a span per plugin call inside
whatever span is current. To make every call caused by one market event share a trace:

* the producer opens a root span with :func:`market_event` around handling the event and
  captures its context with :func:`capture` next to the event it queues;
* the consumer re-enters that context with :func:`resume` around its own work, so the
  strategy, risk-gate, order and report spans become children of the event's span.

Retries (stamina's instrumentation hook, installed by :func:`install_retry_events`),
circuit-breaker transitions (:func:`breaker_event`, a breaker listener) and healing actions
(:func:`healing_event`) are recorded as events on the current span.

With tracing off every function here returns after one attribute read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tradebot.core import telemetry

__all__ = [
    "TraceContext",
    "breaker_event",
    "capture",
    "healing_event",
    "install_retry_events",
    "market_event",
    "record_event",
    "resume",
    "span",
]

TraceContext = Any
"""An OpenTelemetry ``Context`` (opaque here), or None when tracing is off."""


@contextlib.contextmanager
def market_event(event: Any, *, name: str = "market_event") -> Iterator[Any]:
    """Open a new root span (a new trace) for one market event and make it current.

    Yields the span (None with tracing off). Attributes name the event's kind and pair.
    """
    tracer = telemetry.state.tracer if telemetry.state.enabled else None
    if tracer is None:
        yield None
        return
    from opentelemetry.context import Context

    attributes = {"tradebot.event": type(event).__name__}
    pair = getattr(event, "pair", None)
    if pair is not None:
        attributes["tradebot.pair"] = str(pair)
    # an empty Context as parent: the event starts its own trace
    with tracer.start_as_current_span(name, context=Context(), attributes=attributes) as current:
        yield current


def capture() -> TraceContext:
    """The current trace context to hand along with a queued event (None with tracing off)."""
    if not telemetry.state.enabled:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def resume(trace_context: TraceContext) -> Iterator[None]:
    """Make a captured context current for the duration of the block (no-op for None)."""
    if trace_context is None or not telemetry.state.enabled:
        yield
        return
    from opentelemetry import context

    token = context.attach(trace_context)
    try:
        yield
    finally:
        context.detach(token)


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child span of the current one for core work that is not a plugin call (risk gate ...)."""
    tracer = telemetry.state.tracer if telemetry.state.enabled else None
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name, attributes={k: _attr(v) for k, v in attributes.items() if v is not None}
    ) as current:
        yield current


def record_event(event_name: str, /, **attributes: Any) -> None:
    """Add an event to the current span, if one is recording."""
    if not telemetry.state.enabled:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(event_name, {k: _attr(v) for k, v in attributes.items() if v is not None})


def breaker_event(transition: Any) -> None:
    """Breaker listener: a ``circuit_breaker.transition`` event on the span of the call that caused it."""
    if not telemetry.state.enabled:
        return
    record_event(
        "circuit_breaker.transition",
        breaker=transition.breaker,
        previous=getattr(transition.previous, "value", transition.previous),
        current=getattr(transition.current, "value", transition.current),
        reason=transition.reason,
        open_wait_s=transition.open_wait_s,
    )


def healing_event(action: str, outcome: str, **attributes: Any) -> None:
    """A recovery action ``action`` started / succeeded / failed (``outcome``)."""
    if not telemetry.state.enabled:
        return
    record_event("healing", action=action, outcome=outcome, **attributes)


def _on_retry(details: Any) -> None:
    caught = getattr(details, "caused_by", None)
    record_event(
        "retry",
        name=getattr(details, "name", ""),
        attempt=getattr(details, "retry_num", 0),
        wait_s=getattr(details, "wait_for", 0.0),
        waited_so_far_s=getattr(details, "waited_so_far", 0.0),
        error=type(caught).__name__ if caught is not None else None,
    )


_on_retry.__name__ = "tradebot_retry_span_event"


def install_retry_events() -> None:
    """Add a stamina retry hook recording a ``retry`` event on the current span (idempotent).

    stamina's other hooks (its logging, prometheus) are kept.
    """
    from stamina import instrumentation

    hooks = list(instrumentation.get_on_retry_hooks())
    if any(getattr(h, "__name__", "") == _on_retry.__name__ for h in hooks):
        return
    instrumentation.set_on_retry_hooks([*hooks, _on_retry])


def _attr(value: Any) -> Any:
    """An OpenTelemetry attribute value: str, bool, int or float (other types as str)."""
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)
