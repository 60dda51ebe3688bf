"""``reconnect``: a new HTTP session and a WebSocket reconnect with resubscription.

Applies to dropped or timed-out connections, exchange 5xx/unavailable answers and a
stale market-data feed (``kind = "stale-market-data"``). Verified by a cheap exchange call
and, for a stale feed, by a fresh market-data message arriving after the reconnect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import (
    ActionBase,
    ComponentSpec,
    ConnectionFailed,
    DNSError,
    ExchangeUnavailable,
    Failure,
    RecoveryLimits,
    RequestTimeout,
    gt,
    hookimpl,
)

__all__ = ["ReconnectAction", "ReconnectConfig", "tradebot_register_recovery_actions"]

STALE_KINDS = frozenset({"stale-market-data", "websocket-stale", "websocket-disconnected"})


@attrs.frozen
class ReconnectConfig(RecoveryLimits):
    """``[recovery.reconnect]``."""

    attempts: int = attrs.field(default=3, validator=gt(0))
    fresh_data_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    """For a stale feed: how long to wait for a new market-data message after reconnecting."""


class ReconnectAction(ActionBase):
    """Reconnects the exchange (``exchange.reconnect()``)."""

    name = "reconnect"
    limits: ReconnectConfig

    def __init__(self, config: ReconnectConfig | None, context: Any) -> None:
        super().__init__(config or ReconnectConfig(), context)
        self._since: float | None = None

    def applies_to(self, failure: Failure) -> bool:
        if getattr(self.exchange, "reconnect", None) is None:
            return False
        if failure.kind in STALE_KINDS:
            return True
        if failure.caused_by(DNSError):
            return False
        return failure.caused_by(ConnectionFailed, RequestTimeout, ExchangeUnavailable, ConnectionError)

    async def recover(self, failure: Failure) -> bool:
        self._since = self._now()
        await self.exchange.reconnect()
        return True

    async def verify(self, failure: Failure) -> bool:
        if failure.kind in STALE_KINDS:
            return await self._fresh_data()
        return await super().verify(failure)

    async def _fresh_data(self) -> bool:
        stats = getattr(self.exchange, "market_data_stats", None)
        if stats is None:
            return await super().verify(Failure(kind="probe"))
        since = self._since if self._since is not None else self._now()
        deadline = time.monotonic() + self.limits.fresh_data_timeout_s
        while time.monotonic() < deadline:
            stats = self.exchange.market_data_stats
            last = getattr(stats, "last_message_at", None)
            if last is not None and last > since:
                return True
            await asyncio.sleep(0.02)
        return False

    def _now(self) -> float:
        # the stream stamps messages with the bot's clock
        clock = getattr(self.context, "clock", None)
        return clock.monotonic() if clock is not None else time.monotonic()


def create(config: ReconnectConfig | None, context: Any) -> ReconnectAction:
    return ReconnectAction(config, context)


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="reconnect",
            factory=create,
            config_cls=ReconnectConfig,
            description="new HTTP session and WebSocket reconnect/resubscribe after dropped connections or a stale feed",
        )
    ]
