"""The event bus: market data and trading events from publishers to subscribers.

Each subscriber owns one bounded :class:`ConflatingQueue`:

* market data (tickers, candles) is *conflated*: the queue keeps only the latest event per
  ``(kind, pair)`` key, so a slow consumer sees fresh prices and never makes memory grow;
* everything else (orders, fills, alerts ...) must be delivered: it waits in a bounded FIFO
  and a publisher that finds the queue full awaits until there is room (backpressure).

Closing the bus ends every subscriber's iteration once it has drained what was queued.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Generator, Hashable, Iterator
from typing import Any, Generic, TypeVar

import attrs

from tradebot.core.errors import PermanentError
from tradebot.core.models import Candle, Ticker

__all__ = [
    "BusClosed",
    "BusStats",
    "ConflatingQueue",
    "EventBus",
    "QueueFull",
    "Subscription",
    "SubscriptionStats",
    "market_key",
]

T = TypeVar("T")


_EXHAUSTED: Iterator[Any] = iter(())  # an iterator that is over: ``yield from`` it returns at once


class _Done:
    """An awaitable that is already finished (awaiting it never suspends).

    Its ``__await__`` hands out one exhausted iterator rather than being a generator
    function: no generator is built and run for each tick a feed publishes.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return _EXHAUSTED  # type: ignore[return-value]  # an exhausted iterator awaits like a finished generator


_DONE = _Done()

_LATEST: Any = object()  # marks an entry whose value lives in the latest-value table


class BusClosed(PermanentError):
    """The bus or queue was closed: nothing more can be published to it."""


class QueueFull(Exception):
    """``put_nowait`` found no room for a must-deliver item."""


def market_key(event: object) -> Hashable | None:
    """The conflation key of an event, or None when it must be delivered.

    Tickers conflate per pair; candles per pair and interval (an updated bar supersedes the
    previous update of the same bar).
    """
    cls = type(event)
    if cls is Ticker:
        return ("ticker", event.pair)  # type: ignore[attr-defined]
    if cls is Candle:
        return ("candle", event.pair, event.interval_min)  # type: ignore[attr-defined]
    if isinstance(event, Ticker):
        return ("ticker", event.pair)
    if isinstance(event, Candle):
        return ("candle", event.pair, event.interval_min)
    return None


