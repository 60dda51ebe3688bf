"""Turns: one holder at a time, urgent callers first, cancellation never loses or leaks a turn."""

from __future__ import annotations

import asyncio

import pytest

from tradebot.resilience import Turns


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_at_a_time_urgent_first_then_in_arrival_order() -> None:
    turns = Turns()
    order: list[str] = []
    inside = 0
    gate = asyncio.Event()

    async def call(name: str, *, urgent: bool = False) -> None:
        nonlocal inside
        async with turns.turn(urgent=urgent):
            inside += 1
            assert inside == 1, "two callers held a turn at once"
            order.append(name)
            if name == "first":
                await gate.wait()
            else:
                await asyncio.sleep(0)
            inside -= 1

    first = asyncio.create_task(call("first"))
    await _settle()
    assert turns.busy
    waiting = [
        asyncio.create_task(call("normal-1")),
        asyncio.create_task(call("normal-2")),
        asyncio.create_task(call("cancel-1", urgent=True)),
        asyncio.create_task(call("normal-3")),
        asyncio.create_task(call("cancel-2", urgent=True)),
    ]
    await _settle()
    assert turns.waiting == 5
    gate.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "cancel-1", "cancel-2", "normal-1", "normal-2", "normal-3"]
    assert not turns.busy and turns.waiting == 0


async def test_a_caller_cancelled_while_waiting_leaves_the_line() -> None:
    turns = Turns()
    await turns.acquire()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await turns.acquire(urgent=True)
    assert turns.waiting == 0
    turns.release()
    assert not turns.busy  # nobody left to hand it to
    await asyncio.wait_for(turns.acquire(), 1)  # and it can be taken again at once
    turns.release()


async def test_a_caller_cancelled_as_the_turn_reaches_it_hands_it_on() -> None:
    turns = Turns()
    await turns.acquire()
    unlucky = asyncio.create_task(turns.acquire())
    next_one = asyncio.create_task(turns.acquire())
    await _settle()
    turns.release()  # the turn is handed to ``unlucky``...
    unlucky.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    await asyncio.wait_for(next_one, 1)  # the turn went on instead of being lost
    assert turns.busy
    turns.release()
    assert not turns.busy


async def test_release_without_a_turn_is_an_error() -> None:
    turns = Turns()
    with pytest.raises(RuntimeError, match="without a turn"):
        turns.release()
    async with turns.turn():
        assert turns.busy
    assert not turns.busy
