"""``close``: on HALT, cancel working orders and flatten every position.

Flattening goes through the executor's idempotent order path
(:meth:`tradebot.core.executor.OrderExecutor.flatten_all`): each order carries a client
order id, an unknown outcome is resolved by looking it up, and while a flatten order of a
pair is still working no second one is placed. Rounds repeat (``max_attempts``, waiting up
to ``settle_s`` for fills between them) until every position is flat; the outcome lists
whatever is left. A position below the pair's minimum order (dust, from the exchange's
market rules) cannot be sold: it does not count as open, and the outcome says how much
dust is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import (
    ComponentSpec,
    PolicyOutcome,
    TradebotError,
    TradingStateChange,
    format_positions,
    gt,
    hookimpl,
)

__all__ = ["CloseConfig", "ClosePolicy", "tradebot_register_position_policies"]


@attrs.frozen
class CloseConfig:
    """``[policies.close]``"""

    max_attempts: int = attrs.field(default=5, validator=gt(0))
    """Flatten rounds before giving up and reporting what is left."""
    settle_s: float = attrs.field(default=10.0, validator=gt(0))
    """Longest wait, per round, for flatten orders to fill."""
    poll_s: float = attrs.field(default=0.2, validator=gt(0))
    """How often positions are looked at while waiting."""


class ClosePolicy:
    """Flattens every position through the executor, round after round, until flat."""

    name = "close"
    allows_reducing_while_halted = False
    flattens = True
    """A completed run leaves every position flat: the bot stops once it is done."""

    def __init__(
        self, config: CloseConfig, executor: Any, portfolio: Any, clock: Any, markets: Any = None
    ) -> None:
        self.config = config
        self.executor = executor
        self.portfolio = portfolio
        self.clock = clock
        self.markets = markets

    def _positions(self) -> dict[str, Any]:
        return {p: pos.volume for p, pos in self.portfolio.positions().items() if pos.volume}

    def _dust(self) -> dict[str, Any]:
        if self.markets is None:
            return {}
        return {
            p: v
            for p, v in self._positions().items()
            if self.markets.is_dust(p, v, self.portfolio.mark_price(p))
        }

    def _open(self) -> dict[str, Any]:
        dust = self._dust()
        return {p: v for p, v in self._positions().items() if p not in dust}

    def _working(self) -> int:
        return len(self.executor.working_orders())

    async def apply(self, change: TradingStateChange) -> PolicyOutcome:
        if self.executor is None or self.portfolio is None:
            return PolicyOutcome(self.name, False, "no order executor: positions cannot be closed by the bot")
        placed: set[str] = set()
        errors: list[str] = []
        for attempt in range(1, self.config.max_attempts + 1):
            if not self._open() and not self._working():
                break
            try:
                orders = await self.executor.flatten_all(reason=f"HALT: {change.reason}")
                placed.update(o.client_order_id for o in orders if o.client_order_id)
            except TradebotError as exc:
                errors.append(f"round {attempt}: {exc}")
            await self._settle()
        remaining = self._open()
        working = self._working()
        dust = self._dust()
        if not remaining and not working:
            text = f"every position closed ({len(placed)} flatten order(s))"
            if dust:
                text += f"; dust left, below the pairs' minimum order: {format_positions(dust)}"
            return PolicyOutcome(self.name, True, text, orders_placed=len(placed), dust=dust)
        text = (
            f"NOT flat after {self.config.max_attempts} round(s): open positions {format_positions(remaining)}, "
            f"{working} order(s) still working"
        )
        if errors:
            text += f"; last error: {errors[-1]}"
        return PolicyOutcome(
            self.name, False, text, remaining=remaining, orders_placed=len(placed), dust=dust
        )

    async def _settle(self) -> None:
        deadline = self.clock.monotonic() + self.config.settle_s
        while self.clock.monotonic() < deadline:
            if not self._open() and not self._working():
                return
            await self.clock.sleep(self.config.poll_s)


def make(config: CloseConfig | None, context: Any) -> ClosePolicy:
    """Factory: the bot's executor, portfolio and clock."""
    from tradebot.api import SystemClock

    return ClosePolicy(
        config or CloseConfig(),
        getattr(context, "executor", None),
        getattr(context, "portfolio", None),
        getattr(context, "clock", None) or SystemClock(),
        (getattr(context, "extras", None) or {}).get("markets"),
    )


@hookimpl
def tradebot_register_position_policies() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="close",
            factory=make,
            config_cls=CloseConfig,
            description="On HALT cancel working orders and flatten every position through the idempotent order path",
        )
    ]
