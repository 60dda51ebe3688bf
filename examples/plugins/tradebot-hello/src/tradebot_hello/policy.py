"""``hello-hold``: a HALT position policy that keeps every position and says what they are worth.

Selected with ``[halt] position_policy = "hello-hold"``. On HALT it changes nothing: open
positions stay open, and the outcome (sent to every notifier) lists them with the account's
equity, read from the read-only portfolio of :class:`~tradebot.api.PluginContext`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import (
    ComponentSpec,
    PluginContext,
    PolicyOutcome,
    TradingStateChange,
    format_positions,
    hookimpl,
)

__all__ = ["HoldConfig", "HoldPolicy", "tradebot_register_position_policies"]


@attrs.frozen
class HoldConfig:
    """``[policies.hello-hold]``"""

    show_equity: bool = True
    """Name the account's equity in the outcome."""


class HoldPolicy:
    """Keeps positions; reports them."""

    name = "hello-hold"
    allows_reducing_while_halted = False

    def __init__(self, config: HoldConfig | None, context: Any) -> None:
        self.config = config or HoldConfig()
        self.view = PluginContext.of(context, plugin="hello-hold")

    async def apply(self, change: TradingStateChange) -> PolicyOutcome:
        portfolio = self.view.portfolio
        positions = {pair: pos.volume for pair, pos in (portfolio.positions() if portfolio else {}).items()}
        text = f"hello-hold: positions kept as they are: {format_positions(positions)}"
        if self.config.show_equity and portfolio is not None:
            equity = portfolio.equity()
            text += f"; equity {equity if equity is not None else 'unknown (no price yet)'} {portfolio.quote}"
        return PolicyOutcome(self.name, True, text, remaining=positions)


@hookimpl
def tradebot_register_position_policies() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="hello-hold",
            factory=HoldPolicy,
            config_cls=HoldConfig,
            description="Keep every position on HALT and report them with equity",
        )
    ]
