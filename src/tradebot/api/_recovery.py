"""The base class of recovery actions (healing-ladder steps), built-in and third-party alike."""

from __future__ import annotations

import inspect
from typing import Any

from tradebot.core.healing import Failure, RecoveryLimits

__all__ = ["ActionBase", "probe_exchange"]


class ActionBase:
    """Base of a recovery action: the factory signature, ``limits``, and a default ``verify``.

    Subclass it, set ``name``, and implement ``applies_to`` and ``recover``; use the class
    itself as the :class:`~tradebot.api.ComponentSpec` factory with
    ``config_cls=RecoveryLimits`` (or a subclass of it). The bot context is read at
    recovery time, not at build time: the exchange, executor and supervisor are attached to
    it after the healer is built.
    """

    name = ""
    escalates = False
    """True in a step that heals by handing the failure on (a process restart ...)."""

    def __init__(self, config: RecoveryLimits | None, context: Any) -> None:
        self.limits: RecoveryLimits = config if config is not None else RecoveryLimits()
        self.config = self.limits
        self.context = context

    def __repr__(self) -> str:
        return f"<recovery action {self.name} {self.limits}>"

    @property
    def exchange(self) -> Any:
        """The bot's exchange now (None while there is none)."""
        return getattr(self.context, "exchange", None)

    def applies_to(self, failure: Failure) -> bool:  # pragma: no cover - every action overrides
        """Whether this action may help with ``failure`` (cheap, no side effects)."""
        raise NotImplementedError

    async def recover(self, failure: Failure) -> bool:  # pragma: no cover - every action overrides
        """Do the work; True when it did something that may have healed ``failure``."""
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
