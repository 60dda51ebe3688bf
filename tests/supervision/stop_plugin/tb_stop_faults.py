"""A test plugin that misbehaves on purpose, to drive a real bot process into each stop path.

``TB_STOP_FAULTS`` (comma-separated) chooses the supervised children it adds at start-up:

``crash``      keeps failing (once the bot has journalled an order): healing, then escalation
``swallow``    a task that swallows every cancellation and runs on
``thread``     waits on a thread that never ends (cancelling the task does not stop the thread)
``blockloop``  on cancellation, blocks the whole event loop (a synchronous call that never returns)
``freeze``     once the bot journalled an order, blocks the whole event loop for good, if the file
               ``TB_FREEZE_ONCE`` names exists (it is removed: the next process trades normally)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tradebot.core.hookspecs import hookimpl
from tradebot.core.supervisor import ChildSpec


async def _swallow() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # deliberately ignores every cancellation


async def _thread() -> None:
    await asyncio.to_thread(time.sleep, 3600)


async def _blockloop() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        time.sleep(3600)  # deliberately blocks the event loop while the bot stops
        raise


def _crash(context: Any) -> Any:
    async def run() -> None:
        while not context.store.orders():
            await asyncio.sleep(0.05)
        raise RuntimeError("the flaky component failed again")

    return run


def _freeze(context: Any) -> Any:
    async def run() -> None:
        marker = os.environ.get("TB_FREEZE_ONCE", "")
        while not context.store.orders():
            await asyncio.sleep(0.05)
        if marker and os.path.exists(marker):
            os.remove(marker)
            time.sleep(3600)  # a bot hung for real: no heartbeat, no signal handled
        await asyncio.Event().wait()

    return run


@hookimpl
def tradebot_startup(context: Any) -> None:
    for fault in filter(None, os.environ.get("TB_STOP_FAULTS", "").split(",")):
        start = {"swallow": _swallow, "thread": _thread, "blockloop": _blockloop}.get(fault) or (
            _freeze(context) if fault == "freeze" else _crash(context)
        )
        context.supervisor.add(ChildSpec(f"fault-{fault}", start, heal=fault == "crash"))
