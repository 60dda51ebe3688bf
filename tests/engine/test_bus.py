"""Event bus: conflation of market data, backpressure for must-deliver events, clean close."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tradebot.core.bus import BusClosed, ConflatingQueue, EventBus, QueueFull, market_key
from tradebot.core.models import Candle, Fill, Side, Ticker

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ticker(pair: str, price: int | str) -> Ticker:
    p = Decimal(price)
    return Ticker(pair=pair, bid=p, ask=p, last=p, volume=Decimal(1), time=T0)


def candle(pair: str, interval: int, close: int) -> Candle:
    c = Decimal(close)
    return Candle(pair, interval, T0, c, c, c, c, c, Decimal(1), 1)


def fill(n: int) -> Fill:
    return Fill(
        trade_id=f"T{n}",
        client_order_id=f"c{n}",
        exchange_order_id=None,
        pair="BTC/USD",
        side=Side.BUY,
        price=Decimal(100),
        volume=Decimal("0.1"),
        fee=Decimal(0),
        time=T0,
    )


def test_market_keys() -> None:
    assert market_key(ticker("BTC/USD", 1)) == ("ticker", "BTC/USD")
    assert market_key(candle("BTC/USD", 5, 1)) == ("candle", "BTC/USD", 5)
    assert market_key(fill(1)) is None


async def test_idle_subscriber_holds_one_value_per_pair_and_kind() -> None:
    bus = EventBus()
    sub = bus.subscribe("slow")
    for i in range(100_000):
        await bus.publish(ticker("BTC/USD" if i % 2 else "ETH/USD", i))
    bus.publish_nowait(candle("BTC/USD", 1, 7))
    bus.publish_nowait(candle("BTC/USD", 5, 8))
    bus.publish_nowait(candle("BTC/USD", 5, 9))

    stats = bus.stats()
    assert stats.published == 100_003
    assert stats.subscriber("slow").depth == 4
    assert stats.subscriber("slow").max_depth == 4
    assert stats.conflated == 100_000 - 2 + 1
    # first-arrival order is kept per key; each key holds its latest value
    got = [sub.queue.get_nowait() for _ in range(4)]
    assert [(type(e).__name__, e.pair) for e in got] == [
        ("Ticker", "ETH/USD"),
        ("Ticker", "BTC/USD"),
        ("Candle", "BTC/USD"),
        ("Candle", "BTC/USD"),
    ]
    assert got[0].last == Decimal(99_998)
    assert got[1].last == Decimal(99_999)
    assert got[2].close == Decimal(7)
    assert got[3].close == Decimal(9)


async def test_slow_consumer_stays_bounded_and_ends_on_the_latest_value() -> None:
    bus = EventBus()
    sub = bus.subscribe("slow")
    seen: list[Ticker] = []

    async def consume() -> None:
        async for event in sub:
            seen.append(event)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(consume())
    for i in range(100_000):
        await bus.publish(ticker("BTC/USD", i))
        if i % 1000 == 0:
            await asyncio.sleep(0)
    bus.close()
    await asyncio.wait_for(task, 5)

    assert sub.stats.max_depth == 1
    assert seen[-1].last == Decimal(99_999)
    assert len(seen) < 1000  # the consumer saw fresh prices, not a backlog
    assert sub.stats.conflated == 100_000 - len(seen)
    prices = [e.last for e in seen]
    assert prices == sorted(prices)


async def test_must_deliver_events_wait_for_room_and_are_never_dropped() -> None:
    bus = EventBus(maxsize=4)
    sub = bus.subscribe("executor")
    for n in range(4):
        await bus.publish(fill(n))
    blocked = asyncio.create_task(bus.publish(fill(4)))
    await asyncio.sleep(0.02)
    assert not blocked.done()  # backpressure: the publisher waits
    assert sub.stats.depth == 4

    first = await sub.get()
    assert first.trade_id == "T0"
    await asyncio.wait_for(blocked, 1)
    assert sub.stats.depth == 4

    received = [first]

    async def consume() -> None:
        async for event in sub:
            received.append(event)
            await asyncio.sleep(0.0005)

    task = asyncio.create_task(consume())
    for n in range(5, 200):
        await bus.publish(fill(n))
        assert sub.stats.pinned <= 4
    bus.close()
    await asyncio.wait_for(task, 5)
    assert [f.trade_id for f in received] == [f"T{n}" for n in range(200)]
    assert sub.stats.max_depth == 4


async def test_fills_between_tickers_all_arrive_in_order() -> None:
    bus = EventBus(maxsize=2)
    sub = bus.subscribe("all")
    got: list[object] = []

    async def consume() -> None:
        async for event in sub:
            got.append(event)
            await asyncio.sleep(0.0002)

    task = asyncio.create_task(consume())
    for i in range(300):
        await bus.publish(ticker("BTC/USD", i))
        if i % 10 == 0:
            await bus.publish(fill(i))
    bus.close()
    await asyncio.wait_for(task, 5)
    fills = [e.trade_id for e in got if isinstance(e, Fill)]
    assert fills == [f"T{i}" for i in range(0, 300, 10)]
    assert [e for e in got if isinstance(e, Ticker)][-1].last == Decimal(299)


async def test_cancelled_publisher_does_not_enqueue_and_passes_the_slot_on() -> None:
    q: ConflatingQueue[int] = ConflatingQueue(maxsize=1)
    await q.put(1)
    first = asyncio.create_task(q.put(2))
    second = asyncio.create_task(q.put(3))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0)
    assert await q.get() == 1
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert q.get_nowait() == 3
    with pytest.raises(IndexError):
        q.get_nowait()


def test_put_nowait_raises_when_full() -> None:
    q: ConflatingQueue[int] = ConflatingQueue(maxsize=1)
    q.put_nowait(1)
    with pytest.raises(QueueFull):
        q.put_nowait(2)
    # market data still goes in: it is bounded by keys, not by maxsize
    q.put_latest("k", 5)
    assert len(q) == 2


async def test_filters_by_kind_and_pair() -> None:
    bus = EventBus()
    btc_ticks = bus.subscribe("btc", kinds=(Ticker,), pairs=["BTC/USD"])
    fills = bus.subscribe("fills", kinds=(Fill,))
    await bus.publish(ticker("ETH/USD", 1))
    await bus.publish(ticker("BTC/USD", 2))
    await bus.publish(candle("BTC/USD", 1, 3))
    await bus.publish(fill(1))
    assert btc_ticks.stats.depth == 1
    assert (await btc_ticks.get()).last == Decimal(2)
    assert fills.stats.depth == 1
    assert (await fills.get()).trade_id == "T1"


async def test_close_drains_then_ends_iteration_and_refuses_new_events() -> None:
    bus = EventBus()
    sub = bus.subscribe("s")
    waiting = bus.subscribe("waiting")
    got_waiting: list[object] = []

    async def consume_waiting() -> None:
        async for event in waiting:
            got_waiting.append(event)  # noqa: PERF401 - read while the stream still runs

    waiter = asyncio.create_task(consume_waiting())
    await asyncio.sleep(0)
    await bus.publish(ticker("BTC/USD", 1))
    await bus.publish(fill(1))
    bus.close()
    assert [e async for e in sub] == [ticker("BTC/USD", 1), fill(1)]
    await asyncio.wait_for(waiter, 1)
    assert len(got_waiting) == 2
    with pytest.raises(BusClosed):
        await bus.publish(ticker("BTC/USD", 2))
    with pytest.raises(BusClosed):
        bus.subscribe("late")
    with pytest.raises(BusClosed):
        await sub.get()


async def test_close_wakes_a_blocked_publisher() -> None:
    bus = EventBus(maxsize=1)
    bus.subscribe("stuck")
    await bus.publish(fill(1))
    blocked = asyncio.create_task(bus.publish(fill(2)))
    await asyncio.sleep(0.01)
    bus.close()
    with pytest.raises(BusClosed):
        await asyncio.wait_for(blocked, 1)


async def test_unsubscribing_ends_that_iteration_and_frees_its_publisher() -> None:
    bus = EventBus(maxsize=1)
    gone = bus.subscribe("gone")
    stays = bus.subscribe("stays", maxsize=10)
    await bus.publish(fill(1))
    blocked = asyncio.create_task(bus.publish(fill(2)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    gone.close()
    await asyncio.wait_for(blocked, 1)
    assert [e async for e in gone] == []
    assert [e.trade_id for e in (stays.queue.get_nowait(), stays.queue.get_nowait())] == ["T1", "T2"]
    assert bus.subscriptions == (stays,)


def test_take_all_returns_latest_values_and_pinned_items_in_order() -> None:
    q: ConflatingQueue[object] = ConflatingQueue(maxsize=4)
    assert q.take_all() == []
    q.put_latest("a", 1)
    q.put_nowait("order-1")
    q.put_latest("b", 2)
    q.put_latest("a", 3)  # supersedes 1, keeps a's place
    assert q.take_all() == [3, "order-1", 2]
    assert len(q) == 0 and q.pinned == 0 and q.delivered == 3


async def test_take_all_frees_room_for_a_waiting_publisher() -> None:
    q: ConflatingQueue[object] = ConflatingQueue(maxsize=1)
    q.put_nowait("first")
    blocked = asyncio.create_task(q.put("second"))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert q.take_all() == ["first"]
    await asyncio.wait_for(blocked, 1)
    assert q.take_all() == ["second"]


async def test_wait_takes_nothing_and_ends_when_closed_and_drained() -> None:
    q: ConflatingQueue[object] = ConflatingQueue()
    waiter = asyncio.create_task(q.wait())
    await asyncio.sleep(0)
    q.put_latest("k", 1)
    await asyncio.wait_for(waiter, 1)
    assert len(q) == 1
    q.close()
    await q.wait()  # something is still queued
    assert q.get_nowait() == 1
    with pytest.raises(BusClosed):
        await q.wait()


def test_put_back_yields_to_a_newer_value() -> None:
    q: ConflatingQueue[object] = ConflatingQueue()
    assert q.put_back("k", "old") is True
    assert q.get_nowait() == "old"
    q.put_latest("k", "new")
    assert q.put_back("k", "old") is False
    assert q.take_all() == ["new"]
    q.close()
    with pytest.raises(BusClosed):
        q.put_back("k", "x")
