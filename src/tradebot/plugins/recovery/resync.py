"""``resync``: refetch balances and open orders and reconcile the order journal.

Applies when local state may have drifted from the exchange: an order whose outcome is
unknown, an unavailable exchange, a bad answer, a closed market, or ``kind =
"state-mismatch"``. Verified when no journal entry is left unresolved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import (
    ActionBase,
    BadDataError,
    ComponentSpec,
    ExchangeUnavailable,
    Failure,
    MarketClosed,
    OrderOutcomeUnknown,
    RecoveryLimits,
    hookimpl,
)

__all__ = ["ResyncAction", "ResyncConfig", "tradebot_register_recovery_actions"]

log = logging.getLogger("tradebot.healing.resync")

STATE_KINDS = frozenset({"state-mismatch", "resync"})


@attrs.frozen
class ResyncConfig(RecoveryLimits):
    """``[recovery.resync]``."""


class ResyncAction(ActionBase):
    """Calls ``exchange.balances()`` and ``executor.reconcile()``."""

    name = "resync"

    def __init__(self, config: ResyncConfig | None, context: Any) -> None:
        super().__init__(config or ResyncConfig(), context)
        self.last_report: Any = None

    def applies_to(self, failure: Failure) -> bool:
        if getattr(self.context, "executor", None) is None:
            return False
        return failure.kind in STATE_KINDS or failure.caused_by(
            OrderOutcomeUnknown, ExchangeUnavailable, BadDataError, MarketClosed
        )

    async def recover(self, failure: Failure) -> bool:
        exchange = self.exchange
        if exchange is not None and getattr(exchange, "balances", None) is not None:
            balances = await exchange.balances()
            if getattr(balances, "stale", False):
                log.warning("resync: balances are %gs old (exchange not reachable)", balances.age_s)
                return False
        self.last_report = await self.context.executor.reconcile()
        return True

    async def verify(self, failure: Failure) -> bool:
        report = self.last_report
        if report is not None and getattr(report, "unresolved", None):
            log.warning("resync: %d orders still unresolved", len(report.unresolved))
            return False
        return await super().verify(failure)


def create(config: ResyncConfig | None, context: Any) -> ResyncAction:
    return ResyncAction(config, context)


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="resync",
            factory=create,
            config_cls=ResyncConfig,
            description="refetch balances and open orders and reconcile the order journal",
        )
    ]
