"""``reduce``: while HALTED, strategies may still reduce exposure, never add to it.

Differs from ``maintain`` in two ways: the risk gate treats HALTED as REDUCING (through
:meth:`tradebot.core.policy.PolicyRunner.risk_view`), so a strategy's exit signal is
executed, clipped so it never flips a position; and on HALT every working order that
would add exposure (same side as the position, or any order on a flat pair) is cancelled,
while working orders that reduce exposure are left to fill. With ``fraction`` above 0 it
also cuts every position by that fraction at once, with one market order per pair through
the executor's idempotent path, fitted to the pair's market rules (a cut below the pair's
minimum order, or of dust, is skipped and reported).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from tradebot.api import (
    FLATTEN_STRATEGY,
    ComponentSpec,
    MarketRuleError,
    OrderRequest,
    OrderType,
    PolicyOutcome,
    Side,
    TradebotError,
    TradingStateChange,
    format_positions,
    hookimpl,
    in_range,
)

__all__ = ["ReduceConfig", "ReducePolicy", "tradebot_register_position_policies"]


@attrs.frozen
class ReduceConfig:
    """``[policies.reduce]``"""

    cancel_increasing_orders: bool = True
    """Cancel working orders that would add exposure."""
    fraction: Decimal = attrs.field(
        default=Decimal(0), converter=Decimal, validator=in_range(Decimal(0), Decimal(1))
    )
    """Part of every position to close at once on HALT (0: none, 0.5: half, 1: all)."""


class ReducePolicy:
    """Cancels exposure-adding orders; lets reducing orders through while HALTED."""

    name = "reduce"
    allows_reducing_while_halted = True

    def __init__(self, config: ReduceConfig, executor: Any, portfolio: Any, markets: Any = None) -> None:
        self.config = config
        self.executor = executor
        self.portfolio = portfolio
        self.markets = markets

    async def apply(self, change: TradingStateChange) -> PolicyOutcome:
        cancelled = 0
        if self.config.cancel_increasing_orders and self.executor is not None:
            for entry in self.executor.working_orders():
                volume: Decimal = self.portfolio.position(entry.pair).volume
                direction = 1 if entry.side is Side.BUY else -1
                reduces = volume != 0 and direction * volume < 0
                if not reduces and await self.executor.cancel(entry.client_order_id):
                    cancelled += 1
        placed, skipped = await self._cut(change) if self.config.fraction > 0 else (0, [])
        positions = self.portfolio.positions() if self.portfolio is not None else {}
        remaining = {p: pos.volume for p, pos in positions.items() if pos.volume}
        text = (
            f"only exposure-reducing orders pass while HALTED; {cancelled} exposure-adding order(s) cancelled; "
            f"open positions: {format_positions(remaining)}"
        )
        if self.config.fraction > 0:
            text += f"; {placed} order(s) cutting positions by {self.config.fraction}"
            if skipped:
                text += f" (not cut: {'; '.join(skipped)})"
        return PolicyOutcome(
            self.name, True, text, remaining=remaining, orders_cancelled=cancelled, orders_placed=placed
        )

    async def _cut(self, change: TradingStateChange) -> tuple[int, list[str]]:
        """Cut every position by ``fraction`` with a market order; (orders placed, reasons skipped)."""
        if self.executor is None or self.portfolio is None:
            return 0, ["no order executor"]
        placed = 0
        skipped: list[str] = []
        for pair, pos in sorted(self.portfolio.positions().items()):
            if not pos.volume:
                continue
            side = Side.SELL if pos.volume > 0 else Side.BUY
            size = abs(pos.volume) * self.config.fraction
            if self.markets is not None:
                try:
                    size, _ = self.markets.fit(
                        pair=pair,
                        side=side,
                        order_type=OrderType.MARKET,
                        volume=size,
                        reference_price=self.portfolio.mark_price(pair),
                        reduces=True,
                    )
                except MarketRuleError as exc:
                    skipped.append(exc.message)
                    continue
            # the bot's own client id, so a rebuild from the exchange knows this sale as the bot's
            ids = getattr(self.executor, "order_ids", None)
            request = OrderRequest(
                pair, side, OrderType.MARKET, size, ids.new() if ids is not None else str(uuid.uuid4())
            )
            try:
                # not a strategy instance's order: the cut comes off the strategies holding the pair
                await self.executor.submit(
                    request,
                    strategy=FLATTEN_STRATEGY,
                    reason=f"HALT, reduce by {self.config.fraction}: {change.reason}",
                )
            except TradebotError as exc:
                skipped.append(f"{pair}: {exc}")
                continue
            placed += 1
        return placed, skipped


def make(config: ReduceConfig | None, context: Any) -> ReducePolicy:
    """Factory: the bot's executor, portfolio and market rules."""
    return ReducePolicy(
        config or ReduceConfig(),
        getattr(context, "executor", None),
        getattr(context, "portfolio", None),
        (getattr(context, "extras", None) or {}).get("markets"),
    )


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
