"""Inline strategies: one dispatcher calls them all; each has a task for what may wait.

See the package docstring for why. :class:`InlineDispatch` is the part of
:class:`~tradebot.core.strategy.StrategyRunner` that does it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import inspect
import logging
import time
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from tradebot.core import telemetry, tracing
from tradebot.core.bus import BusClosed, ConflatingQueue, EventBus, Subscription
from tradebot.core.errors import PluginQuarantined, TradebotError, describe
from tradebot.core.models import Candle, Signal, Ticker
from tradebot.core.strategy._api import _FIRST_BUCKET_S, DURATION_BUCKETS_S
from tradebot.core.strategy._handle import StrategyHandle, _as_exception, _Followup, _Overran

if TYPE_CHECKING:
    from tradebot.core.clock import Clock
    from tradebot.core.plugins import PluginHost
    from tradebot.core.strategy._api import SignalSink

log = logging.getLogger("tradebot.strategy")


class InlineDispatch:
    """The inline instances' shared dispatcher, as part of the strategy runner."""

    _bus: EventBus
    _host: PluginHost | None
    _clock: Clock
    _sink: SignalSink
    _group: tuple[StrategyHandle, ...]
    _group_sub: Subscription | None
    _dispatching: Subscription | None

    if TYPE_CHECKING:  # provided by StrategyRunner

        def _sample(self, handle: StrategyHandle) -> bool: ...
        @staticmethod
        def _result_signals(handle: StrategyHandle, result: Any) -> list[Signal]: ...
        @staticmethod
        def _call_failed(
            handle: StrategyHandle, exc: Exception, elapsed: float, tracer: Any, traced: bool
        ) -> str: ...
        @staticmethod
        def _succeeded(handle: StrategyHandle, elapsed: float, tracer: Any, traced: bool) -> None: ...
        async def _start(self, handle: StrategyHandle) -> bool: ...
        async def _call_on_event(self, handle: StrategyHandle, event: object) -> list[Signal] | None: ...
        async def _deliver(self, handle: StrategyHandle, signals: list[Signal]) -> None: ...
        async def _failed(self, handle: StrategyHandle, message: str) -> None: ...
        async def _quarantine(self, handle: StrategyHandle, reason: str) -> None: ...

    def _inline_subscription(self) -> Subscription:
        sub = self._group_sub
        if sub is None or sub.queue.closed:
            sub = self._group_sub = self._bus.subscribe("strategies:inline", kinds=(Ticker, Candle), pairs=())
        return sub

    def _join_group(self, handle: StrategyHandle) -> None:
        self._group = (*self._group, handle)
        union = self._update_group_pairs()
        # an instance is spared the per-call pair check only while the subscription takes
        # exactly its pairs; a wider union turns the check on for good, as events of the
        # other pairs may stay queued after their instance left
        for h in self._group:
            if h.pair_set != union:
                h.filter_pairs = h.pair_set
        handle.filter_pairs = None if handle.pair_set == union else handle.pair_set

    def _leave_group(self, handle: StrategyHandle) -> None:
        self._group = tuple(h for h in self._group if h is not handle)
        if not self._group and self._group_sub is not None:
            self._group_sub.close()  # nobody left to dispatch to: the dispatcher ends
        else:
            self._update_group_pairs()

    def _update_group_pairs(self) -> frozenset[str] | None:
        """The shared subscription takes the pairs of every inline instance (all if one takes all)."""
        assert self._group_sub is not None
        sets = [h.pair_set for h in self._group]
        union = None if any(p is None for p in sets) else frozenset().union(*sets)  # type: ignore[arg-type]
        self._group_sub.pairs = union
        return union

    async def _dispatch_inline(self, sub: Subscription) -> None:
        """Call every attached inline instance for each event of the shared subscription."""
        events = sub.queue
        try:
            while True:
                try:
                    self._dispatch_queued(sub)
                except Exception:
                    log.exception("the inline strategy dispatcher failed on a batch of market events")
                # yield after every batch, so strategies or sinks that publish market data
                # cannot keep the loop to themselves; while events keep coming, this plain
                # yield usually finds the next ones queued, and costs less than parking on
                # a future to be woken
                await asyncio.sleep(0)
                if not len(events):
                    try:
                        await events.wait()
                    except BusClosed:
                        break
        finally:
            if self._dispatching is sub:
                self._dispatching = None
            # the instances' tasks finish what they hold, then end
            for handle in self._group:
                if handle.subscription is sub:
                    assert handle.backlog is not None
                    handle.backlog.close()

    def _dispatch_queued(self, sub: Subscription) -> None:
        """Dispatch every event queued now, without a coroutine switch (the hot path)."""
        tracer = telemetry.state.tracer if telemetry.state.enabled else None
        host = self._host
        blocked: Mapping[str, str] = host.quarantined_view if host is not None else {}
        faults: Mapping[str, int] = host.failures_view if host is not None else {}
        perf = time.perf_counter
        first_bucket = _FIRST_BUCKET_S
        now = self._clock.monotonic()  # one reading for the batch (see StrategyStats.last_call_at)
        for event in sub.queue.take_all():
            trace = sub.trace_of(event) if tracer is not None else None
            pair = event.pair
            key: Hashable | None = None
            for handle in self._group:
                try:
                    if handle.detached:
                        # its own task calls it for now: queue the event there, latest per key
                        backlog = handle.backlog
                        assert backlog is not None
                        if not backlog.closed and (handle.pair_set is None or pair in handle.pair_set):
                            if key is None:
                                key = self._bus._key(event)
                            if trace is not None:
                                handle.backlog_traces[key] = trace
                            backlog.put_latest(key, event)
                        continue
                    if handle.filter_pairs is not None and pair not in handle.filter_pairs:
                        continue
                    plugin = handle.plugin
                    if tracer is not None or (blocked and plugin in blocked):
                        if handle.trace_countdown > 0 and plugin not in blocked:
                            handle.trace_countdown -= 1
                        elif plugin in blocked or self._sample(handle):
                            # a sampled call, or one the host refuses: the full path
                            with tracing.resume(trace):
                                followup = self._call_inline(handle, event, tracer, tracer is not None)
                            self._after_inline(handle, followup, now, trace)
                            continue
                    # the guarded call unrolled: the host's accounting without its call frames
                    started = perf()
                    try:
                        result = handle.on_event(event)
                    except TradebotError as exc:  # an operational failure: not the plugin's fault
                        followup = self._inline_raised(handle, exc, started, tracer, False)
                    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the strategy's fault
                        error: Exception = _as_exception(exc)
                        if host is not None:
                            error = host.record_fault(plugin, "on_event", error)
                            error.__cause__ = exc
                        followup = self._inline_raised(handle, error, started, tracer, False)
                    else:
                        elapsed = perf() - started
                        if faults and faults.get(plugin):
                            host.record_success(plugin)  # type: ignore[union-attr]
                        rtype = type(result)
                        if not result and (rtype is tuple or rtype is list) and elapsed < handle.quick_s:
                            # a quick call that returned no signals only updates counters
                            stats = handle.stats
                            stats.calls += 1
                            stats.succeeded += 1
                            stats.last_s = elapsed
                            stats.total_s += elapsed
                            if elapsed > stats.max_s:  # a comparison costs less than a call to max()
                                stats.max_s = elapsed
                            stats.buckets[
                                0
                                if elapsed <= first_bucket
                                else bisect.bisect_left(DURATION_BUCKETS_S, elapsed)
                            ] += 1
                            stats.consecutive_failures = 0
                            stats.last_call_at = now
                            continue
                        followup = self._settle_inline(handle, result, started, tracer, False)
                    self._after_inline(handle, followup, now, trace)
                except Exception as exc:  # noqa: BLE001 - the dispatcher's own work for one instance
                    self._dispatch_failed(handle, exc)

    def _dispatch_failed(self, handle: StrategyHandle, exc: Exception) -> None:
        """The dispatcher could not finish its work for one instance: hand it a failure."""
        log.error("strategy %r: the dispatcher failed handling its call", handle.name, exc_info=exc)
        backlog = handle.backlog
        assert backlog is not None
        handle.detached = True
        if not backlog.closed:
            with contextlib.suppress(Exception):
                backlog.put_nowait(_Followup(failure=f"dispatching its call failed: {describe(exc)}"))

    def _after_inline(
        self, handle: StrategyHandle, followup: _Followup | None, now: float, trace: Any
    ) -> None:
        """Pass what a call left that may wait (signals, a failure) to the instance's own task."""
        if followup is None:
            handle.stats.last_call_at = now
            return
        followup.trace = trace
        backlog = handle.backlog
        assert backlog is not None
        if followup.signals is not None:
            handle.stats.last_call_at = now
            if not backlog and not backlog.closed and not handle.delivering:
                # nothing else waits: the instance's task hands the signals over while the
                # dispatcher keeps calling it; a second batch before that detaches it
                backlog.put_nowait(followup)
                return
        handle.detached = True
        if backlog.closed:
            return  # the runner is stopping, or the instance was quarantined: nobody acts on it
        backlog.put_nowait(followup)

    def _call_inline(self, handle: StrategyHandle, event: Any, tracer: Any, traced: bool) -> _Followup | None:
        """One dispatched call; what must wait (signals, failures) comes back as a follow-up."""
        started = time.perf_counter()
        host = self._host
        try:
            if host is None:
                result = handle.on_event(event)
            elif traced:
                result = host.call(handle.plugin, "on_event", handle.on_event, event)
            else:
                result = host.call_untraced(handle.plugin, "on_event", handle.on_event, event)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - any strategy fault counts
            return self._inline_raised(handle, _as_exception(exc), started, tracer, traced)
        return self._settle_inline(handle, result, started, tracer, traced)

    def _settle_inline(
        self, handle: StrategyHandle, result: Any, started: float, tracer: Any, traced: bool
    ) -> _Followup | None:
        """What a dispatched call that returned leaves to do: None, signals, a failure or an await."""
        rtype = type(result)
        if rtype is not tuple and rtype is not list and inspect.isawaitable(result):
            return _Followup(pending=result, sync_s=time.perf_counter() - started, traced=traced)
        try:
            elapsed = time.perf_counter() - started
            if elapsed > handle.timeout_s:
                raise _Overran()
            signals = self._result_signals(handle, result)
        except Exception as exc:  # noqa: BLE001 - overran or a bad result: the strategy's fault
            return self._inline_raised(handle, exc, started, tracer, traced)
        self._succeeded(handle, elapsed, tracer, traced)
        return _Followup(signals) if signals else None

    def _inline_raised(
        self, handle: StrategyHandle, exc: Exception, started: float, tracer: Any, traced: bool
    ) -> _Followup:
        elapsed = time.perf_counter() - started
        if isinstance(exc, PluginQuarantined):
            handle.stats.observe(elapsed)
            return _Followup(quarantine=str(exc))
        return _Followup(failure=self._call_failed(handle, exc, elapsed, tracer, traced))

    async def _serve_detached(self, handle: StrategyHandle) -> None:
        """An inline instance's own task: start it, then do what the dispatcher passed on."""
        if handle.quarantined is not None:
            return
        if not await self._start(handle):
            return
        backlog = handle.backlog
        assert backlog is not None
        try:
            await self._serve_backlog(handle, backlog)
        finally:
            handle.detached = True  # with its task gone, nothing may call it from the dispatcher

    async def _serve_backlog(self, handle: StrategyHandle, backlog: ConflatingQueue[Any]) -> None:
        while True:
            if not len(backlog):
                handle.detached = False  # nothing held back: the dispatcher calls it again
                try:
                    await backlog.wait()  # not get(): one coroutine frame less to suspend and resume
                except BusClosed:
                    break
            item = backlog.get_nowait()
            if type(item) is _Followup:
                if item.signals is not None and item.trace is None:  # the common case: no trace to resume
                    await self._deliver(handle, item.signals)
                else:
                    await self._follow_up(handle, item)
            else:
                trace = (
                    handle.backlog_traces.pop(self._bus._key(item), None) if handle.backlog_traces else None
                )
                if trace is not None and handle.trace_countdown <= 0:
                    with tracing.resume(trace):
                        signals = await self._call_on_event(handle, item)
                else:
                    signals = await self._call_on_event(handle, item)
                if signals and handle.quarantined is None:
                    with tracing.resume(trace):
                        await self._deliver(handle, signals)
            if handle.quarantined is not None:
                break

    async def _follow_up(self, handle: StrategyHandle, item: _Followup) -> None:
        if item.pending is not None:
            with tracing.resume(item.trace):
                signals = await self._finish_pending(handle, item)
                if signals:
                    await self._deliver(handle, signals)
        elif item.signals is not None:
            with tracing.resume(item.trace):
                await self._deliver(handle, item.signals)
        elif item.failure is not None:
            await self._failed(handle, item.failure)
        elif item.quarantine is not None:
            await self._quarantine(handle, item.quarantine)

    async def _finish_pending(self, handle: StrategyHandle, item: _Followup) -> list[Signal] | None:
        """Await what an inline ``on_event`` returned, under what its call left of the timeout.

        The time the follow-up waited behind the instance's earlier signals is not charged:
        the budget starts when the await does.
        """
        tracer = telemetry.state.tracer if telemetry.state.enabled else None
        pending = item.pending
        left = handle.timeout_s - item.sync_s
        started = time.perf_counter()
        try:
            if left <= 0:
                raise _Overran()
            async with asyncio.timeout(left):
                result = await pending
            signals = self._result_signals(handle, result)
        except PluginQuarantined as exc:
            handle.stats.observe(item.sync_s + time.perf_counter() - started)
            await self._quarantine(handle, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - any strategy fault counts against it
            elapsed = item.sync_s + time.perf_counter() - started
            await self._failed(handle, self._call_failed(handle, exc, elapsed, tracer, item.traced))
            return None
        finally:
            # never awaited when the time was already up: nothing may keep running behind it
            if inspect.iscoroutine(pending):
                pending.close()
            elif isinstance(pending, asyncio.Future) and not pending.done():
                pending.cancel()
        self._succeeded(handle, item.sync_s + time.perf_counter() - started, tracer, item.traced)
        handle.stats.last_call_at = self._clock.monotonic()
        return signals
