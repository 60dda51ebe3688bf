"""What a strategy is, what it gets, and what the runner measures of it."""

from __future__ import annotations

import bisect
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.markets import MarketRules
from tradebot.core.models import Candle, Signal, Ticker

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


def _pair_tuple(pairs: Iterable[str]) -> tuple[str, ...]:
    """``StrategyContext.pairs`` from any iterable of pair names (a named converter, for type checkers)."""
    return tuple(pairs)


@attrs.frozen
class StrategyContext:
    """What a strategy factory gets besides its own config: who it is and what it trades."""

    name: str
    """The instance name (``[strategies.<name>]``); put it in every :class:`Signal`."""
    pairs: tuple[str, ...] = attrs.field(converter=_pair_tuple)
    clock: Clock = attrs.field(factory=SystemClock)
    logger: logging.Logger = attrs.field(
        default=attrs.Factory(lambda self: logging.getLogger(f"tradebot.strategy.{self.name}"), takes_self=True)
    )
    markets: Callable[[str], MarketRules | None] = attrs.field(default=lambda pair: None)
    """The exchange's market rules of a pair (minimums, precision, fees), None when unknown:
    size orders with :func:`tradebot.core.markets.order_volume`."""


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
