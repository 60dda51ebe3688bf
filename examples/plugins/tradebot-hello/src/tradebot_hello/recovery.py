"""``hello-pause``: a healing-ladder step that waits a moment when a fault may pass by itself.

It applies to transient faults only (a dropped connection, a timeout, a busy exchange),
waits ``pause_s`` on the bot's clock, and counts as healed when a cheap exchange call then
works (:meth:`~tradebot.api.ActionBase.verify`). Put it first in ``[healing] ladder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import (
    ActionBase,
    ComponentSpec,
    Failure,
    PluginContext,
    RecoveryLimits,
    TransientError,
    ge,
    hookimpl,
)

__all__ = ["PauseAction", "PauseConfig", "tradebot_register_recovery_actions"]


@attrs.frozen
class PauseConfig(RecoveryLimits):
    """``[recovery.hello-pause]``: the limits every action has, and how long to wait."""

    pause_s: float = attrs.field(default=0.5, validator=ge(0))
    """Seconds to wait before the fault is checked again."""


class PauseAction(ActionBase):
    """Waits ``pause_s``; healed when the exchange answers afterwards."""

    name = "hello-pause"

    def __init__(self, config: PauseConfig | None, context: Any) -> None:
        super().__init__(config or PauseConfig(), context)
        self.pause_s = (config or PauseConfig()).pause_s
        self.view = PluginContext.of(context, plugin="hello-pause")

    def applies_to(self, failure: Failure) -> bool:
        return failure.caused_by(TransientError)

    async def recover(self, failure: Failure) -> bool:
        self.view.logger.info("hello-pause: waiting %gs for %s to pass", self.pause_s, failure.describe())
        await self.view.clock.sleep(self.pause_s)
        return True


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="hello-pause",
            factory=PauseAction,
            config_cls=PauseConfig,
            description="Wait a moment for a transient fault to pass",
        )
    ]
