"""OpenTelemetry tracing set-up, driven by the standard OTEL_* environment variables.

``OTEL_TRACES_EXPORTER``: ``none`` (default), ``console``, ``otlp`` (needs the ``otlp``
extra; ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf`` (default) or ``grpc``).
``OTEL_SERVICE_NAME`` names the service (default ``tradebot``). ``OTEL_SDK_DISABLED=true``
turns everything off.

With tracing off, :data:`state.enabled` is false and the core's guarded call path does
not create spans at all, so the cost is one attribute read per call.

No exporter ever sees a secret: every span processor is wrapped in
:class:`RedactingSpanProcessor`, which hands on a copy of each finished span whose name,
attributes, status and events (exception messages and stack traces included) went through
:func:`tradebot.core.secrets.redact`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Tracer

__all__ = [
    "RedactingSpanProcessor",
    "configure_tracing",
    "get_tracer",
    "redacted_span",
    "shutdown_tracing",
    "state",
]

TRACER_NAME = "tradebot"


class _TracingState:
    """Process-wide tracing switch and tracer (read on every guarded call)."""

    enabled: bool = False
    tracer: Tracer | None = None
    provider: TracerProvider | None = None


state = _TracingState()


def configure_tracing(
    exporter: str | None = None,
    *,
    span_processor: SpanProcessor | None = None,
    service_name: str | None = None,
) -> bool:
    """Set up tracing once for this process. Returns whether tracing is on.

    ``exporter`` overrides ``OTEL_TRACES_EXPORTER``. ``span_processor`` (tests, benches)
    adds a processor of the caller's, e.g. around an in-memory exporter, and turns
    tracing on whatever the exporter says.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" and span_processor is None:
        state.enabled = False
        return False
    name = (exporter or os.environ.get("OTEL_TRACES_EXPORTER") or "none").strip().lower()
    processors: list[Any] = []
    for item in [n.strip() for n in name.split(",") if n.strip()]:
        if item == "none":
            continue
        processors.append(_processor_for(item))
    if span_processor is not None:
        processors.append(span_processor)
    if not processors:
        state.enabled = False
        return False

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create(
        {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "tradebot"}
    )
    provider = TracerProvider(resource=resource)
    for proc in processors:
        provider.add_span_processor(cast(Any, RedactingSpanProcessor(proc)))
    # A process-global provider can be set only once; keep ours explicit instead.
    state.provider = provider
    state.tracer = provider.get_tracer(TRACER_NAME)
    state.enabled = True
    with contextlib.suppress(Exception):  # already set by a host application; ours still works
        trace.set_tracer_provider(provider)
    return True


def _processor_for(name: str) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if name == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        try:
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                    OTLPSpanExporter,
                )
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'tradebot[otlp]'"
            ) from exc
        return BatchSpanProcessor(OTLPSpanExporter())
    raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (use console, otlp or none)")


def _redact_value(value: Any) -> Any:
    from tradebot.core.secrets import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    return value


def _redact_attributes(attributes: Any) -> dict[str, Any]:
    return {k: _redact_value(v) for k, v in (attributes or {}).items()}


def redacted_span(span: Any) -> Any:
    """A copy of a finished span with every registered secret replaced by ``***``."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    from tradebot.core.secrets import redact

    status = span.status
    if status is not None and status.description:
        status = Status(status.status_code, redact(status.description))
    events = [
        Event(redact(e.name), _redact_attributes(e.attributes), timestamp=e.timestamp) for e in span.events
    ]
    return ReadableSpan(
        name=redact(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redact_attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanProcessor:
    """Wraps a span processor (and so its exporter): it only ever gets redacted spans."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: Any) -> None:
        from tradebot.core.secrets import has_secrets

        self.inner.on_end(redacted_span(span) if has_secrets() else span)

    def _on_ending(self, span: Any) -> None:
        hook = getattr(self.inner, "_on_ending", None)
        if hook is not None:
            hook(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def get_tracer() -> Tracer | None:
    """The tracer when tracing is on, else None."""
    return state.tracer if state.enabled else None


def shutdown_tracing() -> None:
    """Flush and stop exporters (called at shutdown)."""
    if state.provider is not None:
        state.provider.shutdown()
    state.enabled = False
    state.tracer = None
    state.provider = None
