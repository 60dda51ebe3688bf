"""What a strategy is, what it gets, and what the runner measures of it."""

from __future__ import annotations

import bisect
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.markets import MarketRules
from tradebot.core.models import Candle, OrderType, Side, Signal, Ticker

ZERO = Decimal(0)

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


class PositionReader(Protocol):
    """Where a strategy context reads the instance's position: the bot's persisted portfolio
    and its order journal (:class:`BotPositions`)."""

    def position(self, strategy: str, pair: str) -> Decimal:
        """Base volume the instance holds of ``pair`` (filled orders only)."""

    def working(self, strategy: str, pair: str) -> tuple[Decimal, Decimal]:
        """Unfilled volume of the instance's working (buys, sells) of ``pair``."""


class BotPositions:
    """:class:`PositionReader` over the bot's portfolio and order journal.

    The working orders are read from the journal once and kept until :meth:`invalidate`
    (the bot calls it whenever an order is journalled, changes or fills), so a strategy that
    asks on every tick costs a dictionary lookup, not a database query.
    """

    def __init__(self, portfolio: Any, working_orders: Callable[[], Iterable[Any]]) -> None:
        self.portfolio = portfolio
        self.working_orders = working_orders
        self._working: dict[tuple[str, str], tuple[Decimal, Decimal]] | None = None

    def invalidate(self) -> None:
        """The journal's working orders changed: read them again when next asked."""
        self._working = None

    def position(self, strategy: str, pair: str) -> Decimal:
        volume: Decimal = self.portfolio.strategy_position(strategy, pair).volume
        return volume

    def working(self, strategy: str, pair: str) -> tuple[Decimal, Decimal]:
        if self._working is None:
            working: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
            for order in self.working_orders():
                key = (order.strategy, order.pair)
                buys, sells = working.get(key, (ZERO, ZERO))
                if order.side is Side.BUY:
                    buys += order.remaining
                else:
                    sells += order.remaining
                working[key] = (buys, sells)
            self._working = working
        return self._working.get((strategy, pair), (ZERO, ZERO))


IN_FLIGHT_TTL_S = 30.0
"""A signal made through :meth:`StrategyContext.signal` counts as on its way to the
exchange until the bot settles it (journalled or refused), at most this long."""


@attrs.frozen
class StrategyContext:
    """What a strategy factory gets besides its own config: who it is, what it trades, and
    what it holds.

    **Positions.** The bot's persisted portfolio is the one owner of positions; a strategy
    keeps no copy of its own. It reads its share through this context whenever it decides,
    so it sees what it holds at start (after a restart too) and after every fill:

    * :meth:`position` - what the instance holds of a pair (filled orders);
    * :meth:`exposure` - that plus its working orders and the signals it made through
      :meth:`signal` that the bot has not yet taken (buy positive, sell negative); decide
      whether to buy on this, so a buy on its way is not repeated;
    * :meth:`sellable` - what it may still sell: its position less its working and
      on-their-way sells. The risk gate refuses a sell beyond it, and any sell beyond what
      the bot holds.

    A refused buy never shows as held: only fills change the position. Signals should be
    made with :meth:`signal`, which records them as on their way. Without a position
    reader (a strategy tried on its own, outside a bot) every signal made through
    :meth:`signal` counts as filled at once.
    """

    name: str
    """The instance name (``[strategies.<name>]``); put it in every :class:`Signal`."""
    pairs: tuple[str, ...] = attrs.field(converter=_pair_tuple)
    clock: Clock = attrs.field(factory=SystemClock)
    logger: logging.Logger = attrs.field(
        default=attrs.Factory(
            lambda self: logging.getLogger(f"tradebot.strategy.{self.name}"), takes_self=True
        )
    )
    markets: Callable[[str], MarketRules | None] = attrs.field(default=lambda pair: None)
    """The exchange's market rules of a pair (minimums, precision, fees), None when unknown:
    size orders with :func:`tradebot.core.markets.order_volume`."""
    positions: PositionReader | None = attrs.field(default=None, eq=False, repr=False)
    """Where the instance's position is read (set by the bot)."""
    _sent: deque[tuple[str, Decimal, float]] = attrs.field(factory=deque, init=False, eq=False, repr=False)
    """Signals made through :meth:`signal` not yet settled: (pair, signed volume, monotonic time)."""
    _filled: dict[str, Decimal] = attrs.field(factory=dict, init=False, eq=False, repr=False)
    """Without a position reader: the net of the signals made, counted as filled at once."""

    # --- positions ----------------------------------------------------------------------

    def _on_the_way(self, pair: str) -> tuple[Decimal, Decimal]:
        """(buy volume, sell volume) of signals not yet settled by the bot."""
        sent = self._sent
        if sent:
            horizon = self.clock.monotonic() - IN_FLIGHT_TTL_S
            while sent and sent[0][2] < horizon:
                sent.popleft()
        buys = sells = ZERO
        for p, signed, _ in sent:
            if p == pair:
                if signed > 0:
                    buys += signed
                else:
                    sells -= signed
        return buys, sells

    def position(self, pair: str) -> Decimal:
        """Base volume this instance holds of ``pair``, as the bot's portfolio records it."""
        if self.positions is None:
            return self._filled.get(pair, ZERO)
        return self.positions.position(self.name, pair)

    def exposure(self, pair: str) -> Decimal:
        """Position plus working orders plus signals on their way (signed)."""
        if self.positions is None:
            return self.position(pair)
        working_buys, working_sells = self.positions.working(self.name, pair)
        buys, sells = self._on_the_way(pair)
        return self.positions.position(self.name, pair) + working_buys - working_sells + buys - sells

    def sellable(self, pair: str) -> Decimal:
        """What this instance may still sell of ``pair``: its position less its sells under way."""
        if self.positions is None:
            return max(self.position(pair), ZERO)
        _, working_sells = self.positions.working(self.name, pair)
        _, sells = self._on_the_way(pair)
        return max(self.positions.position(self.name, pair) - working_sells - sells, ZERO)

    def signal(
        self,
        pair: str,
        side: Side,
        volume: Decimal,
        reason: str = "",
        *,
        order_type: OrderType = OrderType.MARKET,
        limit_price: Decimal | None = None,
    ) -> Signal:
        """A signal of this instance, recorded as on its way until the bot settles it."""
        sig = Signal(
            strategy=self.name,
            pair=pair,
            side=side,
            volume=volume,
            order_type=order_type,
            limit_price=limit_price,
            reason=reason,
        )
        signed = volume if side is Side.BUY else -volume
        if self.positions is None:
            self._filled[pair] = self._filled.get(pair, ZERO) + signed
        else:
            self._sent.append((pair, signed, self.clock.monotonic()))
        return sig

    def settle(self, signal: Signal) -> None:
        """The bot took ``signal`` (its order is journalled, or it was refused): no longer on its way."""
        signed = signal.volume if signal.side is Side.BUY else -signal.volume
        for i, (pair, vol, _) in enumerate(self._sent):
            if pair == signal.pair and vol == signed:
                del self._sent[i]
                return


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
