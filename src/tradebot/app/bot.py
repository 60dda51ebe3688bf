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
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from tradebot.app.bootstrap import Prepared
from tradebot.core.clock import SystemClock
from tradebot.core.context import BotContext
from tradebot.core.errors import AuthError, ConfigError, StateError, TradebotError
from tradebot.core.models import (
    Alert,
    AlertLevel,
    Fill,
    OrderInfo,
    OrderStatus,
    Signal,
    Ticker,
    TradingStateChange,
)
from tradebot.core.risk import RiskRejection
from tradebot.core.secrets import load_secrets
from tradebot.core.trading_state import TradingStateMachine

if TYPE_CHECKING:
    from tradebot.core.paper_trading import PaperPlan

__all__ = ["Bot", "RunOptions", "RunSummary"]

log = logging.getLogger("tradebot.bot")

BALANCE_CHECK_KEY = "startup.balance_check"
"""Where the start-up comparison of the bot's cash and positions with the exchange's
balances is kept (JSON: ok, problems, unexplained, cash, positions, exchange)."""


@attrs.frozen
class RunOptions:
    """How ``tradebot run`` was asked to run."""

    paper: bool = False
    duration_s: float | None = None
    infinite: bool = False
    status_line: bool = False
    hard_exit: bool = False
    """The bot owns its process (``tradebot run``): a stop that has not ended within the grace
    period plus :data:`HARD_EXIT_MARGIN_S` ends the process with ``os._exit`` and the stop's
    exit code, whatever task or thread holds on."""


CLEANUP_S = 1.5
"""After the grace period for the children, how long closing the exchange, the HTTP server
and the state store may take."""
HARD_EXIT_MARGIN_S = CLEANUP_S + 1.5
"""How long after the grace period a process that has not ended is ended by force."""
RECORD_WAIT_S = 0.5
"""How long a stop waits for the state store to take the record of the stop."""
STOP_BOUND_S = HARD_EXIT_MARGIN_S + RECORD_WAIT_S
"""Every stop ends the process within ``[supervisor] stop_grace_s`` plus this."""


