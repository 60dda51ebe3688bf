"""Kraken's dead man's switch (``CancelAllOrdersAfter``), kept armed while the bot runs.

While armed, Kraken itself cancels every open order of the API key ``timeout_s`` seconds after
the last refresh. The bot refreshes every ``refresh_s``; if the bot dies (killed, frozen, host
gone, network cut) the refreshes stop and the exchange cancels the orders it left behind. A
clean shutdown disarms the switch (``timeout=0``) after the bot's shutdown policy has cancelled
or deliberately left its orders, so orders left on purpose stay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from tradebot.api import Clock, SystemClock, TradebotError, cancel_and_wait

__all__ = ["DeadMansSwitch", "DeadMansSwitchStats"]

log = logging.getLogger(__name__)

PrivateCall = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


@attrs.define
class DeadMansSwitchStats:
    """Counters of the switch (for health checks and tests)."""

    arms: int = 0
    failures: int = 0
    disarmed: bool = False
    last_armed_at: float | None = None  # monotonic
    last_trigger_time: str | None = None  # as Kraken reported it
    last_error: str | None = None


class DeadMansSwitch:
    """Refreshes ``CancelAllOrdersAfter(timeout_s)`` every ``refresh_s`` until stopped."""

    def __init__(
        self, private: PrivateCall, *, timeout_s: int, refresh_s: float, clock: Clock | None = None
    ) -> None:
        if timeout_s <= 0 or refresh_s <= 0 or refresh_s >= timeout_s:
            raise ValueError(
                f"dead man's switch: need 0 < refresh ({refresh_s}) < timeout ({timeout_s}) seconds"
            )
        self._private = private
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self._clock: Clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None
        self.stats = DeadMansSwitchStats()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self.stats.disarmed = False
        self._task = asyncio.create_task(self._loop(), name="kraken-dead-mans-switch")

    async def arm_once(self) -> bool:
        """One refresh; False (logged and counted) when Kraken could not be told."""
        try:
            result = await self._private("CancelAllOrdersAfter", {"timeout": self.timeout_s})
        except TradebotError as exc:
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("dead man's switch: refresh failed (%s); trying again in %.1fs", exc, self.refresh_s)
            return False
        self.stats.arms += 1
        self.stats.last_armed_at = self._clock.monotonic()
        if isinstance(result, dict):
            self.stats.last_trigger_time = str(result.get("triggerTime"))
        return True

    async def _loop(self) -> None:
        while True:
            await self.arm_once()
            await self._clock.sleep(self.refresh_s)

    async def stop(self, *, disarm: bool, timeout_s: float = 5.0) -> None:
        """Stop refreshing; with ``disarm`` also tell Kraken to forget the timer (clean exit)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)  # a stop of the caller itself is not swallowed
        if not disarm or self.stats.arms == 0:
            return
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancellation
                await self._private("CancelAllOrdersAfter", {"timeout": 0})
        except (TradebotError, TimeoutError) as exc:
            # the timer then runs out and Kraken cancels what is open: the safe side
            log.warning(
                "dead man's switch: could not disarm on shutdown (%s); open orders will be cancelled", exc
            )
            return
        self.stats.disarmed = True
        log.info("dead man's switch disarmed")
