"""``escalate``: stop the bot with a distinct exit code so the process supervisor restarts it.

The last rung: applies to every failure. It asks the in-process supervisor to escalate
(which stops the bot with ``[supervisor] escalate_exit_code``, 75 by default, the code every
other escalation uses too; ``exit_code`` here overrides it for this rung); ``--auto-restart`` and systemd's
``Restart=on-failure`` then start a fresh process. Positions, trading state and counters
live in the state store and survive the restart.

The stop it asks for cancels, among the rest, the very task running this rung; the healer
lets that cancellation through (``asyncio.timeout``, not ``wait_for``), and the stop is
bounded by ``[supervisor] stop_grace_s``: the process exits with the escalation code within
it (plus a few seconds at most), whatever task is stuck.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import EXIT_ESCALATE, ActionBase, ComponentSpec, Failure, RecoveryLimits, hookimpl, in_range

__all__ = ["EscalateAction", "EscalateConfig", "tradebot_register_recovery_actions"]


@attrs.frozen
class EscalateConfig(RecoveryLimits):
    """``[recovery.escalate]``."""

    exit_code: int | None = attrs.field(default=None, validator=in_range(1, 255))
    """The exit code of this rung's stop; unset, ``[supervisor] escalate_exit_code`` (75 by default)."""


class EscalateAction(ActionBase):
    """Requests a stop with the escalation exit code from the supervisor (or the bot)."""

    name = "escalate"
    escalates = True
    """Heals by asking for a process restart: the failure's probe is not tried afterwards."""
    limits: EscalateConfig

    def __init__(self, config: EscalateConfig | None, context: Any) -> None:
        super().__init__(config or EscalateConfig(), context)
        self.requested: str | None = None

    def applies_to(self, failure: Failure) -> bool:
        return self._stopper() is not None

    def _stopper(self) -> Any:
        sup = getattr(self.context, "supervisor", None)
        if sup is not None and getattr(sup, "escalate", None) is not None:
            return sup
        bot = getattr(self.context, "extras", {}).get("bot")
        return bot if bot is not None and getattr(bot, "request_stop", None) is not None else None

    async def recover(self, failure: Failure) -> bool:
        stopper = self._stopper()
        if stopper is None:
            return False
        reason = f"escalating to a process restart: {failure.describe()}"
        code = self.limits.exit_code
        if getattr(stopper, "escalate", None) is not None:
            stopper.escalate(reason, code)  # None: the supervisor's configured escalation code
        else:
            stopper.request_stop(reason, exit_code=EXIT_ESCALATE if code is None else code)
        self.requested = reason
        return True

    async def verify(self, failure: Failure) -> bool:
        return self.requested is not None


def create(config: EscalateConfig | None, context: Any) -> EscalateAction:
    return EscalateAction(config, context)


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="escalate",
            factory=create,
            config_cls=EscalateConfig,
            description="stop the bot with the escalation exit code (75) so --auto-restart or systemd restarts it",
        )
    ]
