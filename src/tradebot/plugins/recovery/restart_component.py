"""``restart-component``: restart the failed component's task through the supervisor.

Applies to failures that name a supervised component. The restart counts towards the
supervisor's restart intensity; when that is exceeded the action fails and the ladder
moves on (eventually to ``escalate``). Verified when the component is still running
``settle_s`` after the restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import ActionBase, ComponentSpec, Failure, RecoveryLimits, ge, gt, hookimpl

__all__ = ["RestartComponentAction", "RestartComponentConfig", "tradebot_register_recovery_actions"]


@attrs.frozen
class RestartComponentConfig(RecoveryLimits):
    """``[recovery.restart-component]``: a restart that does not hold is tried again; the
    supervisor's restart intensity bounds the total."""

    attempts: int = attrs.field(default=3, validator=gt(0))

    settle_s: float = attrs.field(default=1.0, validator=ge(0))
    """The restarted component must still be running this long after the restart."""


class RestartComponentAction(ActionBase):
    """``supervisor.restart_child(component)``."""

    name = "restart-component"
    limits: RestartComponentConfig

    def __init__(self, config: RestartComponentConfig | None, context: Any) -> None:
        super().__init__(config or RestartComponentConfig(), context)

    @property
    def supervisor(self) -> Any:
        return getattr(self.context, "supervisor", None)

    def applies_to(self, failure: Failure) -> bool:
        sup = self.supervisor
        return failure.component is not None and sup is not None and sup.has_child(failure.component)

    async def recover(self, failure: Failure) -> bool:
        assert failure.component is not None
        reason = failure.describe()
        await self.supervisor.restart_child(failure.component, reason=reason)
        return True

    async def verify(self, failure: Failure) -> bool:
        assert failure.component is not None
        if self.limits.settle_s > 0:
            await asyncio.sleep(self.limits.settle_s)
        return bool(self.supervisor.is_running(failure.component))


def create(config: RestartComponentConfig | None, context: Any) -> RestartComponentAction:
    return RestartComponentAction(config, context)


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="restart-component",
            factory=create,
            config_cls=RestartComponentConfig,
            description="restart the failed component's task through the in-process supervisor",
        )
    ]
