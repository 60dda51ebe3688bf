"""Metrics: OpenTelemetry instruments, exposed as Prometheus text at ``/metrics``.

:class:`BotMetrics` owns an SDK ``MeterProvider``. All wiring is in :meth:`BotMetrics.attach`:
orders and fills are counted from the plugin host's ``tradebot_order_report`` and
``tradebot_fill_report`` broadcasts (BotMetrics registers itself as plugin ``metrics``),
HALTs from the trading state's listeners, quarantines from the host's quarantine
listeners, retries and breaker transitions from each exchange's listeners; signals are
counted where the bot hands them to the risk gate (:meth:`BotMetrics.signal`). Everything the
bot already keeps (trading state, equity, PnL, positions, risk-gate refusals, healing
counters, component restarts, market events per pair, strategy statistics, breaker
states, rate-limiter fill, retry counts, check status, queue depths, CPU and RSS) is read at
collection time by observable instruments from the
:class:`~tradebot.core.context.BotContext`, so no component has to report it. Strategy call
durations and exchange request/queue latencies are histograms their components keep with a
few additions per observation (see :mod:`tradebot.resilience.timings`); they are
rendered into ``/metrics`` here and not exported over OTLP.

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

from tradebot.core.hookspecs import hookimpl
from tradebot.core.plugins import unwrap
from tradebot.resilience.stats import EndpointStats, ReportsResilience, ResilienceStats, TimingSeries

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics.export import MetricReader, MetricsData

    from tradebot.core.context import BotContext
    from tradebot.core.healing import HealingCounters
    from tradebot.core.health import HealthMonitor
    from tradebot.core.models import Fill, OrderInfo, TradingStateChange
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.strategy import StrategyRunner, StrategyStats
    from tradebot.resilience.breaker import BreakerTransition
    from tradebot.resilience.retry import RetryEvent
    from tradebot.resilience.timings import Histogram

__all__ = ["CONTENT_TYPE", "ORDER_OUTCOMES", "BotMetrics", "reject_reason", "render_prometheus"]

log = logging.getLogger("tradebot.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ORDER_OUTCOMES: tuple[str, ...] = ("placed", "filled", "cancelled", "expired", "rejected", "unknown")
"""Values of the ``outcome`` label of ``tradebot_orders_total``: ``placed`` once the exchange
has the order, then ``filled``/``cancelled``/``expired``; ``rejected`` when it was refused
(never placed); ``unknown`` while a send's outcome is not known (counted as ``placed`` or
``rejected`` as well once it is)."""
_SIDES = ("buy", "sell")
_PLACED_STATUSES = frozenset({"open", "closed", "canceled", "expired"})
_FINAL_OUTCOME = {"closed": "filled", "canceled": "cancelled", "expired": "expired"}

_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_STATUS_VALUE = {"ok": 0, "degraded": 1, "critical": 2}
_TRADING_STATES = ("active", "reducing", "halted")


class BotMetrics:
    """Every metric of one bot. Cheap to call from hot paths; safe to call from anywhere.

    ``readers`` adds metric readers (tests, other exporters). Call :meth:`attach` once the
    context is built: observable metrics read it, and the order and fill reports, quarantines
    and trading-state changes are heard from there on. :meth:`run_loop_monitor` runs as a
    task to measure event-loop lag, :meth:`shutdown` at the end.

    Counters a dashboard alerts on exist from the start at 0 for every label value known at
    start-up (pairs, sides, outcomes, risk rules, healing actions, components, plugins).
    """

    def __init__(self, *, readers: Sequence[MetricReader] = (), service_name: str | None = None) -> None:
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource

        self._Observation = Observation
        self._reader = InMemoryMetricReader()
        all_readers: list[Any] = [self._reader, *readers, *_env_readers()]
        resource = Resource.create(
            {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "tradebot"}
        )
        self.provider = MeterProvider(metric_readers=all_readers, resource=resource)
        meter = self.provider.get_meter("tradebot")
        self.context: BotContext | None = None
        self._attached: list[object] = []  # every exchange attached to, each once
        self._resilient: list[tuple[str, ReportsResilience]] = []  # role, exchange with the capability
        self.loop_lag_s = 0.0
        self._started = time.monotonic()
        self._process: Any = None
        self._orders_seen: dict[str, str] = {}  # client order id -> last status heard (until final)
        self._quarantines: dict[str, int] = {}  # plugin -> times quarantined this run
        self._hooked_host: Any = None
        self._hooked_trading: Any = None

        c = meter.create_counter
        self._orders = c(
            "tradebot.orders",
            description="Orders by pair, side and outcome (placed, filled, "
            "cancelled, expired, rejected, unknown)",
        )
        self._order_rejections = c(
            "tradebot.order.rejections",
            description="Orders the exchange (or the client) refused, by reason class",
        )
        self._fills = c("tradebot.fills", description="Executions received")
        self._fill_volume = c("tradebot.fill.volume", description="Executed base volume")
        self._fees = c("tradebot.fees", description="Fees paid, in the quote currency")
        self._signals = c("tradebot.signals", description="Signals emitted by strategies")
        self._api_errors = c(
            "tradebot.api.errors", description="Exchange API errors by endpoint and error class"
        )
        self._retries = c("tradebot.api.retries", description="Retries of exchange calls")
        self._breaker_transitions = c(
            "tradebot.breaker.transitions", description="Circuit breaker state changes"
        )
        self._notifications = c("tradebot.notifications", description="Notifications by notifier and outcome")
        self._halts = c("tradebot.halts", description="Times trading went HALTED, by source")

        g = meter.create_observable_gauge
        oc = meter.create_observable_counter
        g("tradebot.trading.state", [self._obs_trading_state], description="1 for the current trading state")
        g(
            "tradebot.trading.severity",
            [self._obs_trading_severity],
            description="0 active, 1 reducing, 2 halted",
        )
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
        g(
            "tradebot.plugins",
            [self._obs_plugins],
            description="Plugins by state (loaded, failed, quarantined)",
        )
        oc(
            "tradebot.process.cpu.time",
            [self._obs_cpu],
            unit="s",
            description="CPU seconds used by the process",
        )
        oc("tradebot.api.calls", [self._obs_api_calls], description="Exchange API call attempts by endpoint")
        oc(
            "tradebot.api.failures",
            [self._obs_api_failures],
            description="Exchange calls that failed after retries",
        )
        oc("tradebot.breaker.trips", [self._obs_breaker_trips], description="Times each breaker opened")
        strategy_counts: tuple[tuple[str, Callable[[StrategyStats], float], str], ...] = (
            ("calls", lambda st: st.calls, "Strategy calls"),
            ("timeouts", lambda st: st.timeouts, "Strategy calls cut off by their timeout"),
            ("errors", lambda st: st.errors, "Strategy calls that raised"),
            ("signals", lambda st: st.signals, "Signals from strategies"),
        )
        for field, read, desc in strategy_counts:
            oc(f"tradebot.strategy.{field}", [self._strategy_obs(read)], description=desc)
        oc(
            "tradebot.process.restarts",
            [self._obs_process_restarts],
            description="Bot process starts after the first",
        )
        oc("tradebot.market_events", [self._obs_market_events], description="Market data events received")
        oc(
            "tradebot.risk.rejections",
            [self._obs_risk_rejections],
            description="Signals the risk gate refused, by rule",
        )
        oc(
            "tradebot.healing.attempts",
            [self._healing_obs(lambda c: c.attempts)],
            description="Recovery actions started",
        )
        oc(
            "tradebot.healing.successes",
            [self._healing_obs(lambda c: c.successes)],
            description="Recovery actions that healed",
        )
        oc(
            "tradebot.healing.failures",
            [self._healing_obs(lambda c: c.failures)],
            description="Recovery actions that did not heal",
        )
        oc("tradebot.component.restarts", [self._obs_restarts], description="In-process component restarts")
        oc(
            "tradebot.quarantines",
            [self._obs_quarantines],
            description="Quarantines by plugin (and strategy instance, for a strategy instance's own)",
        )

    # --- wiring ---------------------------------------------------------------------

    def attach(self, context: BotContext) -> None:
        """Read observable metrics from ``context``, listen to its exchanges' breakers and
        retries, its plugin host's order/fill reports and quarantines, and its trading state.

        Safe to call again after the exchange was rebuilt; each exchange is hooked once.
        """
        self.context = context
        context.metrics = self
        from tradebot.core import tracing

        candidates = [
            ("exchange", context.exchange),
            ("market_data", context.extras.get("market_data_source")),
        ]
        for role, exchange in candidates:
            raw = unwrap(exchange) if exchange is not None else None
            if raw is None or any(raw is known for known in self._attached):
                continue
            self._attached.append(raw)
            # an optional capability, checked once here: without it the exchange has no
            # breaker, rate-limit, retry or latency figures
            if isinstance(raw, ReportsResilience):
                self._resilient.append((role, raw))
                raw.add_breaker_listener(self.breaker_transition)
                raw.add_breaker_listener(tracing.breaker_event)
                raw.add_retry_listener(self._on_retry)
            log.debug(
                "metrics attached to %s exchange %s (resilience figures: %s)",
                role,
                type(raw).__name__,
                "yes" if isinstance(raw, ReportsResilience) else "no",
            )

        host = context.plugins
        if host is not None and self._hooked_host is not host:
            self._hooked_host = host
            if host.pm.get_plugin("metrics") is None:
                host.pm.register(self, name="metrics")  # tradebot_order_report / tradebot_fill_report
            host.quarantine_listeners.append(self._on_quarantine)
            for plugin in host.loaded:
                self._quarantines.setdefault(plugin, 0)
            for plugin in host.quarantined:
                self._quarantines[plugin] = max(1, self._quarantines.get(plugin, 0))
        trading = context.trading
        if trading is not None and self._hooked_trading is not trading:
            self._hooked_trading = trading
            trading.listeners.append(self._on_trading_state_change)
        store = context.store
        if store is not None:
            try:  # orders of earlier runs still working: their later reports are not new orders
                for entry in store.non_final_orders():
                    self._orders_seen[entry.client_order_id] = str(entry.status.value)
            except Exception:  # metrics never stop the bot
                log.debug("could not read the working orders", exc_info=True)
        self._seed()

    def _seed(self) -> None:
        """Series a dashboard alerts on, at 0 from the start (Prometheus practice)."""
        ctx = self.context
        if ctx is None:
            return
        pairs = list(ctx.settings.bot.pairs)
        for pair in pairs:
            for side in _SIDES:
                attrs_ = {"pair": pair, "side": side}
                for outcome in ORDER_OUTCOMES:
                    self._orders.add(0, {**attrs_, "outcome": outcome})
                self._fills.add(0, attrs_)
                self._fill_volume.add(0, attrs_)
            self._fees.add(0, {"pair": pair})
        for name, strategy_pairs in self._strategy_pairs().items():
            for pair in strategy_pairs or pairs:
                self._signals.add(0, {"strategy": name, "pair": pair})
        health = ctx.health
        sources = ["operator:cli", "http"]
        if health is not None:
            from tradebot.core.health import check_source

            sources += [check_source(name) for name in health.checks]
        for source in sources:
            self._halts.add(0, {"source": source})

    def _runner(self) -> StrategyRunner | None:
        runner: StrategyRunner | None = (
            self.context.extras.get("strategy_runner") if self.context is not None else None
        )
        return runner

    def _strategy_pairs(self) -> dict[str, tuple[str, ...] | None]:
        runner = self._runner()
        handles = runner.handles if runner is not None else {}
        return {str(name): h.pairs for name, h in handles.items()}

    # --- recording -------------------------------------------------------------------

    def signal(self, strategy: str, pair: str) -> None:
        self._signals.add(1, {"strategy": strategy, "pair": pair})

    def api_error(self, endpoint: str, error: BaseException | str) -> None:
        """An exchange call failed with ``error`` (an exception or its class name)."""
        name = error if isinstance(error, str) else type(error).__name__
        self._api_errors.add(1, {"endpoint": endpoint, "error": name})

    def retry(self, endpoint: str, error: str) -> None:
        self._retries.add(1, {"endpoint": endpoint, "error": error})

    def notification(self, notifier: str, outcome: str) -> None:
        """``outcome``: sent, failed, dropped, deduplicated, rate_limited."""
        self._notifications.add(1, {"notifier": notifier, "outcome": outcome})

    def seed_notifier(self, notifier: str) -> None:
        """A notifier's sent and failed counts exist from the start at 0."""
        for outcome in ("sent", "failed", "dropped"):
            self._notifications.add(0, {"notifier": notifier, "outcome": outcome})

    def breaker_transition(self, transition: BreakerTransition) -> None:
        """Listener for :class:`tradebot.resilience.BreakerTransition`."""
        self._breaker_transitions.add(1, {"breaker": transition.breaker, "to": transition.current.value})

    def _on_retry(self, event: RetryEvent) -> None:
        self.retry(event.endpoint, event.error_type)
        self.api_error(event.endpoint, event.error_type)

    def _on_quarantine(self, plugin: str, _reason: str) -> None:
        self._quarantines[plugin] = self._quarantines.get(plugin, 0) + 1

    def _on_trading_state_change(self, change: TradingStateChange) -> None:
        if change.current.value == "halted":
            self._halts.add(1, {"source": str(change.source)})

    @hookimpl
    def tradebot_order_report(self, order: OrderInfo) -> None:
        """Count what the report says happened to the order (each outcome once per order)."""
        cid = order.client_order_id
        status = str(order.status.value)
        previous = self._orders_seen.get(cid) if cid is not None else None
        if previous == status:
            return
        attrs_ = {"pair": order.pair, "side": str(order.side.value)}
        placed_before = previous in _PLACED_STATUSES
        if status == "rejected":
            self._orders.add(1, {**attrs_, "outcome": "rejected"})
            self._order_rejections.add(1, {**attrs_, "reason": self._reject_reason(cid)})
        elif status == "unknown":
            if not placed_before:
                self._orders.add(1, {**attrs_, "outcome": "unknown"})
        elif status != "pending":
            if not placed_before:
                self._orders.add(1, {**attrs_, "outcome": "placed"})
            final = _FINAL_OUTCOME.get(status)
            if final is not None:
                self._orders.add(1, {**attrs_, "outcome": final})
        if cid is not None:
            if order.status.is_final:
                self._orders_seen.pop(cid, None)
            else:
                self._orders_seen[cid] = (
                    status if status != "unknown" or not placed_before else previous or status
                )

    @hookimpl
    def tradebot_fill_report(self, fill: Fill) -> None:
        attrs_ = {"pair": fill.pair, "side": str(fill.side.value)}
        self._fills.add(1, attrs_)
        self._fill_volume.add(float(fill.volume), attrs_)
        self._fees.add(float(fill.fee), {"pair": fill.pair})

    def _reject_reason(self, cid: str | None) -> str:
        store = self.context.store if self.context is not None else None
        entry = store.get_order(cid) if store is not None and cid is not None else None
        return reject_reason(entry.last_error if entry is not None else None)

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
        """Every metric in the Prometheus text exposition format (version 0.0.4).

        The latency histograms (strategy calls, exchange requests, the private-request
        queue) are kept by their components with a few additions per observation and
        rendered here; they are not exported through OTLP.
        """
        return render_prometheus(self.collect()) + self._render_histograms()

    def _render_histograms(self) -> str:
        lines: list[str] = []
        strategy = list(self._strategy_histograms())
        _histogram_family(lines, "tradebot_strategy_duration_seconds", "Duration of strategy calls", strategy)
        requests: list[tuple[dict[str, str], Any]] = []
        waits: list[tuple[dict[str, str], Any]] = []
        for role, stats in self._resilience():
            requests += _timing_series(stats.request_timings, role)
            waits += _timing_series(stats.queue_timings, role)
        _histogram_family(
            lines,
            "tradebot_exchange_request_duration_seconds",
            "Duration of exchange request attempts by endpoint group and outcome",
            requests,
        )
        _histogram_family(
            lines,
            "tradebot_exchange_queue_wait_seconds",
            "Time private exchange requests waited for their turn",
            waits,
        )
        return "\n".join(lines) + ("\n" if lines else "")

    def _strategy_histograms(self) -> Iterator[tuple[dict[str, str], Any]]:
        from tradebot.core.strategy import DURATION_BUCKETS_S as bounds
        from tradebot.resilience.timings import Histogram

        runner = self._runner()
        for name, st in (runner.stats() if runner is not None else {}).items():
            yield {"strategy": str(name)}, Histogram(tuple(bounds), list(st.buckets), st.total_s, st.calls)

    def shutdown(self) -> None:
        """Flush periodic exporters and stop collection."""
        try:
            self.provider.shutdown()
        except Exception:  # shutting down twice or a failing exporter
            log.debug("metrics provider shutdown failed", exc_info=True)

    # --- observable callbacks (never raise: a broken source yields nothing) --------------

    def _safe(self, fn: Callable[[], Iterable[tuple[float, dict[str, str]]]]) -> list[Observation]:
        try:
            return [self._Observation(value, attrs_) for value, attrs_ in fn()]
        except Exception:  # one bad source must not break /metrics
            log.debug("metric source failed", exc_info=True)
            return []

    def _obs_market_events(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            bus = self.context.bus if self.context else None
            counts: dict[tuple[str, str], int] = {}
            for pair in self.context.settings.bot.pairs if self.context else ():
                counts[("ticker", pair)] = 0
            for key, n in dict(bus.published_by_key if bus is not None else {}).items():
                if isinstance(key, tuple) and len(key) >= 2:
                    k = (str(key[0]), str(key[1]))
                    counts[k] = counts.get(k, 0) + n
            for (kind, pair), n in counts.items():
                yield float(n), {"kind": kind, "pair": pair}

        return self._safe(gen)

    def _obs_risk_rejections(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            gate = self.context.extras.get("risk") if self.context else None
            if gate is None:
                return
            from tradebot.core.risk import RejectReason

            counts = dict(gate.rejections)
            for reason in RejectReason:
                yield float(counts.get(reason, 0)), {"rule": reason.value}

        return self._safe(gen)

    def _healing_obs(
        self, field: Callable[[HealingCounters], dict[str, int]]
    ) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(_o: CallbackOptions) -> list[Observation]:
            def gen() -> Iterator[tuple[float, dict[str, str]]]:
                healer = self.context.healer if self.context else None
                if healer is None:
                    return
                table = dict(field(healer.counters))
                for action in healer.actions:
                    table.setdefault(str(action.name), 0)
                for action, n in table.items():
                    yield float(n), {"action": str(action)}

            return self._safe(gen)

        return callback

    def _obs_restarts(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            supervisor = self.context.supervisor if self.context else None
            if supervisor is None:
                return
            for child in supervisor.status():
                yield float(child.restarts), {"component": child.name}

        return self._safe(gen)

    def _obs_quarantines(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for plugin, n in list(self._quarantines.items()):
                yield float(n), {"plugin": plugin, "instance": ""}
            runner = self._runner()
            for name, handle in (runner.handles if runner is not None else {}).items():
                quarantined = handle.quarantined is not None
                yield (1.0 if quarantined else 0.0), {"plugin": str(handle.plugin), "instance": str(name)}

        return self._safe(gen)

    def _obs_plugins(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            host = self.context.plugins if self.context else None
            if host is None:
                return
            quarantined = host.quarantined
            for plugin in host.loaded:
                yield (0.0 if plugin in quarantined else 1.0), {"plugin": plugin, "state": "loaded"}
                yield (1.0 if plugin in quarantined else 0.0), {"plugin": plugin, "state": "quarantined"}
            for plugin in host.report.failed:
                yield 1.0, {"plugin": plugin, "state": "failed"}

        return self._safe(gen)

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

    def _portfolio_value(self, read: Callable[[Portfolio], Any]) -> Iterator[tuple[float, dict[str, str]]]:
        portfolio: Portfolio | None = self.context.portfolio if self.context else None
        if portfolio is None:
            return
        value = read(portfolio)
        if value is not None:
            yield float(value), {}

    def _obs_equity(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._portfolio_value(lambda p: p.equity()))

    def _obs_realized(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._portfolio_value(lambda p: p.realized_pnl))

    def _obs_unrealized(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._portfolio_value(lambda p: p.unrealized_pnl()))

    def _obs_positions(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            portfolio = self.context.portfolio if self.context else None
            if portfolio is None:
                return
            positions = dict(portfolio.positions())
            for pair in self.context.settings.bot.pairs if self.context else ():
                if pair not in positions:
                    yield 0.0, {"pair": pair}  # flat
            for pair, pos in positions.items():
                yield float(pos.volume), {"pair": pair}

        return self._safe(gen)

    def _resilience(self) -> Iterator[tuple[str, ResilienceStats]]:
        """(role, snapshot) of every attached exchange with the resilience capability."""
        for role, exchange in self._resilient:
            try:
                stats = exchange.resilience_stats()
            except Exception:  # one exchange's broken figures must not hide the others'
                log.debug("resilience figures of the %s exchange failed", role, exc_info=True)
                continue
            yield role, stats

    def _obs_breakers(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for role, stats in self._resilience():
                for breaker in stats.breakers:
                    value = float(_BREAKER_VALUE.get(breaker.state, -1))
                    yield value, {"breaker": breaker.name, "role": role}

        return self._safe(gen)

    def _obs_breaker_trips(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for role, stats in self._resilience():
                for breaker in stats.breakers:
                    yield float(breaker.trips), {"breaker": breaker.name, "role": role}

        return self._safe(gen)

    def _obs_rate_fill(self, _o: CallbackOptions) -> list[Observation]:
        def gen() -> Iterator[tuple[float, dict[str, str]]]:
            for role, stats in self._resilience():
                if stats.request_limit is not None:
                    yield stats.request_limit.fill, {"limiter": "rest", "role": role}
                for pair, level in stats.trading_limits.items():
                    yield level.fill, {"limiter": f"trading:{pair}", "role": role}

        return self._safe(gen)

    def _endpoint_counts(
        self, field: Callable[[EndpointStats], int]
    ) -> Iterator[tuple[float, dict[str, str]]]:
        for role, stats in self._resilience():
            for endpoint, counts in stats.endpoints.items():
                yield float(field(counts)), {"endpoint": endpoint, "role": role}

    def _obs_api_calls(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._endpoint_counts(lambda c: c.attempts))

    def _obs_api_failures(self, _o: CallbackOptions) -> list[Observation]:
        return self._safe(lambda: self._endpoint_counts(lambda c: c.failures))

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
            for sub in bus.stats().subscribers:
                yield float(sub.depth), {"queue": str(sub.name)}

        return self._safe(gen)

    def _strategy_obs(
        self, field: Callable[[StrategyStats], float]
    ) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(_o: CallbackOptions) -> list[Observation]:
            def gen() -> Iterator[tuple[float, dict[str, str]]]:
                runner = self._runner()
                for name, st in (runner.stats() if runner is not None else {}).items():
                    yield float(field(st)), {"strategy": str(name)}

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


def reject_reason(last_error: str | None) -> str:
    """The reason class of a refused order from its journal entry's ``last_error``.

    ``InsufficientFunds``, ``InvalidOrder``, ``CircuitOpen`` ... for a refusal by the exchange
    or the client, ``not_found`` (looked up after the send, not there), ``never_sent``,
    ``not_arrived`` (every send attempt lost), ``other``.
    """
    text = last_error or ""
    match = re.match(r"rejected by the exchange \(([A-Za-z_][A-Za-z0-9_]*)\)", text)
    if match:
        return match.group(1)
    if "never sent" in text:
        return "never_sent"
    if "not found on the exchange" in text:
        return "not_found"
    if "none arrived" in text:
        return "not_arrived"
    return "other"


def _timing_series(series: Iterable[TimingSeries], role: str) -> list[tuple[dict[str, str], Histogram]]:
    return [({**s.labels, "role": role}, s.histogram) for s in series]


def _histogram_family(
    lines: list[str], name: str, help_text: str, series: list[tuple[dict[str, str], Any]]
) -> None:
    """Append one Prometheus histogram family (``bounds``/``buckets``/``sum``/``count`` per series)."""
    if not series:
        return
    lines.append(f"# HELP {name} {_escape(help_text)}")
    lines.append(f"# TYPE {name} histogram")
    for labels, hist in series:
        cumulative = 0
        for bound, count in zip(hist.bounds, hist.buckets, strict=False):
            cumulative += count
            lines.append(f"{name}_bucket{_labels(labels, ('le', _num(float(bound))))} {cumulative}")
        lines.append(f"{name}_bucket{_labels(labels, ('le', '+Inf'))} {hist.count}")
        lines.append(f"{name}_sum{_labels(labels)} {_num(float(hist.sum))}")
        lines.append(f"{name}_count{_labels(labels)} {hist.count}")


def check_statuses(health: HealthMonitor | None) -> dict[str, str]:
    """Check name -> ``ok``/``degraded``/``critical`` from a health monitor's latest report."""
    if health is None:
        return {}
    report = health.last_report or health.report()
    return {str(name): result.status.value for name, result in report.results.items()}


def _env_readers() -> list[Any]:
    """Periodic exporters chosen by ``OTEL_METRICS_EXPORTER`` (``none`` by default)."""
    names = [
        n.strip().lower() for n in os.environ.get("OTEL_METRICS_EXPORTER", "none").split(",") if n.strip()
    ]
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


def render_prometheus(data: MetricsData | None) -> str:
    """Render OpenTelemetry ``MetricsData`` as Prometheus text (counters get ``_total``)."""
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    lines: list[str] = []
    seen: set[str] = set()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                name = _metric_name(metric.name, metric.unit)
                if name in seen:
                    continue
                seen.add(name)
                help_text = _escape(metric.description or metric.name)
                points: list[Any] = list(metric.data.data_points)
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
                            lines.append(
                                f"{name}_bucket{_labels(p.attributes, ('le', _num(float(bound))))} {cumulative}"
                            )
                        lines.append(f"{name}_bucket{_labels(p.attributes, ('le', '+Inf'))} {p.count}")
                        lines.append(f"{name}_sum{_labels(p.attributes)} {_num(p.sum)}")
                        lines.append(f"{name}_count{_labels(p.attributes)} {p.count}")
    return "\n".join(lines) + "\n"
