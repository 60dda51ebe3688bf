"""Metrics: OpenTelemetry instruments, exposed as Prometheus text at ``/metrics``.

:class:`BotMetrics` owns an SDK ``MeterProvider``. Counters and histograms are recorded by
cheap calls (``metrics.order_placed("BTC/USD", "buy")``); everything the bot already keeps
(trading state, equity, PnL, breaker states, rate-limiter fill, retry counts, check
status, queue depths, restarts, CPU and RSS) is read at collection time by observable
instruments from the :class:`~tradebot.core.context.BotContext` given to :meth:`attach`,
so no component has to report it.

Prometheus exposition is rendered here from an in-memory reader's data rather than with
``opentelemetry-exporter-prometheus``: that exporter is only published as a pre-release,
registers into prometheus_client's process-global registry (two bots or two tests in one
process collide) and would make prometheus_client a runtime dependency; the text format
is small and stable. ``OTEL_METRICS_EXPORTER`` (``console``/``otlp``) adds a periodic
exporter next to it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tradebot.core.plugins import unwrap

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics.export import MetricReader

    from tradebot.core.context import BotContext

__all__ = ["BotMetrics", "CONTENT_TYPE", "render_prometheus"]

log = logging.getLogger("tradebot.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS_S: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_STATUS_VALUE = {"ok": 0, "degraded": 1, "critical": 2}
_TRADING_STATES = ("active", "reducing", "halted")


def _read(obj: Any, name: str) -> Any:
    """An attribute that may be a property or a no-argument method."""
    value = getattr(obj, name, None)
    return value() if callable(value) else value


class BotMetrics:
    """Every metric of one bot. Cheap to call from hot paths; safe to call from anywhere.

    ``readers`` adds metric readers (tests, other exporters). Call :meth:`attach` once the
    context is built so observable metrics can read it, :meth:`run_loop_monitor` as a task
    to measure event-loop lag, :meth:`shutdown` at the end.
    """

    def __init__(self, *, readers: Sequence[MetricReader] = (), service_name: str | None = None) -> None:
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource

        self._Observation = Observation
        self._reader = InMemoryMetricReader()
        all_readers: list[Any] = [self._reader, *readers, *_env_readers()]
        resource = Resource.create({"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "tradebot"})
        self.provider = MeterProvider(metric_readers=all_readers, resource=resource)
        meter = self.provider.get_meter("tradebot")
        self.context: BotContext | None = None
        self._exchanges: list[tuple[str, Any]] = []
        self.loop_lag_s = 0.0
        self._started = time.monotonic()
        self._process: Any = None

        c = meter.create_counter
        self._orders_placed = c("tradebot.orders.placed", description="Orders accepted by the exchange")
        self._orders_failed = c("tradebot.orders.failed", description="Orders that failed or were rejected")
        self._fills = c("tradebot.fills", description="Executions received")
        self._fill_volume = c("tradebot.fill.volume", description="Executed base volume")
        self._signals = c("tradebot.signals", description="Signals emitted by strategies")
        self._ticks = c("tradebot.market_events", description="Market data events received")
        self._api_errors = c("tradebot.api.errors", description="Exchange API errors by endpoint and error class")
        self._retries = c("tradebot.api.retries", description="Retries of exchange calls")
        self._breaker_transitions = c("tradebot.breaker.transitions", description="Circuit breaker state changes")
        self._healing_attempts = c("tradebot.healing.attempts", description="Recovery actions started")
        self._healing_successes = c("tradebot.healing.successes", description="Recovery actions that healed")
        self._restarts = c("tradebot.component.restarts", description="In-process component restarts")
        self._notifications = c("tradebot.notifications", description="Notifications by notifier and outcome")
        self._risk_rejections = c("tradebot.risk.rejections", description="Order intents denied by the risk gate")
        self._strategy_duration = meter.create_histogram(
            "tradebot.strategy.duration",
            unit="s",
            description="Duration of strategy calls",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
        )

        g = meter.create_observable_gauge
        oc = meter.create_observable_counter
        g("tradebot.trading.state", [self._obs_trading_state], description="1 for the current trading state")
        g("tradebot.trading.severity", [self._obs_trading_severity], description="0 active, 1 reducing, 2 halted")
        g("tradebot.equity", [self._obs_equity], description="Cash plus positions at the latest marks")
        g("tradebot.pnl.realized", [self._obs_realized], description="Realised PnL net of fees")
        g("tradebot.pnl.unrealized", [self._obs_unrealized], description="Open PnL at the latest marks")
        g("tradebot.position.volume", [self._obs_positions], description="Signed position volume per pair")
        g("tradebot.breaker.state", [self._obs_breakers], description="0 closed, 1 half-open, 2 open")
        g("tradebot.ratelimiter.fill", [self._obs_rate_fill], description="Rate-limit counter level / limit")
        g("tradebot.check.status", [self._obs_checks], description="0 ok, 1 degraded, 2 critical")
        g("tradebot.queue.depth", [self._obs_queues], description="Events waiting in event-bus queues")
        g("tradebot.event_loop.lag", [self._obs_loop_lag], unit="s", description="Event-loop scheduling lag")
        g("tradebot.process.rss", [self._obs_rss], unit="By", description="Resident memory of the process")
        g("tradebot.uptime", [self._obs_uptime], unit="s", description="Seconds since the bot started")
        oc("tradebot.process.cpu.time", [self._obs_cpu], unit="s", description="CPU seconds used by the process")
        oc("tradebot.api.calls", [self._obs_api_calls], description="Exchange API call attempts by endpoint")
        oc("tradebot.api.failures", [self._obs_api_failures], description="Exchange calls that failed after retries")
        oc("tradebot.breaker.trips", [self._obs_breaker_trips], description="Times each breaker opened")
        for field, desc in (("calls", "Strategy calls"), ("timeouts", "Strategy calls cut off by their timeout"),
                            ("errors", "Strategy calls that raised"), ("signals", "Signals from strategies")):
            oc(f"tradebot.strategy.{field}", [self._strategy_obs(field)], description=desc)
        oc("tradebot.process.restarts", [self._obs_process_restarts], description="Bot process starts after the first")

    # --- wiring ---------------------------------------------------------------------

    def attach(self, context: BotContext) -> None:
        """Read observable metrics from ``context`` and listen to its exchanges' breakers and retries.

        Safe to call again after the exchange was rebuilt; each exchange is hooked once.
        """
        self.context = context
        context.metrics = self
        from tradebot.core import tracing

        candidates = [("exchange", context.exchange), ("market_data", context.extras.get("market_data_source"))]
        for role, exchange in candidates:
            raw = unwrap(exchange) if exchange is not None else None
            if raw is None or any(raw is known for _, known in self._exchanges):
                continue
            name = str(getattr(raw, "name", role))
            self._exchanges.append((role, raw))
            breakers = getattr(raw, "breakers", None)
            if breakers is not None and hasattr(breakers, "add_listener"):
                breakers.add_listener(self.breaker_transition)
                breakers.add_listener(tracing.breaker_event)
            stats = getattr(raw, "retry_stats", None)
            if stats is not None and hasattr(stats, "add_listener"):
                stats.add_listener(self._on_retry)
            log.debug("metrics attached to %s exchange %s", role, name)

    # --- recording (hot paths) -------------------------------------------------------

    def order_placed(self, pair: str, side: str) -> None:
        self._orders_placed.add(1, {"pair": pair, "side": str(side)})

    def order_failed(self, pair: str, side: str, error: str) -> None:
        """``error`` is the error class name (``InsufficientFunds``, ``OrderOutcomeUnknown`` ...)."""
        self._orders_failed.add(1, {"pair": pair, "side": str(side), "error": error})

    def fill(self, pair: str, side: str, volume: Any = None) -> None:
        self._fills.add(1, {"pair": pair, "side": str(side)})
        if volume is not None:
            self._fill_volume.add(float(volume), {"pair": pair, "side": str(side)})

    def signal(self, strategy: str, pair: str) -> None:
        self._signals.add(1, {"strategy": strategy, "pair": pair})

    def market_event(self, kind: str, pair: str) -> None:
        self._ticks.add(1, {"kind": kind, "pair": pair})

    def risk_rejected(self, reason: str) -> None:
        self._risk_rejections.add(1, {"reason": reason})

    def api_error(self, endpoint: str, error: BaseException | str) -> None:
        """An exchange call failed with ``error`` (an exception or its class name)."""
        name = error if isinstance(error, str) else type(error).__name__
        self._api_errors.add(1, {"endpoint": endpoint, "error": name})

    def retry(self, endpoint: str, error: str) -> None:
        self._retries.add(1, {"endpoint": endpoint, "error": error})

    def strategy_call(self, strategy: str, duration_s: float) -> None:
        """One strategy call finished (or was cut off by its timeout) after ``duration_s``.

        Call counts, timeouts and errors are read from the strategy runner's own stats.
        """
        self._strategy_duration.record(duration_s, {"strategy": strategy})

    def healing(self, action: str, *, success: bool | None = None) -> None:
        """A recovery action started (``success`` None) or finished."""
        if success is None:
            self._healing_attempts.add(1, {"action": action})
        elif success:
            self._healing_successes.add(1, {"action": action})

    def component_restart(self, component: str) -> None:
        self._restarts.add(1, {"component": component})

    def notification(self, notifier: str, outcome: str) -> None:
        """``outcome``: sent, failed, dropped, deduplicated, rate_limited."""
        self._notifications.add(1, {"notifier": notifier, "outcome": outcome})

    def breaker_transition(self, transition: Any) -> None:
        """Listener for :class:`tradebot.core.resilience.BreakerTransition`."""
        self._breaker_transitions.add(
            1, {"breaker": transition.breaker, "to": str(getattr(transition.current, "value", transition.current))}
        )

    def _on_retry(self, event: Any) -> None:
        self.retry(event.endpoint, event.error_type)
        self.api_error(event.endpoint, event.error_type)

    # --- event-loop lag ----------------------------------------------------------------

    async def run_loop_monitor(self, interval_s: float = 0.5) -> None:
        """Measure how late the loop wakes a sleeper; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval_s)
            self.loop_lag_s = max(0.0, loop.time() - start - interval_s)

    # --- exposition --------------------------------------------------------------------

    def collect(self) -> Any:
        """The current metrics data (an OpenTelemetry ``MetricsData``)."""
        return self._reader.get_metrics_data()

    def render_prometheus(self) -> str:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        return render_prometheus(self.collect())

    def shutdown(self) -> None:
        """Flush periodic exporters and stop collection."""
        try:
            self.provider.shutdown()
        except Exception:  # noqa: BLE001 - shutting down twice or a failing exporter
            log.debug("metrics provider shutdown failed", exc_info=True)

    # --- observable callbacks (never raise: a broken source yields nothing) --------------

    def _safe(self, fn: Callable[[], Iterable[tuple[float, dict[str, str]]]]) -> list[Observation]:
        try:
            return [self._Observation(value, attrs_) for value, attrs_ in fn()]
        except Exception:  # noqa: BLE001 - one bad source must not break /metrics
            log.debug("metric source failed", exc_info=True)
            return []

    def _obs_trading_state(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            trading = self.context.trading if self.context else None
            if trading is None:
                return
            current = str(trading.state.value)
            for state in _TRADING_STATES:
                yield (1.0 if state == current else 0.0), {"state": state}

        return self._safe(gen)

    def _obs_trading_severity(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            trading = self.context.trading if self.context else None
            if trading is not None:
                yield float(trading.state.severity), {}

        return self._safe(gen)

    def _portfolio_value(self, name: str) -> Iterator[tuple[float, dict[str, str]]]:
        portfolio = self.context.portfolio if self.context else None
        if portfolio is None:
            return
        value = _read(portfolio, name)
        if value is not None:
            yield float(value), {}

    def _obs_equity(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._portfolio_value("equity"))

    def _obs_realized(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._portfolio_value("realized_pnl"))

    def _obs_unrealized(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._portfolio_value("unrealized_pnl"))

    def _obs_positions(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            portfolio = self.context.portfolio if self.context else None
            if portfolio is None:
                return
            for pair, pos in (_read(portfolio, "positions") or {}).items():
                yield float(pos.volume), {"pair": pair}

        return self._safe(gen)

    def _breakers(self) -> Iterator[tuple[str, Any]]:
        for role, exchange in self._exchanges:
            for breaker in getattr(exchange, "breakers", None) or ():
                yield role, breaker

    def _obs_breakers(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for role, breaker in self._breakers():
                state = str(getattr(breaker.state, "value", breaker.state))
                yield float(_BREAKER_VALUE.get(state, -1)), {"breaker": breaker.name, "role": role}

        return self._safe(gen)

    def _obs_breaker_trips(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for role, breaker in self._breakers():
                yield float(breaker.trips), {"breaker": breaker.name, "role": role}

        return self._safe(gen)

    def _obs_rate_fill(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for role, exchange in self._exchanges:
                limiter = getattr(exchange, "rate_limiter", None)
                counter = getattr(limiter, "counter", None)
                if counter is not None:
                    yield counter.level / counter.limit, {"limiter": "rest", "role": role}
                trading = getattr(exchange, "trading_limiter", None)
                for pair, pair_counter in dict(getattr(trading, "_counters", {}) or {}).items():
                    yield pair_counter.level / pair_counter.limit, {"limiter": f"trading:{pair}", "role": role}

        return self._safe(gen)

    def _retry_counts(self, field: str) -> Iterator[tuple[float, dict[str, str]]]:
        for role, exchange in self._exchanges:
            stats = getattr(exchange, "retry_stats", None)
            for endpoint, counts in dict(getattr(stats, "endpoints", {}) or {}).items():
                yield float(getattr(counts, field)), {"endpoint": endpoint, "role": role}

    def _obs_api_calls(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._retry_counts("attempts"))

    def _obs_api_failures(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._retry_counts("failures"))

    def _obs_checks(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            health = self.context.health if self.context else None
            for name, status in check_statuses(health).items():
                yield float(_STATUS_VALUE.get(status, -1)), {"check": name}

        return self._safe(gen)

    def _obs_queues(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            bus = self.context.bus if self.context else None
            if bus is None:
                return
            depths = _read(bus, "depths") or _read(bus, "queue_depths") or {}
            for name, depth in dict(depths).items():
                yield float(depth), {"queue": str(name)}

        return self._safe(gen)

    def _strategy_obs(self, field: str) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(_o: CallbackOptions) -> list[Observation]:
            def gen() -> Iterator[tuple[float, dict[str, str]]]:
                runner = self.context.extras.get("strategy_runner") if self.context else None
                stats = _read(runner, "stats") if runner is not None else None
                for name, st in dict(stats or {}).items():
                    yield float(getattr(st, field)), {"strategy": str(name)}

            return self._safe(gen)

        return callback

    def _obs_loop_lag(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: [(self.loop_lag_s, {})])

    def _proc(self) -> Any:
        if self._process is None:
            import psutil

            self._process = psutil.Process()
        return self._process

    def _obs_rss(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: [(float(self._proc().memory_info().rss), {})])

    def _obs_cpu(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            times = self._proc().cpu_times()
            yield float(times.user), {"mode": "user"}
            yield float(times.system), {"mode": "system"}

        return self._safe(gen)

    def _obs_uptime(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: [(time.monotonic() - self._started, {})])

    def _obs_process_restarts(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            store = self.context.store if self.context else None
            if store is not None and hasattr(store, "get_counter"):
                yield float(max(0, store.get_counter("starts") - 1)), {}

        return self._safe(gen)


def check_statuses(health: Any) -> dict[str, str]:
    """Check name -> ``ok``/``degraded``/``critical`` from a health monitor's latest report."""
    if health is None:
        return {}
    report = _read(health, "latest") or _read(health, "last_report") or _read(health, "report")
    if report is None:
        return {}
    results = getattr(report, "results", None) or getattr(report, "checks", None) or {}
    out: dict[str, str] = {}
    items = results.items() if isinstance(results, dict) else ((getattr(r, "name", "?"), r) for r in results)
    for name, result in items:
        status = getattr(result, "status", result)
        out[str(name)] = str(getattr(status, "value", status))
    return out


def _env_readers() -> list[Any]:
    """Periodic exporters chosen by ``OTEL_METRICS_EXPORTER`` (``none`` by default)."""
    names = [n.strip().lower() for n in os.environ.get("OTEL_METRICS_EXPORTER", "none").split(",") if n.strip()]
    readers: list[Any] = []
    for name in names:
        if name in ("none", "prometheus"):  # prometheus: served at /metrics anyway
            continue
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "otlp":
            protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            try:
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
                else:
                    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                        OTLPMetricExporter,
                    )
            except ImportError as exc:
                raise RuntimeError(
                    "OTEL_METRICS_EXPORTER=otlp needs the OTLP exporter: pip install 'tradebot[otlp]'"
                ) from exc
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        else:
            raise ValueError(f"OTEL_METRICS_EXPORTER: unknown exporter {name!r} (use console, otlp or none)")
    return readers


# --- Prometheus text exposition -------------------------------------------------------------

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(name: str, unit: str | None) -> str:
    base = _NAME_BAD.sub("_", name)
    suffix = {"s": "seconds", "By": "bytes"}.get(unit or "")
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(attributes: Any, extra: tuple[str, str] | None = None) -> str:
    items = [(_LABEL_BAD.sub("_", str(k)), str(v)) for k, v in dict(attributes or {}).items()]
    if extra is not None:
        items.append(extra)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def render_prometheus(data: Any) -> str:
    """Render OpenTelemetry ``MetricsData`` as Prometheus text (counters get ``_total``)."""
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    lines: list[str] = []
    seen: set[str] = set()
    for resource_metrics in getattr(data, "resource_metrics", None) or ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                name = _metric_name(metric.name, metric.unit)
                if name in seen:
                    continue
                seen.add(name)
                help_text = _escape(metric.description or metric.name)
                points = list(metric.data.data_points)
                if isinstance(metric.data, Sum) and metric.data.is_monotonic:
                    lines.append(f"# HELP {name}_total {help_text}")
                    lines.append(f"# TYPE {name}_total counter")
                    lines.extend(f"{name}_total{_labels(p.attributes)} {_num(p.value)}" for p in points)
                elif isinstance(metric.data, (Sum, Gauge)):
                    lines.append(f"# HELP {name} {help_text}")
                    lines.append(f"# TYPE {name} gauge")
                    lines.extend(f"{name}{_labels(p.attributes)} {_num(p.value)}" for p in points)
                elif isinstance(metric.data, Histogram):
                    lines.append(f"# HELP {name} {help_text}")
                    lines.append(f"# TYPE {name} histogram")
                    for p in points:
                        cumulative = 0
                        for bound, count in zip(p.explicit_bounds, p.bucket_counts, strict=False):
                            cumulative += count
                            lines.append(f"{name}_bucket{_labels(p.attributes, ('le', _num(float(bound))))} {cumulative}")
                        lines.append(f"{name}_bucket{_labels(p.attributes, ('le', '+Inf'))} {p.count}")
                        lines.append(f"{name}_sum{_labels(p.attributes)} {_num(p.sum)}")
                        lines.append(f"{name}_count{_labels(p.attributes)} {p.count}")
    return "\n".join(lines) + "\n"
