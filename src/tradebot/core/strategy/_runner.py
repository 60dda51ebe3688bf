"""The strategy runner: every instance under its own timeout, faulty ones quarantined."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tradebot.core import telemetry, tracing
from tradebot.core.bus import BusClosed, EventBus, Subscription
from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import PluginError, PluginQuarantined, describe
from tradebot.core.models import Alert, AlertLevel, Candle, Signal, Ticker
from tradebot.core.strategy._api import CallMode, QuarantineCallback, SignalSink
from tradebot.core.strategy._handle import (
    StrategyHandle,
    _as_exception,
    _call_mode,
    _Overran,
    _pick,
    _signals,
    _trace_after,
)
from tradebot.core.strategy._inline import InlineDispatch
from tradebot.core.strategy._worker import _Worker

if TYPE_CHECKING:
    from tradebot.app.config import StrategyInstance
    from tradebot.core.plugins import PluginHost
    from tradebot.core.strategy._api import StrategyStats

log = logging.getLogger("tradebot.strategy")


@runtime_checkable
class _HasOnEvent(Protocol):
    def on_event(self, event: Any) -> Any: ...


@runtime_checkable
class _Starts(Protocol):
    def start(self) -> Any: ...


@runtime_checkable
class _Stops(Protocol):
    def stop(self) -> Any: ...


class StrategyRunner(InlineDispatch):
    """Runs strategy instances: one task each, each call timed out, faulty ones quarantined.

    ``sink`` receives the signals of each successful call (never of a failed, timed-out or
    cancelled one). ``host`` routes every call through the plugin host's guarded, traced path
    (None calls directly). ``on_quarantine(instance, reason)`` (sync or async) is told when
    an instance is quarantined; with a host, a critical alert is broadcast as well.

    Tracing (when on): every failed, timed-out or slow call gets a span, and so does one in
    ``trace_every`` of the other calls, at most one every ``trace_interval_s`` per instance
    (``trace_every=1, trace_interval_s=0`` traces every call). A span costs several times a
    quick strategy's whole call, so tracing every tick would make tracing the bot's main
    cost, and most so in a burst of market data, when the bot needs its time most; the
    interval bounds what tracing costs per second whatever the tick rate. Every call is
    measured in :class:`StrategyStats` regardless.
    """

    def __init__(
        self,
        *,
        bus: EventBus,
        sink: SignalSink,
        host: PluginHost | None = None,
        clock: Clock | None = None,
        on_quarantine: QuarantineCallback | None = None,
        stop_timeout_s: float = 5.0,
        trace_every: int = 100,
        trace_interval_s: float = 0.1,
    ) -> None:
        if trace_every < 1:
            raise ValueError(f"trace_every must be >= 1 (got {trace_every})")
        if not trace_interval_s >= 0:
            raise ValueError(f"trace_interval_s must be >= 0 (got {trace_interval_s})")
        self.trace_every = trace_every
        self.trace_interval_s = trace_interval_s
        self._bus = bus
        self._sink = sink
        self._host = host
        self._clock = clock or SystemClock()
        self._on_quarantine = on_quarantine
        self.stop_timeout_s = stop_timeout_s
        self._handles: dict[str, StrategyHandle] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        # the inline instances' shared subscription, dispatching task and call order
        self._group: tuple[StrategyHandle, ...] = ()
        self._group_sub: Subscription | None = None
        self._dispatching: Subscription | None = None
        """The shared subscription the current dispatcher serves."""
        self._dispatchers: list[asyncio.Task[None]] = []

    # --- configuration ------------------------------------------------------------------

    def add(
        self,
        name: str,
        strategy: Any,
        *,
        instance: StrategyInstance | None = None,
        plugin: str | None = None,
        pairs: Sequence[str] | None = None,
        timeout_s: float | None = None,
        warn_s: float | None = None,
        max_failures: int | None = None,
        blocking: bool | None = None,
    ) -> StrategyHandle:
        """Add a strategy instance; it receives market events published from now on.

        Limits come from the keyword arguments, else from ``instance`` (the validated
        ``[strategies.<name>]`` table), else the defaults: 5 s timeout, 1 s warning, 3
        consecutive failures. ``blocking`` overrides the strategy's own ``blocking``.
        """
        if name in self._handles:
            raise ValueError(f"a strategy instance named {name!r} is already added")
        if not isinstance(strategy, _HasOnEvent) or not callable(strategy.on_event):
            raise TypeError(f"strategy {name!r} has no on_event method")
        timeout_s = _pick(timeout_s, instance, "timeout_s", 5.0)
        warn_s = _pick(warn_s, instance, "warn_s", 1.0)
        max_failures = int(_pick(max_failures, instance, "max_failures", 3))
        if timeout_s <= 0 or warn_s <= 0 or max_failures <= 0:
            raise ValueError(f"strategy {name!r}: timeout_s, warn_s and max_failures must be > 0")
        if pairs is None and instance is not None and instance.pairs:
            pairs = instance.pairs
        plugin_name = plugin or (instance.plugin if instance is not None else name)
        mode = _call_mode(strategy, blocking)
        if mode is CallMode.INLINE:
            subscription = self._inline_subscription()
        else:
            subscription = self._bus.subscribe(
                f"strategy:{name}", kinds=(Ticker, Candle), pairs=pairs or None
            )
        handle = StrategyHandle(
            name=name,
            plugin=plugin_name,
            strategy=strategy,
            pairs=tuple(pairs) if pairs else None,
            timeout_s=float(timeout_s),
            warn_s=float(warn_s),
            max_failures=max_failures,
            mode=mode,
            subscription=subscription,
        )
        self._handles[name] = handle
        if mode is CallMode.INLINE:
            self._join_group(handle)
        if self._running:
            self._spawn(handle)
        return handle

    # --- queries ------------------------------------------------------------------------

    @property
    def handles(self) -> dict[str, StrategyHandle]:
        return dict(self._handles)

    def __getitem__(self, name: str) -> StrategyHandle:
        return self._handles[name]

    def stats(self) -> dict[str, StrategyStats]:
        return {name: h.stats for name, h in self._handles.items()}

    @property
    def quarantined(self) -> dict[str, str]:
        """Quarantined instance -> why."""
        return {name: h.quarantined for name, h in self._handles.items() if h.quarantined is not None}

    # --- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every instance until the bus closes or this task is cancelled, then stop them."""
        if self._running:
            raise RuntimeError("the strategy runner is already running")
        self._running = True
        try:
            for handle in self._handles.values():
                if handle.mode is CallMode.INLINE and handle.quarantined is None:
                    handle.reset_backlog()  # a run after a cancelled one starts afresh
                self._spawn(handle)
            while True:
                # instances added while running get their task in the dict; wait for all
                tasks = [t for t in self._owned_tasks() if not t.done()]
                if not tasks:
                    break
                await asyncio.wait(tasks)
                self._tasks = {n: t for n, t in self._tasks.items() if not t.done()}
                self._dispatchers = [t for t in self._dispatchers if not t.done()]
        finally:
            self._running = False
            tasks = list(self._owned_tasks())
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            self._dispatchers.clear()
            self._dispatching = None
            await self._stop_all()

    def _owned_tasks(self) -> list[asyncio.Task[None]]:
        return [*self._tasks.values(), *self._dispatchers]

    def _spawn(self, handle: StrategyHandle) -> None:
        if handle.mode is CallMode.INLINE:
            serve = self._serve_detached(handle)
            sub = self._group_sub
            if handle.quarantined is None and sub is not None and self._dispatching is not sub:
                # one dispatcher per shared subscription: a group emptied by quarantine and
                # formed again has a new subscription, and gets a new dispatcher
                self._dispatching = sub
                self._dispatchers.append(
                    asyncio.create_task(self._dispatch_inline(sub), name="strategies:inline")
                )
        else:
            serve = self._serve(handle)
        self._tasks[handle.name] = asyncio.create_task(serve, name=f"strategy:{handle.name}")

    async def _serve(self, handle: StrategyHandle) -> None:
        if handle.quarantined is not None:
            return
        if not await self._start(handle):
            return
        stats = handle.stats
        worker = handle.worker
        events = handle.subscription.queue
        while True:
            # take what is queued without a coroutine switch; wait only when there is nothing
            if len(events):
                event = events.get_nowait()
            else:
                try:
                    event = await events.get()
                except BusClosed:
                    break
            if worker is not None and worker.busy:
                stats.waits += 1
                if not await self._wait_for_worker(handle, worker):
                    if handle.quarantined is not None:
                        break
                    # not called yet: still the latest of its pair unless a newer one came
                    key = self._bus._key(event)
                    if key is not None and not events.closed:
                        events.put_back(key, event)
                    continue
            # continue the market event's trace (strategy -> risk gate -> order -> report) where
            # it yields spans: a sampled call, and the delivery of signals; attaching a context
            # costs microseconds, so quiet unsampled calls skip it
            trace = handle.subscription.trace_of(event) if telemetry.state.enabled else None
            if trace is not None and handle.trace_countdown <= 0:
                with tracing.resume(trace):
                    signals = await self._call_on_event(handle, event)
            else:
                signals = await self._call_on_event(handle, event)
            if handle.quarantined is not None:
                break
            if signals:
                if trace is None:
                    await self._deliver(handle, signals)
                else:
                    with tracing.resume(trace):
                        await self._deliver(handle, signals)

    async def _wait_for_worker(self, handle: StrategyHandle, worker: _Worker) -> bool:
        """Wait (up to the timeout) for an abandoned call to return; each overrun is a failure."""
        try:
            async with asyncio.timeout(handle.timeout_s):
                await worker.wait_idle()
            return True
        except TimeoutError:
            stuck = time.perf_counter() - worker.busy_since
            handle.stats.timeouts += 1
            await self._failed(handle, f"on_event still running {stuck:.1f}s after it was called")
            return False

    def _sample(self, handle: StrategyHandle) -> bool:
        """Whether the quiet call due for a span gets one (at most one per ``trace_interval_s``)."""
        handle.trace_countdown = self.trace_every - 1
        if self.trace_interval_s <= 0:
            return True
        now = time.perf_counter()
        if now < handle.next_sample_at:
            return False
        handle.next_sample_at = now + self.trace_interval_s
        return True

    async def _call_on_event(self, handle: StrategyHandle, event: object) -> list[Signal] | None:
        tracer = telemetry.state.tracer if telemetry.state.enabled else None
        traced = False
        if tracer is not None:
            if handle.trace_countdown > 0:
                handle.trace_countdown -= 1
            else:
                traced = self._sample(handle)
        started = time.perf_counter()
        try:
            if handle.mode is CallMode.INLINE:  # no extra coroutine for quick strategies
                try:
                    result = self._call_sync(handle, "on_event", handle.on_event, event, traced=traced)
                except (
                    asyncio.CancelledError
                ) as exc:  # raised by the strategy: a plain call is never cancelled
                    raise _as_exception(exc) from exc
                if type(result) is not tuple and type(result) is not list and inspect.isawaitable(result):
                    async with asyncio.timeout(handle.timeout_s):
                        result = await result
                elif time.perf_counter() - started > handle.timeout_s:
                    raise _Overran()
            else:
                result = await self._invoke(handle, "on_event", handle.on_event, event, traced=traced)
            signals = self._result_signals(handle, result)
        except PluginQuarantined as exc:
            handle.stats.observe(time.perf_counter() - started)
            await self._quarantine(handle, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - any strategy fault counts against it
            await self._failed(
                handle, self._call_failed(handle, exc, time.perf_counter() - started, tracer, traced)
            )
            return None
        self._succeeded(handle, time.perf_counter() - started, tracer, traced)
        handle.stats.last_call_at = self._clock.monotonic()
        return signals

    @staticmethod
    def _result_signals(handle: StrategyHandle, result: Any) -> list[Signal]:
        if not result and (result is None or type(result) is tuple or type(result) is list):
            return []
        return _signals(handle, result)

    @staticmethod
    def _call_failed(
        handle: StrategyHandle, exc: Exception, elapsed: float, tracer: Any, traced: bool
    ) -> str:
        """Count a failed call (timed out, overran, raised, bad result); its message."""
        stats = handle.stats
        stats.observe(elapsed)
        if isinstance(exc, (TimeoutError, _Overran)):
            stats.timeouts += 1
            if isinstance(exc, _Overran):
                msg = f"on_event blocked the event loop for {elapsed:.3f}s (timeout {handle.timeout_s:g}s)"
            else:
                msg = f"on_event timed out after {handle.timeout_s:g}s"
            if tracer is not None:
                _trace_after(tracer, handle, elapsed, "timeout", exc, msg)
            return msg
        stats.errors += 1
        msg = f"on_event raised {type(exc).__name__}: {describe(exc)}"
        # a traced call's span already holds a plugin fault; anything else gets a span of its own
        if tracer is not None and (not traced or not isinstance(exc, PluginError)):
            _trace_after(tracer, handle, elapsed, "error", exc, msg)
        return msg

    @staticmethod
    def _succeeded(handle: StrategyHandle, elapsed: float, tracer: Any, traced: bool) -> None:
        stats = handle.stats
        stats.observe(elapsed)
        stats.succeeded += 1
        stats.consecutive_failures = 0
        if elapsed >= handle.warn_s:
            stats.slow += 1
            if tracer is not None and not traced:
                _trace_after(tracer, handle, elapsed, "slow", None, "")
            log.warning(
                "strategy %r was slow: on_event took %.3fs (warning at %gs, timeout %gs)",
                handle.name,
                elapsed,
                handle.warn_s,
                handle.timeout_s,
                extra={"strategy": handle.name, "plugin": handle.plugin},
            )

    def _call_sync(
        self, handle: StrategyHandle, method: str, fn: Callable[..., Any], *args: Any, traced: bool = True
    ) -> Any:
        host = self._host
        if host is None:
            return fn(*args)
        if traced:
            return host.call(handle.plugin, method, fn, *args)
        return host.call_untraced(handle.plugin, method, fn, *args)

    async def _invoke(
        self,
        handle: StrategyHandle,
        method: str,
        fn: Callable[..., Any],
        *args: Any,
        timeout_s: float | None = None,
        traced: bool = True,
    ) -> Any:
        """One guarded call of ``fn`` in the handle's mode, under its timeout."""
        host = self._host
        mode = handle.mode
        limit = handle.timeout_s if timeout_s is None else timeout_s
        if mode is CallMode.INLINE:
            started = time.perf_counter()
            result = self._call_sync(handle, method, fn, *args, traced=traced)
            if inspect.isawaitable(result):
                async with asyncio.timeout(limit):
                    result = await result
            elif time.perf_counter() - started > limit:
                raise _Overran()
            return result
        if mode is CallMode.THREAD:
            assert handle.worker is not None
            args = (fn, *args)
            fn = handle.worker.submit
        async with asyncio.timeout(limit):
            if host is not None:
                if traced:
                    return await host.acall(handle.plugin, method, fn, *args)
                return await host.acall_untraced(handle.plugin, method, fn, *args)
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

    async def _deliver(self, handle: StrategyHandle, signals: list[Signal]) -> None:
        handle.stats.signals += len(signals)
        handle.delivering = True
        try:
            await self._sink(signals)
        except Exception as exc:  # noqa: BLE001 - the sink's failure is not the strategy's
            self._sink_failed(handle, signals, exc)
        finally:
            handle.delivering = False

    @staticmethod
    def _sink_failed(handle: StrategyHandle, signals: list[Signal], exc: Exception) -> None:
        handle.stats.sink_errors += 1
        log.error(
            "the signal sink failed on %d signal(s) of strategy %r", len(signals), handle.name, exc_info=exc
        )

    # --- failures -----------------------------------------------------------------------

    async def _failed(self, handle: StrategyHandle, message: str) -> None:
        stats = handle.stats
        stats.consecutive_failures += 1
        stats.last_error = message
        log.error(
            "strategy %r: %s (%d of %d failures in a row)",
            handle.name,
            message,
            stats.consecutive_failures,
            handle.max_failures,
            extra={"strategy": handle.name, "plugin": handle.plugin},
        )
        if stats.consecutive_failures >= handle.max_failures:
            await self._quarantine(
                handle, f"{stats.consecutive_failures} consecutive failures, last: {message}"
            )

    async def _quarantine(self, handle: StrategyHandle, reason: str) -> None:
        if handle.quarantined is not None:
            return
        handle.quarantined = reason
        if handle.mode is CallMode.INLINE:
            assert handle.backlog is not None
            handle.backlog.close(drain=False)
            handle.backlog_traces.clear()
            self._leave_group(handle)
        else:
            handle.subscription.close()
        log.critical(
            "strategy %r quarantined, the others keep trading: %s",
            handle.name,
            reason,
            extra={"strategy": handle.name, "plugin": handle.plugin},
        )
        if self._on_quarantine is not None:
            try:
                outcome = self._on_quarantine(handle.name, reason)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("on_quarantine callback failed for strategy %r", handle.name)
        if self._host is not None:
            alert = Alert(
                level=AlertLevel.CRITICAL,
                title=f"strategy {handle.name} quarantined",
                message=reason,
                source=f"strategy:{handle.name}",
                key=f"strategy-quarantined:{handle.name}",
            )
            try:
                await self._host.broadcast("tradebot_alert", alert=alert)
            except Exception:
                log.exception("could not broadcast the quarantine of strategy %r", handle.name)

    # --- start and stop -----------------------------------------------------------------

    async def _start(self, handle: StrategyHandle) -> bool:
        if isinstance(handle.strategy, _Starts) and callable(handle.strategy.start):
            try:
                await self._invoke(handle, "start", handle.strategy.start)
            except Exception as exc:  # noqa: BLE001 - includes timeouts
                what = (
                    "timed out"
                    if isinstance(exc, (TimeoutError, _Overran))
                    else f"raised {type(exc).__name__}: {exc}"
                )
                await self._quarantine(handle, f"start {what}")
                return False
        handle.started = True
        return True

    async def _stop_all(self) -> None:
        handles = [h for h in self._handles.values() if h.started]
        await asyncio.gather(*(self._stop(h) for h in handles))

    async def _stop(self, handle: StrategyHandle) -> None:
        handle.started = False
        worker = handle.worker
        try:
            if isinstance(handle.strategy, _Stops) and callable(handle.strategy.stop):
                if worker is not None and worker.busy:
                    log.warning("strategy %r is still busy; not calling stop()", handle.name)
                else:
                    await self._invoke(
                        handle,
                        "stop",
                        handle.strategy.stop,
                        timeout_s=min(handle.timeout_s, self.stop_timeout_s),
                    )
        except Exception as exc:  # noqa: BLE001 - stopping must go on for the others
            log.error("strategy %r: stop failed: %s: %s", handle.name, type(exc).__name__, exc)
        finally:
            if worker is not None:
                worker.stop()
