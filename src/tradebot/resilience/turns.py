"""One request at a time, urgent ones first: for APIs whose requests must arrive in order.

Exchanges that sign each request with an increasing nonce (Kraken among them) refuse a
nonce at or below the last one they accepted, and requests sent side by side may arrive in
any order. :class:`Turns` lets one request through at a time; callers waiting for a turn
are served urgent ones first (orders and cancels, so a cancel on HALT does not wait behind
balance and order look-ups), then in the order they came.

Waiting is cancellable: a caller cancelled (or timed out) while waiting leaves the line
without taking a turn, and one cancelled just as the turn reached it hands it on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["Turns"]


class Turns:
    """A lock with two waiting lines, urgent and normal; see the module docstring.

    Belongs to one event loop, like :class:`asyncio.Lock`.
    """

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"<Turns busy={self._busy} waiting urgent={len(self._urgent)} normal={len(self._normal)}>"

    @property
    def busy(self) -> bool:
        """Whether a turn is taken now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Callers waiting for a turn (cancelled ones leave at once)."""
        return sum(1 for f in (*self._urgent, *self._normal) if not f.done())

    @contextlib.asynccontextmanager
    async def turn(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Wait for a turn, hold it for the ``async with`` body, then hand it on."""
        await self.acquire(urgent=urgent)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for a turn (urgent callers go first); :meth:`release` it when done."""
        if not self._busy:  # nobody waits while no turn is taken: release() hands it to them
            self._busy = True
            return
        line = self._urgent if urgent else self._normal
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn reached us just as we were cancelled: hand it on
            else:
                with contextlib.suppress(ValueError):
                    line.remove(waiter)
            raise

    def release(self) -> None:
        """Hand the turn to the next caller waiting, urgent ones first, or free it."""
        if not self._busy:
            raise RuntimeError("Turns.release() without a turn taken")
        for line in (self._urgent, self._normal):
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # still busy: the turn passes straight on
                    return
        self._busy = False