@attrs.define
class RunSummary:
    """What a run did, printed at the end.

    Counts (ticks, signals, orders, fills, errors) and ``realized_pnl``/``fees_paid`` are
    for this run; the ``lifetime_*`` figures and ``starting_cash`` are since the state was
    created. ``open_positions`` is what the bot still holds at the end (pair -> volume).
    """

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
    exchange_errors: int = 0
    """Exchange calls that failed during this run (orders, lookups, balances ...)."""
    realized_pnl: Decimal = Decimal(0)
    """Realised PnL (net of fees) of this run."""
    fees_paid: Decimal = Decimal(0)
    """Fees of this run's fills."""
    unrealized_pnl: Decimal = Decimal(0)
    equity: Decimal | None = None
    starting_cash: Decimal | None = None
    """The cash the state was created with."""
    lifetime_realized_pnl: Decimal = Decimal(0)
    lifetime_fees_paid: Decimal = Decimal(0)
    open_positions: dict[str, Decimal] = attrs.Factory(dict)
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
    left_behind: list[str] = attrs.Factory(list)
    """Tasks that had not ended when the stop's grace period was over (logged by name)."""
    _realized_at_start: Decimal | None = attrs.field(default=None, repr=False)
    _fees_at_start: Decimal = attrs.field(default=Decimal(0), repr=False)

    def at_start(self, portfolio: Any) -> None:
        """Remember the lifetime figures at start-up, so the end can tell this run's share."""
        self._realized_at_start = portfolio.realized_pnl
        self._fees_at_start = portfolio.fees_paid
        self.starting_cash = portfolio.starting_cash

    def at_end(self, portfolio: Any) -> None:
        """Take this run's and the lifetime figures from the portfolio."""
        self.lifetime_realized_pnl = portfolio.realized_pnl
        self.lifetime_fees_paid = portfolio.fees_paid
        start = self._realized_at_start if self._realized_at_start is not None else portfolio.realized_pnl
        self.realized_pnl = portfolio.realized_pnl - start
        self.fees_paid = (
            portfolio.fees_paid - self._fees_at_start if self._realized_at_start is not None else Decimal(0)
        )
        self.unrealized_pnl = portfolio.unrealized_pnl()
        self.equity = portfolio.equity()
        self.starting_cash = portfolio.starting_cash
        self.open_positions = {pair: pos.volume for pair, pos in sorted(portfolio.positions().items())}

    dust: dict[str, Decimal] = attrs.Factory(dict)
    """Positions below their pair's minimum order at the end: they cannot be traded."""

    def render(self) -> str:
        """The summary as printed at the end of a run; a secret an error quoted never shows."""
        from tradebot.core.secrets import redact

        return redact(self._render())

    def _render(self) -> str:
        if not self.started:
            text = f"the bot did not start: {self.stop_reason or 'start-up failed'}\n  nothing was traded"
            if self.left_behind:
                text += f"\n  not stopped within the grace period: {', '.join(self.left_behind)}"
            return text
        rejected = f"  rejected {self.orders_rejected}"
        if self.refused_when_sent:
            rejected += f" ({self.refused_when_sent} refused when sent)"
        errors = f"  errors {self.errors + self.exchange_errors}"
        if self.exchange_errors:
            errors += f" ({self.exchange_errors} failed exchange calls)"
        lines = [
            f"run finished after {self.duration_s:.1f}s ({self.stop_reason})",
            f"  this run: ticks {self.ticks}  signals {self.signals}  orders placed {self.orders_placed}"
            f"{rejected}  fills {self.fills}{errors}",
            f"  this run: realised PnL {self.realized_pnl:.2f}  fees paid {self.fees_paid:.2f}",
            "  since the state was created:"
            + (f" starting cash {self.starting_cash:.2f}" if self.starting_cash is not None else "")
            + f"  realised PnL {self.lifetime_realized_pnl:.2f}  fees paid {self.lifetime_fees_paid:.2f}",
            f"  now: unrealised PnL {self.unrealized_pnl:.2f}"
            + (f"  equity {self.equity:.2f}" if self.equity is not None else ""),
            "  positions left open: "
            + (", ".join(f"{pair} {volume}" for pair, volume in self.open_positions.items()) or "none"),
            f"  trading state {self.trading_state}"
            + (f": {self.trading_reason}" if self.trading_state != "active" and self.trading_reason else ""),
        ]
        if self.dust:
            shown = ", ".join(f"{pair} {volume}" for pair, volume in sorted(self.dust.items()))
            lines.append(f"  dust (below the pair's minimum order, cannot be traded): {shown}")
        if self.trading_state != "active":
            lines.append("  (kept across restarts; `tradebot resume` trades again)")
        lines.extend(f"  HALT {h}" for h in self.halts)
        lines.extend(f"  quarantined: {q}" for q in self.quarantines)
        if self.left_behind:
            lines.append(f"  not stopped within the grace period: {', '.join(self.left_behind)}")
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
        self._stop_began: float | None = None  # event-loop time
        self._stuck: list[str] = []
        self._hard_exit: threading.Timer | None = None
        self._early_errors: list[BaseException] = []
        self._strategy_contexts: dict[str, Any] = {}
        self._positions: Any = None  # what strategies read their positions from
        self._paper: PaperPlan | None = None  # set when the exchange starts: None trades live

    # --- control ----------------------------------------------------------------------

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Ask the bot to stop gracefully (signals, duration, escalation, a failure).

        The first request wins. From this moment no new order is sent, the heartbeat,
        systemd's watchdog and ``/healthz`` stop proving liveness, and the stop is bounded:
        what has not ended within ``[supervisor] stop_grace_s`` is left behind (and, in a
        process of its own, the process ends anyway with this exit code).
        """
        if not self._stop.is_set():
            self._stop_reason = reason
            self._exit_code = exit_code
            log.info("stopping: %s", reason)
            self._begin_stop()

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    @property
    def stopping(self) -> bool:
        """Whether a stop began (requested, escalated, or start-up failed)."""
        return self._stop.is_set()

    @property
    def stop_grace_s(self) -> float:
        from tradebot.core.supervisor import SupervisorSettings

        settings = self.settings.section("supervisor") or SupervisorSettings()
        return float(settings.stop_grace_s)

    def _begin_stop(self) -> None:
        self._stop.set()
        try:
            self._stop_began = asyncio.get_running_loop().time()
        except RuntimeError:  # called from outside the loop (a test, a thread): the loop measures later
            self._stop_began = None
        ctx = self.context
        if ctx is not None and ctx.executor is not None:
            ctx.executor.close_for_new_orders(f"the bot is stopping ({self._stop_reason})")
        if self.options.hard_exit and self._hard_exit is None:
            timer = threading.Timer(self.stop_grace_s + HARD_EXIT_MARGIN_S, self._force_exit)
            timer.daemon = True
            timer.name = "tradebot-stop-bound"
            self._hard_exit = timer
            timer.start()

    def _deadline(self) -> float:
        """Event-loop time by which the children must have stopped."""
        loop = asyncio.get_running_loop()
        if self._stop_began is None:
            self._stop_began = loop.time()
        return self._stop_began + self.stop_grace_s

    def _force_exit(self) -> None:
        """The last resort (a thread of its own): the stop did not end in time; end the process."""
        import sys
        import traceback

        code = self._exit_code
        stuck = ", ".join(self._stuck) or "unknown (the event loop did not get that far)"
        main = threading.main_thread()
        frame = sys._current_frames().get(main.ident or -1)
        where = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "?"
        log.critical(
            "the stop (%s) did not end within %.1fs; ending the process with exit code %d."
            " Not stopped: %s. The main thread was at:\n%s"
            " What was left undone is reconciled at the next start.",
            self._stop_reason,
            self.stop_grace_s + HARD_EXIT_MARGIN_S,
            code,
            stuck,
            where,
        )
        # what it can: a store that is itself what hangs (a write waiting on a lock) must not
        # hold the exit up, so the record gets a thread and a moment of its own
        record = threading.Thread(target=self._record_stop, kwargs={"forced": True}, daemon=True)
        record.start()
        record.join(timeout=RECORD_WAIT_S)
        if record.is_alive():
            log.error(
                "the state store did not take the record of this stop within %gs; not waiting for it",
                RECORD_WAIT_S,
            )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.write(
                f"run stopped by force after the grace period ({self._stop_reason}); not stopped: {stuck}\n"
            )
            sys.stdout.flush()
        os._exit(code)

    def _record_stop(self, *, forced: bool = False) -> None:
        """Write how the last stop went to the state store, as far as the store takes it."""
        ctx = self.context
        if ctx is None:
            return
        import json

        record = {
            "reason": self._stop_reason,
            "exit_code": self._exit_code,
            "not_stopped": self._stuck,
            "forced": forced,
        }
        try:
            ctx.store.set_kv("last_stop", json.dumps(record))
            if self._stuck or forced:
                ctx.store.incr_counter("unclean_stops")
        except Exception as exc:  # noqa: BLE001 - a store that refuses writes must not keep the process alive
            log.error("could not record the stop in the state store: %s: %s", type(exc).__name__, exc)

    # --- run --------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Start everything, trade until asked to stop, then shut down cleanly."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
        try:
            stack = AsyncExitStack()
            try:
                await self._start_or_stop(stack, loop)
            finally:
                await self._close_stack(stack, loop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        self.summary.duration_s = time.monotonic() - started
        self.summary.stop_reason = self._stop_reason
        self.summary.exit_code = self._exit_code
        self.summary.left_behind = list(self._stuck)
        if self._stuck and self.options.hard_exit:
            # what did not stop (a task that swallows its cancellation, a thread) would keep the
            # process alive in the event loop's own clean-up: end it here, with the stop's code
            import sys

            sys.stdout.write(self.summary.render() + "\n")
            sys.stdout.flush()
            logging.shutdown()
            os._exit(self._exit_code)
        return self.summary

    async def _start_or_stop(self, stack: AsyncExitStack, loop: asyncio.AbstractEventLoop) -> None:
        """Start up (a stop request ends start-up, reconcile included), trade, shut down."""
        start = asyncio.ensure_future(self._start(stack))
        start.set_name("start-up")
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            start.cancel()
            raise
        finally:
            stopped.cancel()
        if not start.done():
            # a stop during start-up: what was not reconciled yet is reconciled at the next start
            log.warning("start-up interrupted by the stop (%s)", self._stop_reason)
            start.cancel()
            done, _ = await asyncio.wait({start}, timeout=max(0.0, self._deadline() - loop.time()))
            if not done:
                self._stuck.append("start-up")
                log.error("start-up did not end within the grace period of being cancelled; left behind")
            elif not start.cancelled() and start.exception() is not None:
                exc = start.exception()
                log.error("start-up ended with %s: %s while stopping", type(exc).__name__, exc)
            await self._bounded_shutdown(loop)
            return
        exc = start.exception()
        if isinstance(exc, (TradebotError, OSError)):
            # everything started so far is stopped before the stack closes under it
            log.critical("start-up failed: %s", exc)
            self._stop_reason = f"start-up failed: {exc}"
            self._exit_code = (
                2 if isinstance(exc, ConfigError) else 1
            )  # a setup error: restarting cannot help
            if not self._stop.is_set():
                self._begin_stop()  # nothing may replace this reason and exit code now
            await self._bounded_shutdown(loop)
            return
        if exc is not None:  # a bug: what started is stopped (bounded) before it is raised
            log.critical("start-up failed: %s: %s", type(exc).__name__, exc)
            self._stop_reason = f"start-up failed: {type(exc).__name__}: {exc}"
            self._exit_code = 1
            if not self._stop.is_set():
                self._begin_stop()
            await self._bounded_shutdown(loop)
            raise exc
        if self._stop.is_set():  # a stop raced the end of start-up
            self.summary.started = True
            await self._bounded_shutdown(loop)
            return
        self.summary.started = True
        if self.options.duration_s is not None and not self.options.infinite:
            loop.call_later(
                self.options.duration_s, self.request_stop, f"duration {self.options.duration_s:g}s reached"
            )
        await self._stop.wait()
        await self._bounded_shutdown(loop)

    async def _bounded_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """:meth:`_shutdown`, never past the grace period plus the clean-up time."""
        try:
            async with asyncio.timeout_at(self._deadline() + CLEANUP_S / 2):
                await self._shutdown()
        except TimeoutError:
            log.error("shutdown did not finish within the grace period; going on with what is left")
            if self.context is not None:
                self._fill_summary(self.context)

    async def _close_stack(self, stack: AsyncExitStack, loop: asyncio.AbstractEventLoop) -> None:
        """Close what start-up opened (exchange, HTTP server, state store), bounded too."""
        deadline = (self._deadline() if self._stop.is_set() else loop.time() + self.stop_grace_s) + CLEANUP_S
        closing = asyncio.ensure_future(stack.aclose())
        closing.set_name("closing")
        done, _ = await asyncio.wait({closing}, timeout=max(0.1, deadline - loop.time()))
        if not done:
            self._stuck.append("closing (exchange, HTTP server or state store)")
            log.error("closing the exchange, HTTP server and state store did not finish in time; left behind")
        elif closing.exception() is not None:
            exc = closing.exception()
            log.error("closing failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if self._stuck:
            log.error(
                "the stop (%s) left behind: %s; exiting with code %d anyway",
                self._stop_reason,
                ", ".join(self._stuck),
                self._exit_code,
            )

    async def _start(self, stack: AsyncExitStack) -> None:
        from tradebot.core.store import StateStore
        from tradebot.services.control import ControlWatcher

        settings = self.settings
        state_dir = settings.state_path
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"cannot create the state directory {state_dir}: {exc.strerror or exc}"
            ) from None
        # one bot per state directory, decided before anything touches the state
        control = ControlWatcher(state_dir, None)
        await asyncio.to_thread(control.acquire)
        stack.callback(control.release)
        self._control = control
        secrets = load_secrets(settings.secrets_path, declared=self.host.secret_names())
        from tradebot.app.preflight import setup_problems

        problems = setup_problems(settings, secrets, self.host, paper=self.options.paper)
        from tradebot.services.http_server import check_bind

        busy = check_bind(settings.section("http"))  # said before anything trades
        if busy is not None:
            problems.append(busy)
        if problems:
            raise ConfigError("this setup cannot run", problems)
        store = StateStore(
            state_dir,
            backup_count=settings.backup.count,
            backup_interval_s=settings.backup.interval_s,
            min_backup_spacing_s=settings.backup.min_spacing_s,
            bot_id=settings.bot_id,
        )
        stack.callback(store.close)
        store.write_failure_listeners.append(self._on_state_write_failure)
        if store.restored is not None:
            log.warning("%s", store.restored.message)
        store.incr_counter("starts")
        from tradebot.services.history import record_run_start

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

        await start_supervision(ctx, self.request_stop, infinite=self.options.infinite, alive=self._alive)
        # operator requests are heard from here on: a HALT sent while starting is applied before any order
        control.trading = trading
        await control.poll_once()
        self._spawn("control", control.run)

        exchange = await self._start_exchange(ctx, stack)
        ctx.exchange = exchange
        await self._watch_critical_plugins(ctx, stack)
        await self._start_engine(ctx, stack)
        await self._start_optional(ctx, stack)
        await self.host.configure(
            settings, ctx, required=settings.plugins.required
        )  # [plugins.<name>] tables
        await self.host.broadcast("tradebot_startup", context=ctx)
        if self.options.status_line:
            task = asyncio.ensure_future(self._status_line(ctx))
            self._status_task = task
        log.info(
            "trading %s on %s; state %s",
            ", ".join(settings.bot.pairs),
            self._exchange_name,
            trading.state.value,
        )

    def _alive(self) -> bool:
        """Whether liveness may be proven (heartbeat, watchdog, ``/healthz``): not once a stop began."""
        return not self._stop.is_set()

    @property
    def _exchange_name(self) -> str:
        return self.settings.bot.exchange if self._paper is None else self._paper.engine

    async def _start_exchange(self, ctx: BotContext, stack: AsyncExitStack) -> Any:
        """The configured exchange; for paper trading, the exchange whose market data it wraps first."""
        from tradebot.core.paper_trading import paper_plan

        self._paper = plan = paper_plan(self.settings, self.host, paper=self.options.paper)
        name = self.settings.bot.exchange if plan is None else plan.engine
        if plan is not None:
            source = await self._market_data_source(ctx, stack, plan)
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
            (
                "the market data source",
                ctx.extras.get("market_data_source"),
                "the paper exchange gets no prices",
            ),
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
            self.host,
            critical,
            healer=lambda: ctx.healer,
            stop=stop,
            alert=alert,
            active=lambda: not self._stop.is_set(),
        )
        watch.attach()
        ctx.extras["critical_plugins"] = watch
        stack.push_async_callback(watch.close)

    async def _market_data_source(self, ctx: BotContext, stack: AsyncExitStack, plan: PaperPlan) -> Any:
        """The exchange a paper run wraps: its market data and rules, never its orders or keys;
        pointed at the built-in simulator when the plan says so."""
        config = self.settings.plugin_config("exchange", plan.source)
        if plan.simulator:
            from tradebot.simulator import run_simulator

            comp = self.host.component("exchange", plan.source)
            assert comp.spec.on_simulator is not None  # the plan asks for the simulator only then
            sim = await stack.enter_async_context(run_simulator(host="127.0.0.1", port=0))
            ctx.extras["simulator"] = sim
            config = self.host.call(
                comp.plugin,
                f"exchange:{plan.source}.on_simulator",
                comp.spec.on_simulator,
                config,
                sim.base_url,
                sim.ws_url,
            )
            log.info("market data from the built-in simulator at %s", sim.base_url)
        log.info(
            "paper trading with %r on the market data of the exchange plugin %r", plan.engine, plan.source
        )
        # market data is public: the paper source never holds keys
        public_ctx = attrs.evolve(ctx, extras={k: v for k, v in ctx.extras.items() if k != "secrets"})
        source = self.host.build("exchange", plan.source, config, public_ctx)
        await source.start()
        stack.push_async_callback(_close_part, source, "the market data source")
        return source

    async def _start_engine(self, ctx: BotContext, stack: AsyncExitStack) -> None:
        from tradebot.core.bus import EventBus
        from tradebot.core.exchange_calls import ErrorReportingExchange, watch_requests
        from tradebot.core.executor import OrderExecutor
        from tradebot.core.markets import MarketBook
        from tradebot.core.plugins import unwrap
        from tradebot.core.portfolio import Portfolio
        from tradebot.core.risk import RiskGate
        from tradebot.core.strategy import StrategyRunner

        settings = self.settings
        bus = EventBus()
        ctx.bus = bus
        assert ctx.exchange is not None  # _start() sets it, from the started exchange, just before this
        # every failed call of the running bot reaches the API-error-rate trigger: each failed
        # request where the client reports them, else each failed call of the exchange
        exchange: Any = ctx.exchange
        if not watch_requests(unwrap(exchange), self._on_exchange_error):
            exchange = ErrorReportingExchange(exchange, self._on_exchange_error)
            ctx.exchange = exchange
        source = ctx.extras.get("market_data_source")  # paper trading's prices come from an exchange too
        if source is not None:
            watch_requests(unwrap(source), self._on_exchange_error)
        starting_cash = None
        if not Portfolio.exists(ctx.store):
            # a new state: the bot's starting cash is what the exchange holds of the quote now
            try:
                starting_cash = (await exchange.balances()).get(settings.bot.quote)
            except AuthError:
                raise
            except TradebotError as exc:
                raise StateError(
                    f"cannot read the exchange's balances to record the starting cash of a new state: {exc}"
                ) from None
        portfolio = Portfolio(
            ctx.store, quote=settings.bot.quote, clock=self.clock, starting_cash=starting_cash or Decimal(0)
        )
        ctx.portfolio = portfolio
        from tradebot.core.order_ids import OrderIds
        from tradebot.core.trading_state import OrderWireGate

        order_ids = OrderIds(settings.bot_id)
        executor = OrderExecutor(
            exchange,
            ctx.store,
            portfolio,
            clock=self.clock,
            on_order=self._on_order,
            on_fill=self._on_fill,
            order_ids=order_ids,
            wire_gate=OrderWireGate(ctx.trading),
        )
        ctx.executor = executor
        markets = MarketBook()
        await markets.refresh(exchange, expected=settings.bot.pairs)
        ctx.extras["markets"] = executor.markets = markets
        risk = RiskGate(
            settings.risk,
            ctx.trading,
            portfolio,
            pending_exposure=executor.pending_exposure,
            working_orders=lambda: executor.working_orders(),
            markets=markets,
            clock=self.clock,
            new_client_order_id=order_ids.new,
        )
        ctx.extras["risk"] = risk
        await self._recover_state(ctx, executor, order_ids)
        # first the journal (fills made while the bot was down are recorded), then the balances
        report = await executor.reconcile()
        log.info("order journal reconciled with the exchange: %s", report)
        await self._verify_balances(ctx)
        self.summary.at_start(portfolio)
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
        self._spawn("markets", lambda: self._refresh_markets(ctx, settings.bot.markets_refresh_s))

    async def _refresh_markets(self, ctx: BotContext, every_s: float) -> None:
        """Keep the market rules current every ``[bot] markets_refresh_s`` (the exchange plugin
        may answer from its cache), and the dust they make of small positions recorded for
        ``tradebot health``."""
        while True:
            await self.clock.sleep(every_s)
            await ctx.extras["markets"].refresh(ctx.exchange, expected=self.settings.bot.pairs)
            self._record_dust(ctx)

    def _record_dust(self, ctx: BotContext) -> dict[str, Decimal]:
        """Positions below their pair's minimum order, saved in the state store (key ``dust``)."""
        import json

        portfolio = ctx.portfolio
        markets = ctx.extras.get("markets")
        if portfolio is None or markets is None:
            return {}
        positions = {pair: pos.volume for pair, pos in portfolio.positions().items()}
        dust = markets.dust(positions, {pair: portfolio.mark_price(pair) for pair in positions})
        ctx.store.set_kv("dust", json.dumps({pair: str(v) for pair, v in sorted(dust.items())}))
        return dict(dust)

    async def _verify_balances(self, ctx: BotContext) -> None:
        """After reconciling: the exchange must hold the bot's cash and positions, else HALT.

        What the exchange holds beyond the bot's records is reported and left alone.
        """
        risk = self.settings.risk
        try:
            balances = await ctx.exchange.balances()  # type: ignore[union-attr]
        except AuthError:
            raise  # no API key, or one the exchange refuses: no order could be placed, so do not start
        except TradebotError as exc:
            reason = f"could not read the exchange's balances to verify the bot's cash and positions: {exc}"
            log.critical("%s; trading starts HALTED", reason)
            record = {
                "time": self.clock.now().isoformat(),
                "ok": False,
                "problems": [reason],
                "unexplained": [],
            }
            ctx.store.set_kv(BALANCE_CHECK_KEY, json.dumps(record, sort_keys=True))
            await self._halt_for_balances(ctx, reason)
            return
        check = ctx.portfolio.verify_balances(
            balances,
            pairs=self.settings.bot.pairs,
            cash_tolerance=risk.cash_tolerance,
            holding_tolerance_pct=risk.holding_tolerance_pct,
        )
        ctx.extras["balance_check"] = check
        portfolio = ctx.portfolio
        assets = {portfolio.quote} | {
            pair.partition("/")[0] for pair in (*self.settings.bot.pairs, *portfolio.positions())
        }
        record = {
            "time": self.clock.now().isoformat(),
            "ok": check.ok,
            "problems": list(check.problems),
            "unexplained": list(check.unexplained),
            "cash": str(portfolio.cash),
            "positions": {pair: str(pos.volume) for pair, pos in portfolio.positions().items()},
            "exchange": {asset: str(balances.get(asset)) for asset in sorted(assets)},
        }
        ctx.store.set_kv(BALANCE_CHECK_KEY, json.dumps(record, sort_keys=True))
        for line in check.unexplained:
            log.warning("exchange balance not explained by the journal: %s", line)
        if not check.ok:
            log.critical("%s; trading starts HALTED", check.message)
            await self._halt_for_balances(ctx, check.message)
        else:
            log.info("%s", check.message)

    @staticmethod
    async def _halt_for_balances(ctx: BotContext, reason: str) -> None:
        """HALT as the balance check, even over an earlier HALT: the position policy then keeps
        every position (``close`` could sell coins that are not the bot's)."""
        from tradebot.core.models import TradingState
        from tradebot.core.policy import BALANCE_CHECK_SOURCE

        trading = ctx.trading
        if trading.state is TradingState.HALTED and trading.source != BALANCE_CHECK_SOURCE:
            reason = f"{reason} (HALTED before by {trading.source}: {trading.reason})"
        await trading.halt_anew(reason, BALANCE_CHECK_SOURCE)

    def _on_exchange_error(self, exc: BaseException, call: str) -> None:
        self.summary.exchange_errors += 1
        ctx = self.context
        if ctx is not None and ctx.health is not None:
            ctx.health.record_error(exc)
        else:
            self._early_errors.append(exc)  # fed to the monitor once it exists

    async def _recover_state(self, ctx: BotContext, executor: Any, order_ids: Any) -> None:
        """Before the first order: a restored, damaged or lost state is rebuilt from the
        exchange and the bot stays HALTED saying why; operator requests queued meanwhile apply."""
        from tradebot.core.state_rebuild import recover_at_start

        reason = await recover_at_start(ctx, executor, order_ids)
        if reason is not None:
            ctx.extras["state_recovery"] = reason
        await self._control.poll_once()

    def _on_state_write_failure(self, error: StateError) -> None:
        """The state disk refuses writes (full, read-only): nothing can be recorded, so stop."""
        if self._stop.is_set():
            return
        from tradebot.core.healing import EXIT_ESCALATE

        reason = f"state cannot be saved: {error}"
        log.critical("%s", reason)
        ctx = self.context
        if ctx is not None and ctx.supervisor is not None:
            ctx.supervisor.escalate(reason)
        else:
            self.request_stop(reason, exit_code=EXIT_ESCALATE)

    def _add_strategies(self, ctx: BotContext, runner: Any) -> None:
        from tradebot.core.strategy import BotPositions, StrategyContext

        positions = BotPositions(ctx.portfolio, ctx.executor.working_orders)
        self._positions = positions
        for inst_name, inst in self.settings.strategies.items():
            if not inst.enabled:
                continue
            comp = self.host.component("strategy", inst.plugin)
            config = self.settings.plugin_config("strategy-instance", inst_name)
            pairs = inst.pairs or self.settings.bot.pairs
            # each instance reads its position from the persisted portfolio through its context
            sctx = StrategyContext(
                name=inst_name,
                pairs=pairs,
                clock=self.clock,
                positions=positions,
                markets=ctx.extras["markets"].rules,
            )
            self._strategy_contexts[inst_name] = sctx
            strategy = self.host.call(comp.plugin, "factory", comp.spec.factory, config, sctx)
            runner.add(inst_name, strategy, instance=inst, plugin=comp.plugin, pairs=pairs)

    async def _start_optional(self, ctx: BotContext, stack: AsyncExitStack) -> None:
        """Monitor and HALT triggers, metrics, notifications and the HTTP server."""
        from tradebot.core import tracing
        from tradebot.core.health import HealthMonitor
        from tradebot.services.http_server import HttpServer
        from tradebot.services.metrics import BotMetrics
        from tradebot.services.notify import install_notifications

        monitor = HealthMonitor.from_context(ctx)
        ctx.health = monitor
        for exc in self._early_errors:  # exchange calls that failed during start-up
            monitor.record_error(exc)
        self._early_errors.clear()
        self._spawn("monitor", monitor.run)

        from tradebot.core.policy import PolicyRunner

        policies = PolicyRunner.from_context(ctx)
        ctx.extras["halt_policy"] = policies
        ctx.extras[
            "risk"
        ].trading = policies.risk_view()  # `reduce` lets reducing orders through while HALTED
        if policies.flattens:

            def flattened(outcome: Any) -> None:
                if policies.untrusted is None:  # a balance-check HALT kept the positions: nothing flattened
                    self._on_flattened(outcome)

            policies.outcome_listeners.append(flattened)
        self._spawn("halt-policy", policies.run)

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
            except OSError as exc:  # the port is taken: a setup error, said before trading starts
                raise ConfigError("the HTTP server cannot start", [exc.strerror or str(exc)]) from None
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
        from tradebot.core.executor import OrdersClosed

        ctx = self.context
        assert ctx is not None
        for sig in signals:
            self.summary.signals += 1
            if ctx.metrics is not None:
                ctx.metrics.signal(sig.strategy, sig.pair)
            sctx = self._strategy_contexts.get(sig.strategy)
            if self._stop.is_set():  # no new order from the moment a stop began
                log.info("signal %s %s %s dropped: the bot is stopping", sig.side.value, sig.volume, sig.pair)
                if sctx is not None:
                    sctx.settle(sig)  # dropped: the strategy must not count it as on its way
                continue
            try:
                with tracing.span("risk_gate", pair=sig.pair, side=sig.side.value, strategy=sig.strategy):
                    request = ctx.extras["risk"].approve(sig)
            except RiskRejection:
                self.summary.orders_rejected += 1
                if sctx is not None:
                    sctx.settle(sig)  # refused: the strategy must not count it as on its way
                continue
            if sctx is not None:
                sctx.settle(sig)  # journalled by submit() before its first await: a working order now
            if self._positions is not None:
                self._positions.invalidate()
            try:
                order = await ctx.executor.submit(request, strategy=sig.strategy, reason=sig.reason)
            except OrdersClosed as exc:
                log.info("%s", exc)
                continue
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

    def _on_flattened(self, outcome: Any) -> None:
        """A completed HALT under a policy that flattens is the end of trading: every position is flat."""
        if outcome.done:
            self.request_stop(
                f"HALT with the {outcome.policy} policy completed: {outcome.message}", exit_code=0
            )

    async def _snapshot_equity(self, ctx: BotContext, every_s: float = 5.0) -> None:
        """Record equity regularly: drawdown is measured from these snapshots."""
        while True:
            await self.clock.sleep(every_s)
            await asyncio.to_thread(ctx.portfolio.snapshot_equity)

    async def _on_order(self, order: OrderInfo) -> None:
        if self._positions is not None:
            self._positions.invalidate()
        await self.host.broadcast("tradebot_order_report", order=order)

    async def _on_fill(self, fill: Fill) -> None:
        if self._positions is not None:
            self._positions.invalidate()
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
        pnl = (
            ctx.portfolio.realized_pnl + ctx.portfolio.unrealized_pnl()
            if ctx.portfolio is not None
            else Decimal(0)
        )
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
        if ctx is not None and ctx.executor is not None:
            ctx.executor.close_for_new_orders(f"the bot is stopping ({self._stop_reason})")
        if ctx is not None and "critical_plugins" in ctx.extras:
            await ctx.extras["critical_plugins"].close()  # a quarantine while stopping is not healed
        loop = asyncio.get_running_loop()
        deadline = self._deadline()
        if self._status_task is not None:
            self._status_task.cancel()
            await asyncio.wait({self._status_task}, timeout=max(0.0, deadline - loop.time()))
        from tradebot.core import sdnotify

        sdnotify.stopping()
        if ctx is not None and ctx.supervisor is not None:
            # children in reverse start order, all within the grace period
            self._stuck.extend(await ctx.supervisor.stop(deadline))
        for task in reversed(self._tasks):
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=max(0.0, deadline - loop.time()))
            self._stuck.extend(t.get_name() for t in pending)
        if ctx is not None:
            # in a thread, bounded: a store that refuses writes may hold a write for seconds
            recording = asyncio.ensure_future(asyncio.to_thread(self._record_stop))
            if not (await asyncio.wait({recording}, timeout=RECORD_WAIT_S))[0]:
                log.error(
                    "the state store did not take the record of this stop within %gs; going on", RECORD_WAIT_S
                )
            try:
                async with asyncio.timeout(CLEANUP_S / 2):
                    await self.host.broadcast("tradebot_shutdown", context=ctx, reason=self._stop_reason)
            except TimeoutError:
                log.error("the plugins' shutdown hooks did not finish within %.1fs; going on", CLEANUP_S / 2)
            self._fill_summary(ctx)

    def _fill_summary(self, ctx: BotContext) -> None:
        s = self.summary
        s.halts = [
            f"{c.time:%Y-%m-%d %H:%M:%S} by {c.source}: {c.reason}"
            for c in ctx.trading.history
            if c.current.value == "halted"
        ]
        watch = ctx.extras.get("critical_plugins")
        s.quarantines = [f"plugin {p}: {why}" for p, why in getattr(watch, "quarantines", [])]
        runner = ctx.extras.get("strategy_runner")
        s.quarantines += [
            f"strategy {n}: {why}" for n, why in (getattr(runner, "quarantined", None) or {}).items()
        ]
        s.trading_state = ctx.trading.state.value
        s.trading_reason = f"{ctx.trading.reason} (by {ctx.trading.source})"
        if ctx.portfolio is not None:
            s.at_end(ctx.portfolio)
            try:
                s.dust = self._record_dust(ctx)
            except Exception as exc:  # noqa: BLE001 - the summary is still printed
                log.warning("could not work out the dust left: %s", exc)


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
    except Exception as exc:  # shutdown goes on; the failure is reported
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
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum:g} (got {raw!r})")
    return value
