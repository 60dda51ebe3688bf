"""Strategies and the runner that keeps them from freezing the bot.

A strategy turns market events into :class:`~tradebot.core.models.Signal` values. The
:class:`StrategyRunner` gives every configured instance its own task and its own conflated
queue, so a slow strategy only ever sees the freshest prices and never slows the others.
Every call has its own timeout; signals reach the sink (risk gate and executor) only after
the call returned, so a timed-out or cancelled call can never leave a half-submitted order.
A strategy that keeps timing out or raising is quarantined and reported while the others
keep trading.

How a strategy is called depends on what it is:

* ``async def on_event``: awaited on the event loop, cancelled when it overruns;
* plain ``def on_event``: run on a worker thread of its own, so CPU-bound or blocking code
  cannot stall the loop. A thread cannot be killed: a timed-out call's result is discarded
  and the strategy is not called again until that call has returned;
* plain ``def on_event`` with ``blocking = False``: quick, pure computations (the built-in
  strategies) run inline on the loop, saving a thread hop per event. Such a call cannot be
  interrupted; one that overran its timeout anyway is counted as timed out and its signals
  are discarded.

Inline instances share one bus subscription and one dispatching task, which calls each of
them in turn for every event. Waking a task per instance per event cost more than a quick
strategy's whole call, and separate tasks buy such strategies nothing: an inline call holds
the loop whichever task makes it. What may wait, handing signals to the sink (which places
orders over the network) or reporting a failure, the dispatcher never does itself: it
passes that work to the instance's own task, so an order being placed for one instance
never delays another. A failure, or a second batch of signals before the first was handed
over, also *detaches* the instance: until its task has caught up, the instance's events
queue (conflated) on its own queue and its task calls it; once that queue is empty the
dispatcher calls it again. So every instance sees its events in order, one call at a time,
a failure is counted before the next call, and signals waiting for the sink stay bounded.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import inspect
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from tradebot.core import telemetry, tracing
from tradebot.core.bus import BusClosed, ConflatingQueue, EventBus, Subscription
from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import PluginError, PluginQuarantined, TradebotError, describe
from tradebot.core.models import Alert, AlertLevel, Candle, Signal, Ticker

if TYPE_CHECKING:
    from tradebot.core.config import StrategyInstance
    from tradebot.core.plugins import PluginHost

__all__ = [
    "DURATION_BUCKETS_S",
    "PRICE_SOURCES",
    "CallMode",
    "PriceSampler",
    "SignalSink",
    "Strategy",
    "StrategyContext",
    "StrategyHandle",
    "StrategyRunner",
    "StrategyStats",
]

log = logging.getLogger("tradebot.strategy")

MarketEvent = Ticker | Candle
SignalSink = Callable[[list[Signal]], Awaitable[None]]
"""Where signals go after a successful call: the risk gate and order executor."""
QuarantineCallback = Callable[[str, str], Any]

DURATION_BUCKETS_S: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
"""Upper bounds of the call-duration histogram; one more bucket counts everything above."""
_FIRST_BUCKET_S = DURATION_BUCKETS_S[0]

PRICE_SOURCES: tuple[str, ...] = ("ticker", "candle")


@runtime_checkable
class Strategy(Protocol):
    """What a strategy plugin's factory returns.

    ``on_event`` may be ``def`` or ``async def`` and returns the signals to act on (an
    empty sequence for none). Optional members the runner honours when present:

    * ``async def start()`` / ``def start()``: called once before the first event;
    * ``async def stop()`` / ``def stop()``: called once when the runner stops;
    * ``blocking: bool``: for a plain ``def on_event``, False runs it inline on the event
      loop (only for quick code); the default is True, a worker thread.
    """

    def on_event(self, event: MarketEvent) -> Sequence[Signal] | Awaitable[Sequence[Signal]]:
        """React to one ticker or candle."""


@attrs.frozen
class StrategyContext:
    """What a strategy factory gets besides its own config: who it is and what it trades."""

    name: str
    """The instance name (``[strategies.<name>]``); put it in every :class:`Signal`."""
    pairs: tuple[str, ...] = attrs.field(converter=tuple)
    clock: Clock = attrs.field(factory=SystemClock)
    logger: logging.Logger = attrs.field(
        default=attrs.Factory(lambda self: logging.getLogger(f"tradebot.strategy.{self.name}"), takes_self=True)
    )


class PriceSampler:
    """Turns market events into price samples for indicator-based strategies.

    ``source="ticker"``: every ticker's mid is a sample. ``source="candle"``: the close of
    every *finished* bar is a sample; a bar is finished when a bar of the same pair and
    interval with a later ``open_time`` arrives. Events of the other kind give None.
    """

    def __init__(self, source: str = "ticker") -> None:
        if source not in PRICE_SOURCES:
            raise ValueError(f"source must be one of {', '.join(PRICE_SOURCES)} (got {source!r})")
        self.source = source
        self._bars: dict[tuple[str, int], Candle] = {}

    def sample(self, event: object) -> Decimal | None:
        if self.source == "ticker":
            return event.mid if isinstance(event, Ticker) else None
        if not isinstance(event, Candle):
            return None
        key = (event.pair, event.interval_min)
        previous = self._bars.get(key)
        if previous is not None and event.open_time < previous.open_time:
            return None  # a late update of a bar already counted
        self._bars[key] = event
        if previous is not None and event.open_time > previous.open_time:
            return previous.close
        return None


class CallMode(enum.StrEnum):
    """How the runner calls a strategy (see the module docstring)."""

    ASYNC = "async"
    THREAD = "thread"
    INLINE = "inline"


@attrs.define
class StrategyStats:
    """Per-instance call measurements and outcomes."""

    calls: int = 0
    succeeded: int = 0
    timeouts: int = 0
    errors: int = 0
    slow: int = 0
    """Calls that took ``warn_s`` or longer."""
    waits: int = 0
    """Events that found the worker still busy with an abandoned call."""
    signals: int = 0
    sink_errors: int = 0
    consecutive_failures: int = 0
    last_s: float = 0.0
    max_s: float = 0.0
    total_s: float = 0.0
    buckets: list[int] = attrs.Factory(lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    last_error: str | None = None
    last_call_at: float | None = None
    """Clock time (monotonic) of the last successful call; for inline instances, when the
    dispatcher took the batch of events the call was for (one clock reading per batch, at
    most the batch's duration early: microseconds for a few quick strategies)."""

    @property
    def mean_s(self) -> float:
        return self.total_s / self.calls if self.calls else 0.0

    def observe(self, duration_s: float) -> None:
        self.calls += 1
        self.last_s = duration_s
        self.total_s += duration_s
        if duration_s > self.max_s:
            self.max_s = duration_s
        self.buckets[bisect.bisect_left(DURATION_BUCKETS_S, duration_s)] += 1

    def histogram(self) -> dict[str, int]:
        """Bucket label (``<=0.01``, ``>5.0``) -> calls."""
        labels = [f"<={b:g}" for b in DURATION_BUCKETS_S] + [f">{DURATION_BUCKETS_S[-1]:g}"]
        return dict(zip(labels, self.buckets, strict=True))


class _Worker:
    """The one thread a blocking strategy runs on: calls run one at a time, in order.

    The thread is a daemon so a strategy stuck for good can never keep the process from
    exiting; threads cannot be killed, so it is abandoned instead.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = False
        self.busy_since = 0.0
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the thread; the future settles on the loop when it returns."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"strategy-{self.name}", daemon=True)
            self._thread.start()
        self.busy = True
        self.busy_since = time.perf_counter()
        self._jobs.put((loop, fut, fn, args))
        return fut

    async def wait_idle(self) -> None:
        """Until the running call (maybe abandoned) has returned."""
        if not self.busy:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        await fut

    def stop(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fut, fn, args = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting task
                error = exc
            except BaseException as exc:  # noqa: BLE001 - SystemExit & co. must not kill the worker silently
                error = RuntimeError(f"strategy raised {type(exc).__name__}: {exc}")
            try:
                loop.call_soon_threadsafe(self._settle, fut, result, error)
            except RuntimeError:
                return  # the loop is closed: nobody is waiting any more

    def _settle(self, fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.busy = False
        if not fut.done():  # a timed-out call's future was cancelled: its result is discarded
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


@attrs.define(eq=False)
class StrategyHandle:
    """One strategy instance as the runner runs it."""

    name: str
    plugin: str
    strategy: Any
    pairs: tuple[str, ...] | None
    timeout_s: float
    warn_s: float
    max_failures: int
    mode: CallMode
    subscription: Subscription
    """Where the instance's events come from; inline instances share one (its stats are the
    whole group's)."""
    stats: StrategyStats = attrs.Factory(StrategyStats)
    quarantined: str | None = None
    """Why the instance was quarantined, or None while it trades."""
    started: bool = False
    trace_countdown: int = 0
    """Untraced quiet calls left before the next sampled span."""
    next_sample_at: float = 0.0
    """``perf_counter`` time before which no quiet call gets a span."""
    worker: _Worker | None = None
    on_event: Callable[..., Any] = attrs.field(init=False)
    pair_set: frozenset[str] | None = attrs.field(init=False)
    filter_pairs: frozenset[str] | None = None
    """Inline instances: the pairs the dispatcher checks; None while the shared subscription
    has never delivered any pair outside this instance's (see ``_join_group``)."""
    quick_s: float = attrs.field(init=False)
    """Calls shorter than this are neither slow nor overran: ``min(warn_s, timeout_s)``."""
    backlog: ConflatingQueue[Any] | None = attrs.field(init=False, default=None)
    """Inline instances: what the instance's own task does while it is detached from the
    shared dispatcher (see the module docstring): follow-ups of a dispatched call, then the
    events that arrived meanwhile (conflated)."""
    detached: bool = True
    """Inline instances: True while the instance's own task, not the dispatcher, calls it
    (before ``start`` returned, and while a failure or a second batch of signals is handled)."""
    backlog_traces: dict[Hashable, Any] = attrs.Factory(dict)
    """Conflation key -> trace context of the latest backlog event queued under it."""

    def __attrs_post_init__(self) -> None:
        self.on_event = self.strategy.on_event
        self.pair_set = frozenset(self.pairs) if self.pairs is not None else None
        self.quick_s = min(self.warn_s, self.timeout_s)
        if self.mode is CallMode.THREAD:
            self.worker = _Worker(self.name)
        elif self.mode is CallMode.INLINE:
            self.backlog = ConflatingQueue()

    def reset_backlog(self) -> None:
        """Inline instances: an empty, open backlog, detached until the instance's task starts."""
        if self.backlog is None or self.backlog.closed:
            self.backlog = ConflatingQueue()
        self.backlog_traces.clear()
        self.detached = True


class _Followup:
    """Work of a dispatched inline call that may wait, done on the instance's own task.

    One of: ``signals`` to hand to the sink; a ``failure`` message that counts towards
    quarantine; a ``quarantine`` reason (the plugin host refused the plugin); an awaitable
    ``pending`` that an inline ``on_event`` returned, to finish under the rest of its timeout.
    (A plain slotted class: one is made per signal batch, on the hot path.)
    """

    __slots__ = ("signals", "failure", "quarantine", "pending", "sync_s", "traced", "trace")

    def __init__(
        self,
        signals: list[Signal] | None = None,
        *,
        failure: str | None = None,
        quarantine: str | None = None,
        pending: Any = None,
        sync_s: float = 0.0,
        traced: bool = False,
    ) -> None:
        self.signals = signals
        self.failure = failure
        self.quarantine = quarantine
        self.pending = pending
        self.sync_s = sync_s
        """How long the call that returned ``pending`` took before it returned."""
        self.traced = traced
        self.trace: Any = None


class _Overran(Exception):
    """An inline call returned, but only after its timeout."""


class StrategyRunner:
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
        if not callable(getattr(strategy, "on_event", None)):
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
            subscription = self._bus.subscribe(f"strategy:{name}", kinds=(Ticker, Candle), pairs=pairs or None)
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
                self._dispatchers.append(asyncio.create_task(self._dispatch_inline(sub), name="strategies:inline"))
        else:
            serve = self._serve(handle)
        self._tasks[handle.name] = asyncio.create_task(serve, name=f"strategy:{handle.name}")

    # --- inline instances: one dispatcher, a task each for what may wait ----------------

    async def _dispatch_inline(self, sub: Subscription) -> None:
        """Call every attached inline instance for each event of the shared subscription."""
        events = sub.queue
        try:
            while True:
                try:
                    self._dispatch_queued(sub)
                except Exception:  # noqa: BLE001 - never let one batch end every inline strategy
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
                            if elapsed > stats.max_s:
                                stats.max_s = elapsed
                            stats.buckets[
                                0 if elapsed <= _FIRST_BUCKET_S else bisect.bisect_left(DURATION_BUCKETS_S, elapsed)
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
        log.exception("strategy %r: the dispatcher failed handling its call", handle.name, exc_info=exc)
        backlog = handle.backlog
        assert backlog is not None
        handle.detached = True
        if not backlog.closed:
            with contextlib.suppress(Exception):
                backlog.put_nowait(_Followup(failure=f"dispatching its call failed: {describe(exc)}"))

    def _after_inline(self, handle: StrategyHandle, followup: _Followup | None, now: float, trace: Any) -> None:
        """Pass what a call left that may wait (signals, a failure) to the instance's own task."""
        if followup is None:
            handle.stats.last_call_at = now
            return
        followup.trace = trace
        backlog = handle.backlog
        assert backlog is not None
        if followup.signals is not None:
            handle.stats.last_call_at = now
            if not backlog and not backlog.closed:
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
                    item = await backlog.get()
                except BusClosed:
                    break
            else:
                item = backlog.get_nowait()
            if type(item) is _Followup:
                if item.signals is not None and item.trace is None:  # the common case, kept short
                    handle.stats.signals += len(item.signals)
                    try:
                        await self._sink(item.signals)
                    except Exception:  # noqa: BLE001 - the sink's failure is not the strategy's
                        self._sink_failed(handle, item.signals)
                else:
                    await self._follow_up(handle, item)
            else:
                trace = handle.backlog_traces.pop(self._bus._key(item), None) if handle.backlog_traces else None
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
                with tracing.resume(item.trace):
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
                except asyncio.CancelledError as exc:  # raised by the strategy: a plain call is never cancelled
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
            await self._failed(handle, self._call_failed(handle, exc, time.perf_counter() - started, tracer, traced))
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
    def _call_failed(handle: StrategyHandle, exc: Exception, elapsed: float, tracer: Any, traced: bool) -> str:
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
        try:
            await self._sink(signals)
        except Exception:  # noqa: BLE001 - the sink's failure is not the strategy's
            self._sink_failed(handle, signals)

    @staticmethod
    def _sink_failed(handle: StrategyHandle, signals: list[Signal]) -> None:
        handle.stats.sink_errors += 1
        log.exception("the signal sink failed on %d signal(s) of strategy %r", len(signals), handle.name)

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
            await self._quarantine(handle, f"{stats.consecutive_failures} consecutive failures, last: {message}")

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
            except Exception:  # noqa: BLE001 - reporting must not break the runner
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
            except Exception:  # noqa: BLE001
                log.exception("could not broadcast the quarantine of strategy %r", handle.name)

    # --- start and stop -----------------------------------------------------------------

    async def _start(self, handle: StrategyHandle) -> bool:
        start = getattr(handle.strategy, "start", None)
        if callable(start):
            try:
                await self._invoke(handle, "start", start)
            except Exception as exc:  # noqa: BLE001 - includes timeouts
                what = "timed out" if isinstance(exc, (TimeoutError, _Overran)) else f"raised {type(exc).__name__}: {exc}"
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
        stop = getattr(handle.strategy, "stop", None)
        try:
            if callable(stop):
                if worker is not None and worker.busy:
                    log.warning("strategy %r is still busy; not calling stop()", handle.name)
                else:
                    await self._invoke(handle, "stop", stop, timeout_s=min(handle.timeout_s, self.stop_timeout_s))
        except Exception as exc:  # noqa: BLE001 - stopping must go on for the others
            log.error("strategy %r: stop failed: %s: %s", handle.name, type(exc).__name__, exc)
        finally:
            if worker is not None:
                worker.stop()


def _trace_after(
    tracer: Any, handle: StrategyHandle, elapsed_s: float, outcome: str, error: BaseException | None, message: str
) -> None:
    """A span for a call that was not sampled but turned out to matter, with its real times."""
    from opentelemetry.trace import Status, StatusCode

    end = time.time_ns()
    span = tracer.start_span(
        f"{handle.plugin}.on_event",
        start_time=end - int(elapsed_s * 1e9),
        attributes={
            "tradebot.plugin": handle.plugin,
            "tradebot.hook": "on_event",
            "tradebot.strategy": handle.name,
            "tradebot.outcome": outcome,
        },
    )
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, message))
    span.end(end_time=end)


