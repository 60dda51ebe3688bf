"""One strategy instance as the runner runs it, and the helpers every call path shares."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs

from tradebot.core.bus import ConflatingQueue, Subscription
from tradebot.core.errors import describe
from tradebot.core.models import Signal
from tradebot.core.strategy._api import CallMode, StrategyStats
from tradebot.core.strategy._worker import _Worker


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
    delivering: bool = False
    """True while the instance's task waits for the sink to take a batch of its signals."""
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
    ``pending`` that an inline ``on_event`` returned, to finish under the rest of its timeout
    (``sync_s``: how long the call took before it returned that awaitable). A plain slotted
    class: one is made per signal batch, on the hot path.
    """

    __slots__ = ("failure", "pending", "quarantine", "signals", "sync_s", "trace", "traced")

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
        self.traced = traced
        self.trace: Any = None


class _Overran(Exception):
    """An inline call returned, but only after its timeout."""


def _trace_after(
    tracer: Any,
    handle: StrategyHandle,
    elapsed_s: float,
    outcome: str,
    error: BaseException | None,
    message: str,
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
    if (
        type(result) is not list
        and type(result) is not tuple
        and (isinstance(result, Signal) or not isinstance(result, Sequence))
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