class ConflatingQueue(Generic[T]):
    """A single-consumer queue that keeps the latest value per key and bounds the rest.

    * :meth:`put_latest` never blocks: it replaces the queued value of the same key (keeping
      that key's place in line) or appends the key. Its size is bounded by the number of
      distinct keys.
    * :meth:`put` appends a must-deliver item and awaits while ``maxsize`` of them are queued.
    * :meth:`get` returns entries in arrival order; after :meth:`close` it drains what is
      left (unless closed with ``drain=False``) and then raises :class:`BusClosed`.
      ``async for`` ends at that point instead.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize <= 0:
            raise ValueError(f"maxsize must be > 0 (got {maxsize})")
        self.maxsize = maxsize
        self._entries: collections.deque[tuple[Hashable | None, Any]] = collections.deque()
        self._latest: dict[Hashable, T] = {}
        self._pinned = 0
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self.conflated = 0
        """Values dropped because a newer value of the same key superseded them."""
        self.delivered = 0
        self.max_depth = 0

    # --- inspection -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pinned(self) -> int:
        """Must-deliver items waiting."""
        return self._pinned

    # --- producing --------------------------------------------------------------------

    def put_latest(self, key: Hashable, item: T) -> bool:
        """Queue ``item`` as the latest value of ``key``. True when it superseded one."""
        if self._closed:
            raise BusClosed("queue is closed")
        latest = self._latest
        if key in latest:
            latest[key] = item
            self.conflated += 1
            return True
        latest[key] = item
        entries = self._entries
        entries.append((key, _LATEST))
        if len(entries) > self.max_depth:
            self.max_depth = len(entries)
        if self._getters:
            self._wake(self._getters)
        return False

    def put_back(self, key: Hashable, item: T) -> bool:
        """Queue ``item`` as the latest of ``key`` unless a value of ``key`` is queued already.

        For a consumer that took an item and could not act on it: a newer value, if one came
        meanwhile, wins. True when the item was queued again.
        """
        if key in self._latest and not self._closed:
            return False
        self.put_latest(key, item)  # BusClosed once closed
        return True

    def put_nowait(self, item: T) -> None:
        """Queue a must-deliver item; :class:`QueueFull` when ``maxsize`` are waiting."""
        if self._closed:
            raise BusClosed("queue is closed")
        if self._pinned >= self.maxsize:
            raise QueueFull(f"{self._pinned} must-deliver items are waiting")
        self._append_pinned(item)

    async def put(self, item: T) -> None:
        """Queue a must-deliver item, waiting for room (backpressure); never drops it."""
        while True:
            if self._closed:
                raise BusClosed("queue is closed")
            if self._pinned < self.maxsize:
                self._append_pinned(item)
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                # pass the wake-up on so a freed slot is not lost with us
                if not self._closed and self._pinned < self.maxsize:
                    self._wake(self._putters)
                raise

    def _append_pinned(self, item: T) -> None:
        self._pinned += 1
        entries = self._entries
        entries.append((None, item))
        if len(entries) > self.max_depth:
            self.max_depth = len(entries)
        if self._getters:
            self._wake(self._getters)

    # --- consuming --------------------------------------------------------------------

    def get_nowait(self) -> T:
        """The oldest entry; ``IndexError`` when empty, :class:`BusClosed` when closed and empty."""
        if not self._entries:
            if self._closed:
                raise BusClosed("queue is closed")
            raise IndexError("queue is empty")
        return self._pop()

    def take_all(self) -> list[T]:
        """Everything queued now, oldest first, in one call (an empty list when nothing is)."""
        entries = self._entries
        if not entries:
            return []
        latest = self._latest
        out: list[T] = []
        pinned = 0
        for key, item in entries:
            if item is _LATEST:
                out.append(latest.pop(key))
            else:
                out.append(item)
                pinned += 1
        entries.clear()
        self.delivered += len(out)
        if pinned:
            self._pinned -= pinned
            for _ in range(pinned):
                if not self._putters:
                    break
                self._wake(self._putters)
        return out

    async def get(self) -> T:
        """Wait for the oldest entry; :class:`BusClosed` once closed and drained."""
        if not self._entries:
            await self.wait()
        return self._pop()

    async def wait(self) -> None:
        """Wait until an entry is queued (taking none); :class:`BusClosed` once closed and drained.

        For a consumer that then takes everything queued with :meth:`take_all`, without a
        coroutine switch per entry.
        """
        while not self._entries:
            if self._closed:
                raise BusClosed("queue is closed")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                if self._entries and self._getters:
                    self._wake(self._getters)
                raise

    def _pop(self) -> T:
        key, item = self._entries.popleft()
        if item is _LATEST:
            item = self._latest.pop(key)
        else:
            self._pinned -= 1
            if self._putters:
                self._wake(self._putters)
        self.delivered += 1
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._entries:  # fast path: no coroutine switch while there is work
            return self._pop()
        try:
            return await self.get()
        except BusClosed:
            raise StopAsyncIteration from None

    # --- closing ----------------------------------------------------------------------

    def close(self, *, drain: bool = True) -> None:
        """Refuse new items and wake everybody waiting.

        With ``drain`` the consumer still receives what is queued, then its iteration ends;
        without, queued entries are discarded at once.
        """
        self._closed = True
        if not drain:
            self._entries.clear()
            self._latest.clear()
            self._pinned = 0
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    @staticmethod
    def _wake(waiters: collections.deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


@attrs.frozen
class SubscriptionStats:
    """Counters of one subscriber's queue."""

    name: str
    depth: int
    max_depth: int
    pinned: int
    delivered: int
    conflated: int


@attrs.frozen
class BusStats:
    """Counters of the bus: events published, values conflated, each subscriber's queue."""

    published: int
    conflated: int
    subscribers: tuple[SubscriptionStats, ...]

    def subscriber(self, name: str) -> SubscriptionStats:
        for sub in self.subscribers:
            if sub.name == name:
                return sub
        raise KeyError(name)