def _pick(explicit: Any, instance: Any, field: str, default: Any) -> Any:
    if explicit is not None:
        return explicit
    if instance is not None:
        return getattr(instance, field)
    return default


def _call_mode(strategy: Any, blocking: bool | None) -> CallMode:
    fn = strategy.on_event
    if inspect.iscoroutinefunction(fn):
        return CallMode.ASYNC
    if blocking is None:
        blocking = bool(getattr(strategy, "blocking", True))
    return CallMode.THREAD if blocking else CallMode.INLINE


def _signals(handle: StrategyHandle, result: Any) -> list[Signal]:
    """The call's result as a list of signals, stamped with the instance name; TypeError if bad."""
    if type(result) is not list and type(result) is not tuple and (
        isinstance(result, Signal) or not isinstance(result, Sequence)
    ):
        raise TypeError(f"on_event must return a sequence of Signal, not {type(result).__name__}")
    out: list[Signal] = []
    for item in result:
        if not isinstance(item, Signal):
            raise TypeError(f"on_event returned a {type(item).__name__} where a Signal was expected")
        if handle.pairs is not None and item.pair not in handle.pairs:
            raise ValueError(f"signal for {item.pair}, which this instance does not trade")
        if item.strategy != handle.name:
            item = attrs.evolve(item, strategy=handle.name)
        out.append(item)
    return out


def _as_exception(exc: BaseException) -> Exception:
    """A strategy's error as an ``Exception``: a ``CancelledError`` it raised becomes a fault."""
    if isinstance(exc, Exception):
        return exc
    error = RuntimeError(f"on_event raised {type(exc).__name__}: {describe(exc)}")
    error.__cause__ = exc
    return error
