"""OTLP export (the `otlp` extra) over HTTP and gRPC to a local collector on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tradebot.core import telemetry
from tradebot.core.plugins import PluginHost


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    yield
    telemetry.shutdown_tracing()


def _traced_call() -> None:
    host = PluginHost()
    assert host.call("kraken", "balances", lambda: 42) == 42


def test_otlp_http_export(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{server.server_port}/v1/traces"
        )
        monkeypatch.setenv("OTEL_SERVICE_NAME", "bot-under-test")
        assert telemetry.configure_tracing()
        _traced_call()
        telemetry.shutdown_tracing()  # flushes the batch
    finally:
        server.shutdown()
    assert received
    req = ExportTraceServiceRequest.FromString(received[0])
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["kraken.balances"]
    attrs = {a.key: a.value.string_value for a in spans[0].attributes}
    assert attrs == {"tradebot.plugin": "kraken", "tradebot.hook": "balances"}
    service = {a.key: a.value.string_value for a in req.resource_spans[0].resource.attributes}["service.name"]
    assert service == "bot-under-test"


def test_otlp_grpc_export(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # type: ignore[no-untyped-def]  # gRPC's naming
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
        assert telemetry.configure_tracing()
        _traced_call()
        telemetry.shutdown_tracing()
    finally:
        server.stop(grace=None)
    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["kraken.balances"]


def test_otlp_without_the_extra_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_otlp(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_otlp)
    with pytest.raises(RuntimeError, match=r"pip install 'tradebot\[otlp\]'"):
        telemetry.configure_tracing("otlp")
