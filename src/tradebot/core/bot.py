"""The bot assembly: builds the runtime from settings and plugins, runs it, stops it cleanly.

Data flow (DESIGN.md): market data -> event bus -> strategies -> signals -> risk gate ->
order executor -> exchange -> fills -> portfolio -> checks/HALT triggers -> trading state
-> position policy and notifiers. Every long-running part is a child of the in-process
supervisor when one is available, else a task owned here; every task is awaited or
cancelled on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import attrs

from tradebot.core.bootstrap import Prepared
from tradebot.core.clock import SystemClock
from tradebot.core.context import BotContext
from tradebot.core.errors import AuthError, ConfigError, StateError, TradebotError
from tradebot.core.models import Alert, AlertLevel, Fill, OrderInfo, OrderStatus, Signal, Ticker, TradingStateChange
from tradebot.core.risk import RiskRejection
from tradebot.core.secrets import load_secrets
from tradebot.core.trading_state import TradingStateMachine

__all__ = ["Bot", "RunOptions", "RunSummary"]

log = logging.getLogger("tradebot.bot")


@attrs.frozen
class RunOptions:
    """How ``tradebot run`` was asked to run."""

    paper: bool = False
    duration_s: float | None = None
    infinite: bool = False
    status_line: bool = False


@attrs.define
class RunSummary:
    """What a run did, printed at the end."""

    duration_s: float = 0.0
    ticks: int = 0
    signals: int = 0
    orders_placed: int = 0
    orders_rejected: int = 0
    """Signals the risk gate refused plus orders refused when sent (``refused_when_sent``)."""
    refused_when_sent: int = 0
    """Orders refused when sent (by the exchange, or by the client before sending, e.g. an
    open circuit): journalled as not placed."""
    fills: int = 0
    errors: int = 0
    realized_pnl: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    equity: Decimal | None = None
    trading_state: str = "active"
    trading_reason: str = ""
    stop_reason: str = ""
    exit_code: int = 0
    started: bool = False
    """Whether start-up completed (a summary of a run that never started says only why)."""
    halts: list[str] = attrs.Factory(list)
    """Each HALT of the run: time, source and reason."""
    quarantines: list[str] = attrs.Factory(list)
    """Each quarantine of the run (plugin or strategy instance) and why."""

    def render(self) -> str:
        if not self.started:
            return f"the bot did not start: {self.stop_reason or 'start-up failed'}\n  nothing was traded"
        rejected = f"  rejected {self.orders_rejected}"
        if self.refused_when_sent:
            rejected += f" ({self.refused_when_sent} refused when sent)"
        lines = [
            f"run finished after {self.duration_s:.1f}s ({self.stop_reason})",
            f"  ticks {self.ticks}  signals {self.signals}  orders placed {self.orders_placed}"
            f"{rejected}  fills {self.fills}  errors {self.errors}",
            f"  realised PnL {self.realized_pnl:.2f}  unrealised PnL {self.unrealized_pnl:.2f}"
            + (f"  equity {self.equity:.2f}" if self.equity is not None else ""),
            f"  trading state {self.trading_state}"
            + (f": {self.trading_reason}" if self.trading_state != "active" and self.trading_reason else ""),
        ]
        if self.trading_state != "active":
            lines.append("  (kept across restarts; `tradebot resume` trades again)")
        lines.extend(f"  HALT {h}" for h in self.halts)
        lines.extend(f"  quarantined: {q}" for q in self.quarantines)
        return "\n".join(lines)


class Bot:
    """One bot process: exchange, market data, strategies, executor, monitor, healing."""

    def __init__(self, prepared: Prepared, options: RunOptions) -> None:
        self.prepared = prepared
        self.settings = prepared.settings
        self.host = prepared.host
        self.options = options
        self.clock = SystemClock()
        self.summary = RunSummary()
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._exit_code = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._status_task: asyncio.Task[None] | None = None
        self._control: Any = None
        self.context: BotContext | None = None

    # --- control ----------------------------------------------------------------------

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Ask the bot to stop gracefully (signals, duration, escalation)."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._exit_code = exit_code
            log.info("stopping: %s", reason)
            self._stop.set()

    # --- run --------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Start everything, trade until asked to stop, then shut down cleanly."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
        try:
            async with AsyncExitStack() as stack:
                try:
                    await self._start(stack)
                except (TradebotError, OSError) as exc:
                    # everything started so far is stopped before the stack closes under it
                    log.critical("start-up failed: %s", exc)
                    self._stop_reason = f"start-up failed: {exc}"
                    self._exit_code = 1
                    self._stop.set()  # nothing may replace this reason and exit code now
                    await self._shutdown()
                else:
                    self.summary.started = True
                    if self.options.duration_s is not None and not self.options.infinite:
                        loop.call_later(
                            self.options.duration_s, self.request_stop, f"duration {self.options.duration_s:g}s reached"
                        )
                    await self._stop.wait()
                    await self._shutdown()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        self.summary.duration_s = time.monotonic() - started
        self.summary.stop_reason = self._stop_reason
        self.summary.exit_code = self._exit_code
        return self.summary

    async def _start(self, stack: AsyncExitStack) -> None:
        from tradebot.core.store import StateStore

        from tradebot.core.control import ControlWatcher

        settings = self.settings
        state_dir = settings.state_path
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {state_dir}: {exc.strerror or exc}") from None
        # one bot per state directory, decided before anything touches the state
        control = ControlWatcher(state_dir, None)
        await asyncio.to_thread(control.acquire)
        stack.callback(control.release)
        self._control = control
        secrets = load_secrets(settings.secrets_path)
        store = StateStore(
            state_dir, backup_count=settings.backup.count, backup_interval_s=settings.backup.interval_s
        )
        stack.callback(store.close)
        if store.restored is not None:
            log.warning("%s", store.restored.message)
        store.incr_counter("starts")
        from tradebot.core.history import record_run_start

        record_run_start(store, self.clock.now())  # `tradebot report` shows each run
        trading = TradingStateMachine(store=store, clock=self.clock)
        trading.restore()
        ctx = BotContext(
            settings=settings,
            plugins=self.host,
            clock=self.clock,
            state_dir=state_dir,
            store=store,
            trading=trading,
            extras={"secrets": secrets, "bot": self, "run_options": self.options},
        )
        self.context = ctx
        trading.listeners.append(self._on_trading_state_change)
        from tradebot.core.supervisor import start_supervision

        await start_supervision(ctx, self.request_stop, infinite=self.options.infinite)

        exchange = await self._start_exchange(ctx, stack)
        ctx.exchange = exchange
        await self._watch_critical_plugins(ctx, stack)
        await self._start_engine(ctx, stack)
        await self._start_optional(ctx, stack)
        await self.host.configure(settings, ctx, required=settings.plugins.required)  # [plugins.<name>] tables
        await self.host.broadcast("tradebot_startup", context=ctx)
        if self.options.status_line:
            task = asyncio.ensure_future(self._status_line(ctx))
            self._status_task = task
        log.info(
            "trading %s on %s; state %s", ", ".join(settings.bot.pairs), self._exchange_name, trading.state.value
        )

    @property
    def _exchange_name(self) -> str:
        return "paper" if self.options.paper else self.settings.bot.exchange

    async def _start_exchange(self, ctx: BotContext, stack: AsyncExitStack) -> Any:
        """The configured exchange; for paper trading, its market-data source first."""
        name = self._exchange_name
        if name == "paper":
            source = await self._market_data_source(ctx, stack)
            ctx.extras["market_data_source"] = source
        config = self.settings.plugin_config("exchange", name)
        exchange = self.host.build("exchange", name, config, ctx)
        await exchange.start()
        stack.push_async_callback(_close_part, exchange, f"the exchange ({name})")
        return exchange

    async def _watch_critical_plugins(self, ctx: BotContext, stack: AsyncExitStack) -> None:
        """The bot cannot trade without its exchange: a quarantine of it is healed or escalated."""
        from tradebot.core.healing import EXIT_ESCALATE
        from tradebot.core.quarantine import CriticalPart, CriticalPluginWatch

        critical: dict[str, CriticalPart] = {}
        parts = (
            ("the exchange", ctx.exchange, "the bot cannot place, cancel or look up orders"),
            ("the market data source", ctx.extras.get("market_data_source"), "the paper exchange gets no prices"),
        )
        for role, part, consequence in parts:
            plugin = getattr(part, "plugin_name", None)  # a guarded part names the plugin behind it
            if isinstance(plugin, str) and plugin not in critical:
                critical[plugin] = CriticalPart(role, part, consequence=consequence)

        def stop(reason: str) -> None:
            if ctx.supervisor is not None:
                ctx.supervisor.escalate(reason)  # with the configured escalation exit code
            else:
                self.request_stop(reason, exit_code=EXIT_ESCALATE)

        async def alert(a: Alert) -> None:
            await self.host.broadcast("tradebot_alert", alert=a)

        watch = CriticalPluginWatch(
            self.host, critical, healer=lambda: ctx.healer, stop=stop, alert=alert, active=lambda: not self._stop.is_set()
        )
        watch.attach()
        ctx.extras["critical_plugins"] = watch
        stack.push_async_callback(watch.close)

    async def _market_data_source(self, ctx: BotContext, stack: AsyncExitStack) -> Any:
        """Public market data for the paper exchange: the built-in simulator, or Kraken."""
        kraken_cfg = self.settings.plugin_config("exchange", "kraken")
        if kraken_cfg is None:
            from tradebot.exchanges.kraken.config import KrakenConfig

            kraken_cfg = KrakenConfig()
        if self.settings.bot.market_data == "simulator":
            from tradebot.exchanges.simulator import run_simulator

            sim = await stack.enter_async_context(run_simulator(host="127.0.0.1", port=0))
            ctx.extras["simulator"] = sim
            kraken_cfg = attrs.evolve(kraken_cfg, base_url=sim.base_url, ws_url=sim.ws_url)
            log.info("market data from the built-in simulator at %s", sim.base_url)
        # market data is public: the paper source never holds keys
        public_ctx = attrs.evolve(ctx, extras={k: v for k, v in ctx.extras.items() if k != "secrets"})
        source = self.host.build("exchange", "kraken", kraken_cfg, public_ctx)
        await source.start()
        stack.push_async_callback(_close_part, source, "the market data source")
        return source

    async def _start_engine(self, ctx: BotContext, stack: AsyncExitStack) -> None:
        from tradebot.core.bus import EventBus
        from tradebot.core.executor import OrderExecutor
        from tradebot.core.portfolio import Portfolio
        from tradebot.core.risk import RiskGate
        from tradebot.core.strategy import StrategyRunner

        settings = self.settings
        bus = EventBus()
        ctx.bus = bus
        portfolio = Portfolio(ctx.store, quote=settings.bot.quote, clock=self.clock)
        ctx.portfolio = portfolio
        exchange = ctx.exchange
        assert exchange is not None  # _start() sets it, from the started exchange, just before this
        try:
            portfolio.sync_cash(await exchange.balances())
        except AuthError:
            raise  # no API key, or one the exchange refuses: no order could be placed, so do not start
        except TradebotError as exc:
            log.warning("could not read balances at start (%s); cash stays as last recorded", exc)
        executor = OrderExecutor(
            exchange,
            ctx.store,
            portfolio,
            clock=self.clock,
            on_order=self._on_order,
            on_fill=self._on_fill,
        )
        ctx.executor = executor
        risk = RiskGate(
            settings.risk, ctx.trading, portfolio, pending_exposure=executor.pending_exposure, clock=self.clock
        )
        ctx.extras["risk"] = risk
        report = await executor.reconcile()
        log.info("order journal reconciled with the exchange: %s", report)
        runner = StrategyRunner(
            bus=bus,
            sink=self._on_signals,
            host=self.host,
            clock=self.clock,
            trace_every=int(_env_number("TRADEBOT_TRACE_STRATEGY_EVERY", 100, int, minimum=1)),
            trace_interval_s=_env_number("TRADEBOT_TRACE_STRATEGY_INTERVAL_S", 0.1, float, minimum=0.0),
        )
        ctx.extras["strategy_runner"] = runner
        self._add_strategies(ctx, runner)
        self._spawn("market-data", lambda: self._pump_market_data(ctx))
        self._spawn("executor", executor.run)
        self._spawn("strategies", runner.run)
        self._spawn("equity", lambda: self._snapshot_equity(ctx))
        self._spawn("backups", ctx.store.run_backups)

    def _add_strategies(self, ctx: BotContext, runner: Any) -> None:
        from tradebot.core.strategy import StrategyContext

        for inst_name, inst in self.settings.strategies.items():
            if not inst.enabled:
                continue
            comp = self.host.component("strategy", inst.plugin)
            config = self.settings.plugin_config("strategy-instance", inst_name)
            pairs = inst.pairs or self.settings.bot.pairs
            sctx = StrategyContext(name=inst_name, pairs=pairs, clock=self.clock)
            strategy = self.host.call(comp.plugin, "factory", comp.spec.factory, config, sctx)
            runner.add(inst_name, strategy, instance=inst, plugin=comp.plugin, pairs=pairs)

    async def _start_optional(self, ctx: BotContext, stack: AsyncExitStack) -> None:
        """Monitor and HALT triggers, metrics, notifications and the HTTP server."""
        from tradebot.core import tracing
        from tradebot.core.health import HealthMonitor
        from tradebot.core.http_server import HttpServer
        from tradebot.core.metrics import BotMetrics
        from tradebot.core.notify import install_notifications

        monitor = HealthMonitor.from_context(ctx)
        ctx.health = monitor
        self._spawn("monitor", monitor.run)

        from tradebot.core.policy import PolicyRunner

        policies = PolicyRunner.from_context(ctx)
        ctx.extras["halt_policy"] = policies
        ctx.extras["risk"].trading = policies.risk_view()  # `reduce` lets reducing orders through while HALTED
        policies.outcome_listeners.append(self._on_policy_outcome)
        self._spawn("halt-policy", policies.run)
        control = self._control  # holds the bot lock taken first thing in _start
        control.trading = ctx.trading
        self._spawn("control", control.run)

        metrics = BotMetrics()
        metrics.attach(ctx)
        stack.callback(metrics.shutdown)
        self._spawn("loop-lag", metrics.run_loop_monitor)
        tracing.install_retry_events()

        dispatcher = install_notifications(ctx)
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)

        http = self.settings.section("http")
        if http.enabled:
            server = HttpServer(ctx, http)
            try:
                port = await server.start()
            except OSError as exc:
                log.error("HTTP server not started on %s:%s: %s; trading goes on without it", http.host, http.port, exc)
            else:
                stack.push_async_callback(server.stop)
                log.info("HTTP health/control server on http://%s:%d", http.host, port)

    def _spawn(self, name: str, start: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any] | None:
        """Run a long-lived part: as a supervised child (restarted, healed) when supervision is on."""
        supervisor = self.context.supervisor if self.context is not None else None
        if supervisor is not None:
            from tradebot.core.supervisor import ChildSpec

            supervisor.add(ChildSpec(name, start))
            return None
        task = asyncio.ensure_future(start())
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        if exc is not None:
            self.summary.errors += 1
            log.error("component %s failed: %s: %s", task.get_name(), type(exc).__name__, exc, exc_info=exc)
            self.request_stop(f"component {task.get_name()} failed: {exc}", exit_code=1)

    # --- data flow --------------------------------------------------------------------

    async def _pump_market_data(self, ctx: BotContext) -> None:
        from tradebot.core import tracing

        pairs = list(self.settings.bot.pairs)
        exchange = ctx.exchange
        assert exchange is not None  # this task is spawned by _start_engine(), after the exchange started
        async for event in exchange.market_data(pairs):
            self.summary.ticks += 1
            with tracing.market_event(event):
                if isinstance(event, Ticker):
                    ctx.portfolio.mark(event)
                if ctx.health is not None:
                    ctx.health.on_market_event(event)
                await ctx.bus.publish(event, trace=tracing.capture())

    async def _on_signals(self, signals: list[Signal]) -> None:
        from tradebot.core import tracing

        ctx = self.context
        assert ctx is not None
        for sig in signals:
            self.summary.signals += 1
            if ctx.metrics is not None:
                ctx.metrics.signal(sig.strategy, sig.pair)
            try:
                with tracing.span("risk_gate", pair=sig.pair, side=sig.side.value, strategy=sig.strategy):
                    request = ctx.extras["risk"].approve(sig)
            except RiskRejection:
                self.summary.orders_rejected += 1
                continue
            try:
                order = await ctx.executor.submit(request, strategy=sig.strategy, reason=sig.reason)
            except TradebotError as exc:
                self.summary.errors += 1
                if ctx.health is not None:
                    ctx.health.record_error(exc)
                log.warning("order for %s %s %s failed: %s", sig.side, sig.volume, sig.pair, exc)
            else:
                if order.status is OrderStatus.REJECTED:  # refused when sent: not placed
                    self.summary.orders_rejected += 1
                    self.summary.refused_when_sent += 1
                else:
                    self.summary.orders_placed += 1

    def _on_policy_outcome(self, outcome: Any) -> None:
        """A completed ``close`` HALT is the end of trading: every position is flat."""
        if outcome.policy == "close" and outcome.done:
            self.request_stop(f"HALT with the close policy completed: {outcome.message}", exit_code=0)

    async def _snapshot_equity(self, ctx: BotContext, every_s: float = 5.0) -> None:
        """Record equity regularly: drawdown is measured from these snapshots."""
        while True:
            await self.clock.sleep(every_s)
            await asyncio.to_thread(ctx.portfolio.snapshot_equity)

    async def _on_order(self, order: OrderInfo) -> None:
        await self.host.broadcast("tradebot_order_report", order=order)

    async def _on_fill(self, fill: Fill) -> None:
        self.summary.fills += 1
        await self.host.broadcast("tradebot_fill_report", fill=fill)

    async def _on_trading_state_change(self, change: TradingStateChange) -> None:
        await self.host.broadcast("tradebot_trading_state_changed", change=change)
        level = AlertLevel.INFO if change.current.value == "active" else AlertLevel.CRITICAL
        await self.host.broadcast(
            "tradebot_alert",
            alert=Alert(
                level=level,
                title=f"trading {change.current.value.upper()}",
                message=f"{change.previous.value} -> {change.current.value}: {change.reason} (by {change.source})",
                source=change.source,
                key=f"trading-state:{change.current.value}",
            ),
        )

    def status_text(self, ctx: BotContext) -> str:
        """One line: pairs, PnL, orders, health, trading state."""
        marks = []
        for pair in self.settings.bot.pairs:
            price = ctx.portfolio.mark_price(pair) if ctx.portfolio is not None else None
            marks.append(f"{pair} {price:.2f}" if price is not None else f"{pair} -")
        pnl = ctx.portfolio.realized_pnl + ctx.portfolio.unrealized_pnl() if ctx.portfolio is not None else Decimal(0)
        report = ctx.health.last_report if ctx.health is not None else None
        health = report.status.value if report is not None else "starting"
        s = self.summary
        return (
            f"{' | '.join(marks)} | PnL {pnl:+.2f} | orders {s.orders_placed} fills {s.fills}"
            f" | health {health} | {ctx.trading.state.value.upper()}"
        )

    async def _status_line(self, ctx: BotContext, every_s: float = 1.0) -> None:
        """A live status line on a terminal, rewritten in place every second."""
        import sys

        class _ClearStatus(logging.Filter):
            # a log line replaces the status line; the next refresh draws it again
            def filter(self, record: logging.LogRecord) -> bool:
                sys.stderr.write("\r\x1b[K")
                return True

        clear = _ClearStatus()
        handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is sys.stderr]
        for handler in handlers:
            handler.addFilter(clear)
        try:
            while True:
                sys.stderr.write("\r\x1b[K" + self.status_text(ctx))
                sys.stderr.flush()
                await asyncio.sleep(every_s)
        finally:
            for handler in handlers:
                handler.removeFilter(clear)
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    # --- shutdown ---------------------------------------------------------------------

    async def _shutdown(self) -> None:
        ctx = self.context
        if ctx is not None and "critical_plugins" in ctx.extras:
            await ctx.extras["critical_plugins"].close()  # a quarantine while stopping is not healed
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._status_task
        from tradebot.core import sdnotify

        sdnotify.stopping()
        if ctx is not None and ctx.supervisor is not None:
            await ctx.supervisor.stop()  # children in reverse start order, bounded
        for task in reversed(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        if ctx is not None:
            await self.host.broadcast("tradebot_shutdown", context=ctx, reason=self._stop_reason)
            self._fill_summary(ctx)

    def _fill_summary(self, ctx: BotContext) -> None:
        s = self.summary
        s.halts = [
            f"{c.time:%Y-%m-%d %H:%M:%S} by {c.source}: {c.reason}" for c in ctx.trading.history
            if c.current.value == "halted"
        ]
        watch = ctx.extras.get("critical_plugins")
        s.quarantines = [f"plugin {p}: {why}" for p, why in getattr(watch, "quarantines", [])]
        runner = ctx.extras.get("strategy_runner")
        s.quarantines += [f"strategy {n}: {why}" for n, why in (getattr(runner, "quarantined", None) or {}).items()]
        s.trading_state = ctx.trading.state.value
        s.trading_reason = f"{ctx.trading.reason} (by {ctx.trading.source})"
        if ctx.portfolio is not None:
            s.realized_pnl = ctx.portfolio.realized_pnl
            s.unrealized_pnl = ctx.portfolio.unrealized_pnl()
            s.equity = ctx.portfolio.equity()


async def _close_part(part: Any, what: str) -> None:
    """Close a started plugin part at shutdown, even a quarantined one; a failure is logged.

    The host refuses every call to a quarantined plugin, but its sessions and files must
    still be let go of, so ``close`` is called on the object behind the guard. A part that
    fails to close does not keep the others from closing.
    """
    from tradebot.core.errors import describe
    from tradebot.core.plugins import unwrap

    try:
        await unwrap(part).close()
    except Exception as exc:  # noqa: BLE001 - shutdown goes on; the failure is reported
        log.error("closing %s failed: %s: %s", what, type(exc).__name__, describe(exc), exc_info=exc)


def run_bot(prepared: Prepared, options: RunOptions) -> RunSummary:
    """Run a bot to completion in a fresh event loop (uvloop where installed, see :mod:`tradebot.core.loop`)."""
    from tradebot.core import loop

    log.info("event loop: %s", loop.loop_name())
    return loop.run(Bot(prepared, options).run())


def _env_number(name: str, default: float, cast: Callable[[str], float], *, minimum: float) -> float:
    """A numeric setting from the environment; :class:`ConfigError` naming it when it is bad."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise ConfigError(f"{name} must be {kind} (got {raw!r})") from None
    if not value >= minimum:
        raise ConfigError(f"{name} must be >= {minimum:g} (got {raw!r})")
    return value
