"""``maintain`` (the default): positions stay as they are while HALTED.

No new orders pass the risk gate; positions are neither closed nor reduced. With
``cancel_open_orders`` the working orders are cancelled too, so none fills while HALTED.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import ComponentSpec, PolicyOutcome, TradingStateChange, format_positions, hookimpl

__all__ = ["MaintainConfig", "MaintainPolicy", "tradebot_register_position_policies"]


@attrs.frozen
class MaintainConfig:
    """``[policies.maintain]``"""

    cancel_open_orders: bool = False
    """Cancel working orders on HALT (positions are still kept)."""


class MaintainPolicy:
    """Keeps positions; optionally cancels working orders."""

    name = "maintain"
    allows_reducing_while_halted = False

    def __init__(self, config: MaintainConfig, executor: Any, portfolio: Any) -> None:
        self.config = config
        self.executor = executor
        self.portfolio = portfolio

    async def apply(self, change: TradingStateChange) -> PolicyOutcome:
        cancelled = 0
        if self.config.cancel_open_orders and self.executor is not None:
            for entry in self.executor.working_orders():
                if await self.executor.cancel(entry.client_order_id):
                    cancelled += 1
        positions = self.portfolio.positions() if self.portfolio is not None else {}
        remaining = {p: pos.volume for p, pos in positions.items() if pos.volume}
        text = f"positions kept as they are: {format_positions(remaining)}"
        if self.config.cancel_open_orders:
            text += f"; {cancelled} working order(s) cancelled"
        return PolicyOutcome(self.name, True, text, remaining=remaining, orders_cancelled=cancelled)


def make(config: MaintainConfig | None, context: Any) -> MaintainPolicy:
    """Factory."""
    return MaintainPolicy(
        config or MaintainConfig(), getattr(context, "executor", None), getattr(context, "portfolio", None)
    )


@hookimpl
def tradebot_register_position_policies() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="maintain",
            factory=make,
            config_cls=MaintainConfig,
            description="Keep positions while HALTED (optionally cancel working orders)",
        )
    ]