class Subscription:
    """One subscriber's view of the bus: iterate it with ``async for``.

    ``kinds`` (event classes) and ``pairs`` filter what is delivered; None accepts all.
    Events without a ``pair`` attribute pass any pair filter.
    """

    def __init__(
        self,
        bus: EventBus,
        name: str,
        queue: ConflatingQueue[Any],
        kinds: tuple[type, ...] | None,
        pairs: frozenset[str] | None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.kinds = kinds
        self.pairs = pairs
        self._bus = bus
        self.trace_contexts: dict[Hashable, Any] = {}
        """Conflation key -> trace context of the latest event queued under it (tracing on only),
        so the consumer continues the trace of the market event it actually handles."""

    def trace_of(self, event: object) -> Any:
        """The trace context the event was published under (None with tracing off)."""
        if not self.trace_contexts:
            return None
        return self.trace_contexts.pop(self._bus._key(event), None)

    def accepts(self, event: object) -> bool:
        if self.kinds is not None and not isinstance(event, self.kinds):
            return False
        if self.pairs is not None:
            pair = getattr(event, "pair", None)
            if pair is not None and pair not in self.pairs:
                return False
        return True

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.queue

    async def get(self) -> Any:
        """The next event; :class:`BusClosed` when the subscription has ended."""
        return await self.queue.get()

    def close(self) -> None:
        """Unsubscribe now; queued events are discarded and the iteration ends."""
        self._bus._unsubscribe(self)
        self.queue.close(drain=False)

    @property
    def stats(self) -> SubscriptionStats:
        q = self.queue
        return SubscriptionStats(
            name=self.name,
            depth=len(q),
            max_depth=q.max_depth,
            pinned=q.pinned,
            delivered=q.delivered,
            conflated=q.conflated,
        )

    def __repr__(self) -> str:
        return f"<Subscription {self.name!r} depth={len(self.queue)}>"


class EventBus:
    """Fan-out of events to subscribers, conflating market data and bounding everything else.

    ``maxsize`` bounds the must-deliver items waiting per subscriber; ``key`` maps an event
    to its conflation key (None: must deliver), :func:`market_key` by default.
    """

    def __init__(self, *, maxsize: int = 1024, key: Callable[[object], Hashable | None] = market_key) -> None:
        self.maxsize = maxsize
        self._key = key
        self._subs: tuple[Subscription, ...] = ()
        self._closed = False
        self.published = 0
        self.conflated = 0
        self.published_by_key: dict[Hashable, int] = {}
        """Events published per conflation key (``("ticker", pair)`` ...): market data by kind
        and pair, what the ``tradebot_market_events`` metric reads."""

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(
        self,
        name: str,
        *,
        kinds: Collection[type] | None = None,
        pairs: Collection[str] | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """A new subscription; it receives what is published from now on."""
        if self._closed:
            raise BusClosed("the event bus is closed", subscriber=name)
        queue: ConflatingQueue[Any] = ConflatingQueue(maxsize or self.maxsize)
        sub = Subscription(
            self,
            name,
            queue,
            tuple(kinds) if kinds is not None else None,
            frozenset(pairs) if pairs is not None else None,
        )
        self._subs = (*self._subs, sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subs = tuple(s for s in self._subs if s is not sub)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subs

    def publish_nowait(self, event: object) -> None:
        """Publish without waiting; :class:`QueueFull` when a must-deliver event finds no room.

        Market data never waits, so this is the cheap path for feeds.
        """
        if self._closed:
            raise BusClosed("the event bus is closed")
        self.published += 1
        key = self._key(event)
        if key is not None:
            counts = self.published_by_key
            counts[key] = counts.get(key, 0) + 1
        for sub in self._subs:
            if not sub.accepts(event):
                continue
            if key is not None:
                if sub.queue.put_latest(key, event):
                    self.conflated += 1
            else:
                sub.queue.put_nowait(event)

    def publish(self, event: object, trace: Any = None) -> Awaitable[None]:
        """Publish to every accepting subscriber; await the result.

        ``trace`` (from :func:`tradebot.core.tracing.capture`) is the trace the event belongs
        to; consumers continue it (see :meth:`Subscription.trace_of`).

        Market data is conflated and never waits. A must-deliver event waits until each
        subscriber's queue has room for it (backpressure), so it is never dropped.

        Delivery to queues with room happens at once; the returned awaitable completes the
        rest. When nothing has to wait it is an already-finished awaitable, which spares the
        feed a coroutine per tick (the hot path).
        """
        if self._closed:
            raise BusClosed("the event bus is closed")
        self.published += 1
        key = self._key(event)
        blocked: list[Subscription] | None = None
        if key is None:
            trace = None
        else:
            counts = self.published_by_key
            counts[key] = counts.get(key, 0) + 1
        for sub in self._subs:
            # Subscription.accepts, inlined: this runs for every subscriber on every tick
            kinds = sub.kinds
            if kinds is not None and not isinstance(event, kinds):
                continue
            pairs = sub.pairs
            if pairs is not None:
                pair = getattr(event, "pair", None)
                if pair is not None and pair not in pairs:
                    continue
            queue = sub.queue
            if key is not None:
                if trace is not None:
                    sub.trace_contexts[key] = trace
                if queue.put_latest(key, event):
                    self.conflated += 1
            elif queue.pinned < queue.maxsize and not queue.closed:
                queue.put_nowait(event)
            elif blocked is None:
                blocked = [sub]
            else:
                blocked.append(sub)
        if blocked is None:
            return _DONE
        return self._deliver_blocked(event, blocked)

    async def _deliver_blocked(self, event: object, subs: list[Subscription]) -> None:
        for sub in subs:
            try:
                await sub.queue.put(event)
            except BusClosed:
                if self._closed:
                    raise
                # that subscriber left while we waited; the others still get the event

    def close(self) -> None:
        """Stop accepting events; subscribers drain what is queued and their iteration ends."""
        self._closed = True
        for sub in self._subs:
            sub.queue.close(drain=True)

    def stats(self) -> BusStats:
        """A snapshot of the counters."""
        return BusStats(
            published=self.published,
            conflated=self.conflated,
            subscribers=tuple(s.stats for s in self._subs),
        )
