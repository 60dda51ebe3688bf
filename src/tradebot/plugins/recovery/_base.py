"""What every built-in recovery action shares: name, limits, late access to the context."""

from __future__ import annotations

import inspect
from typing import Any

from tradebot.core.healing import Failure, RecoveryLimits

__all__ = ["ActionBase", "probe_exchange"]


class ActionBase:
    """Base of the built-in actions.

    The bot context is read at recovery time, not at build time: the exchange, executor
    and supervisor are attached to it after the healer is built.
    """

    name = ""

    def __init__(self, config: RecoveryLimits | None, context: Any) -> None:
        self.limits: RecoveryLimits = config if config is not None else RecoveryLimits()
        self.config = self.limits
        self.context = context

    def __repr__(self) -> str:
        return f"<recovery action {self.name} {self.limits}>"

    @property
    def exchange(self) -> Any:
        return getattr(self.context, "exchange", None)

    def applies_to(self, failure: Failure) -> bool:  # pragma: no cover - every action overrides
        raise NotImplementedError

    async def recover(self, failure: Failure) -> bool:  # pragma: no cover - every action overrides
        raise NotImplementedError

    async def verify(self, failure: Failure) -> bool:
        """Default check: a cheap exchange call succeeds (when there is an exchange)."""
        return await probe_exchange(self.exchange)


async def probe_exchange(exchange: Any) -> bool:
    """One cheap public call (server time, else system status); exceptions propagate."""
    if exchange is None:
        return True
    for method in ("server_time", "system_status"):
        fn = getattr(exchange, method, None)
        if fn is not None:
            result = fn()
            if inspect.isawaitable(result):
                await result
            return True
    return True
