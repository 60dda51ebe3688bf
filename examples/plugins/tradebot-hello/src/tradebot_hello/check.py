"""``hello-check``: a health check that greets the market.

The ``hello`` check is ok once the bot has seen ``min_ticks`` market updates and degraded
before that. It shows the three things every plugin does: declare a config class,
implement a register hook, and build its component from config and context.
"""

from __future__ import annotations

from typing import Any

import attrs

from tradebot.api import (
    BaseCheck,
    CheckResult,
    ComponentSpec,
    MarketEvent,
    PluginContext,
    TriggerOptions,
    gt,
    hookimpl,
)

__all__ = ["HelloCheck", "HelloConfig", "tradebot_register_checks"]


@attrs.frozen
class HelloConfig(TriggerOptions):
    """``[checks.hello]``"""

    min_ticks: int = attrs.field(default=5, validator=gt(0))
    """Market updates to see before the check reports ok."""
    on_critical: str = "none"  # a greeting never HALTs trading


class HelloCheck(BaseCheck):
    """Counts market updates; ok from ``min_ticks`` on."""

    def __init__(self, config: HelloConfig, context: Any) -> None:
        super().__init__("hello", config, PluginContext.of(context).clock)
        self.config = config
        self.ticks = 0

    def on_market_event(self, event: MarketEvent) -> None:
        self.ticks += 1

    async def evaluate(self) -> CheckResult:
        if self.ticks >= self.config.min_ticks:
            return self.ok(f"hello, market: {self.ticks} updates seen", ticks=self.ticks)
        return self.degraded(
            f"waiting for market data: {self.ticks}/{self.config.min_ticks} updates", ticks=self.ticks
        )


@hookimpl
def tradebot_register_checks() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="hello", factory=HelloCheck, config_cls=HelloConfig, description="Greets the market"
        )
    ]
