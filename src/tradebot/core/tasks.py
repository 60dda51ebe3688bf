"""Ending tasks without losing a cancellation.

``task.cancel()`` followed by ``with suppress(CancelledError): await task`` has a flaw: when
the task doing the waiting is itself cancelled meanwhile (the bot stops), its own
cancellation is suppressed with the other task's, and it runs on past its stop.
:func:`cancel_and_wait` suppresses only the cancelled task's ending.

``asyncio.wait_for`` has a like flaw on Python 3.11: a cancellation of the caller that comes
as the awaited thing finishes can be lost. :func:`within` bounds an await with
``asyncio.timeout`` instead, which never loses one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "within"]

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Future[Any], timeout: float | None = None) -> bool:
    """Cancel ``task`` and wait (at most ``timeout``) for it to end; True when it ended.

    Its result or error is retrieved and dropped. A cancellation of the caller is never
    swallowed: it is raised, as it should be.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)  # raises the caller's own cancellation
    if not done:
        return False
    if not task.cancelled():
        task.exception()  # retrieved: the task is being stopped, its ending is moot
    return True


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds (``TimeoutError`` after that).

    What ``asyncio.wait_for`` does, without losing a cancellation of the caller.
    """
    async with asyncio.timeout(timeout):
        return await awaitable
