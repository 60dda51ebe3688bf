"""``reduce``: while HALTED, strategies may still reduce exposure, never add to it.

Differs from ``maintain`` in two ways: the risk gate treats HALTED as REDUCING (through
:meth:`tradebot.core.policy.PolicyRunner.risk_view`), so a strategy's exit signal is
executed, clipped so it never flips a position; and on HALT every working order that
would add exposure (same side as the position, or any order on a flat pair) is cancelled,
while working orders that reduce exposure are left to fill.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from tradebot.core.components import ComponentSpec
from tradebot.core.hookspecs import hookimpl
from tradebot.core.models import Side, TradingStateChange
from tradebot.core.policy import PolicyOutcome, format_positions

__all__ = ["ReduceConfig", "ReducePolicy", "tradebot_register_position_policies"]


@attrs.frozen
class ReduceConfig:
    """``[policies.reduce]``"""

    cancel_increasing_orders: bool = True
    """Cancel working orders that would add exposure."""


class ReducePolicy:
    """Cancels exposure-adding orders; lets reducing orders through while HALTED."""

    name = "reduce"
    allows_reducing_while_halted = True

    def __init__(self, config: ReduceConfig, executor: Any, portfolio: Any) -> None:
        self.config = config
        self.executor = executor
        self.portfolio = portfolio

    async def apply(self, change: TradingStateChange) -> PolicyOutcome:
        cancelled = 0
        if self.config.cancel_increasing_orders and self.executor is not None:
            for entry in self.executor.working_orders():
                volume: Decimal = self.portfolio.position(entry.pair).volume
                direction = 1 if entry.side is Side.BUY else -1
                reduces = volume != 0 and direction * volume < 0
                if not reduces and await self.executor.cancel(entry.client_order_id):
                    cancelled += 1
        positions = self.portfolio.positions() if self.portfolio is not None else {}
        remaining = {p: pos.volume for p, pos in positions.items() if pos.volume}
        text = (
            f"only exposure-reducing orders pass while HALTED; {cancelled} exposure-adding order(s) cancelled; "
            f"open positions: {format_positions(remaining)}"
        )
        return PolicyOutcome(self.name, True, text, remaining=remaining, orders_cancelled=cancelled)


def make(config: ReduceConfig | None, context: Any) -> ReducePolicy:
    """Factory."""
    return ReducePolicy(config or ReduceConfig(), getattr(context, "executor", None), getattr(context, "portfolio", None))


@hookimpl
def tradebot_register_position_policies() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="reduce",
            factory=make,
            config_cls=ReduceConfig,
            description="While HALTED let only exposure-reducing orders through; cancel exposure-adding ones",
        )
    ]
