"""OpenTelemetry tracing set-up, driven by the standard OTEL_* environment variables.

``OTEL_TRACES_EXPORTER``: ``none`` (default), ``console``, ``otlp`` (needs the ``otlp``
extra; ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf`` (default) or ``grpc``).
``OTEL_SERVICE_NAME`` names the service (default ``tradebot``). ``OTEL_SDK_DISABLED=true``
turns everything off.

With tracing off, :data:`state.enabled` is false and the core's guarded call path does
not create spans at all, so the cost is one attribute read per call.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Tracer

__all__ = ["configure_tracing", "get_tracer", "shutdown_tracing", "state"]

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
        provider.add_span_processor(proc)
    # A process-global provider can be set only once; keep ours explicit instead.
    state.provider = provider
    state.tracer = provider.get_tracer(TRACER_NAME)
    state.enabled = True
    try:
        trace.set_tracer_provider(provider)
    except Exception:  # noqa: BLE001 - already set by a host application; ours still works
        pass
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
