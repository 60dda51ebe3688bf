"""What happens to positions when trading is HALTED: the configured position policy.

``[halt] position_policy`` names a policy plugin (built-ins: ``maintain``, ``close``,
``reduce``). :class:`PolicyRunner` listens to the trading state: on entering HALTED it
runs the policy in its own task (never inside the state change, so a long flatten cannot
hold up a resume), reports the outcome as an alert, and cancels a running policy when the
state leaves HALTED. When a restart finds the persisted state HALTED, the policy is applied
again (``apply_on_restore``): a flatten cut short by a crash is finished, idempotently.

A HALT from the start-up balance check (source :data:`BALANCE_CHECK_SOURCE`: the journal
does not explain the exchange's balances) is held with positions kept whatever the
configured policy: the bot cannot tell its coins from the user's, so ``close`` or
``reduce`` could sell what it never bought. That lasts until the state leaves HALTED.

The ``reduce`` policy lets strategies' exposure-reducing orders through while HALTED.
The risk gate learns that through :meth:`PolicyRunner.risk_view`, a trading-state view
that reads REDUCING while HALTED under such a policy; give it to the risk gate instead
of the state machine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from tradebot.core.models import Alert, AlertLevel, TradingState, TradingStateChange
from tradebot.core.validate import gt, non_empty

if TYPE_CHECKING:
    from tradebot.core.context import BotContext

__all__ = [
    "BALANCE_CHECK_SOURCE",
    "EffectiveTradingState",
    "HaltSettings",
    "PolicyOutcome",
    "PolicyRunner",
    "PositionPolicy",
    "format_positions",
]

log = logging.getLogger("tradebot.policy")

BALANCE_CHECK_SOURCE = "balance-check"
"""The source of a HALT because the exchange's balances do not match the bot's journal."""


@attrs.frozen
class HaltSettings:
    """``[halt]``: what happens to positions and orders when trading is HALTED."""

    position_policy: str = attrs.field(default="maintain", validator=non_empty)
    """Name of the position policy plugin: ``maintain``, ``close``, ``reduce`` or a third-party one."""
    apply_on_restore: bool = True
    """Apply the policy again when a restart finds the saved state HALTED."""
    policy_timeout_s: float = attrs.field(default=300.0, validator=gt(0))
    """Longest a policy may run before it is stopped and reported as unfinished."""


@attrs.frozen
class PolicyOutcome:
    """What a policy did: ``done`` is false when it could not finish (see ``message``)."""

    policy: str
    done: bool
    message: str
    remaining: Mapping[str, Decimal] = attrs.field(factory=dict)
    """Positions still open afterwards, by pair (signed base volume)."""
    orders_placed: int = 0
    orders_cancelled: int = 0
    dust: Mapping[str, Decimal] = attrs.field(factory=dict)
    """Positions left below the pair's minimum order (cannot be traded; not "open")."""


@runtime_checkable
class PositionPolicy(Protocol):
    """A HALT position policy (built by a ``tradebot_register_position_policies`` factory).

    Optional, read once when the policy is built (absent: False): ``flattens``, True when a
    completed run leaves every position flat (as the built-in ``close``): trading is then
    over, and the bot stops, exit code 0, once such a HALT is done.
    """

    name: str
    allows_reducing_while_halted: bool
    """True when the risk gate should let exposure-reducing orders through while HALTED."""

    async def apply(self, change: TradingStateChange) -> PolicyOutcome:
        """Act on positions and orders because trading just became HALTED."""


def format_positions(positions: Mapping[str, Any]) -> str:
    """``BTC/USD 0.5, ETH/USD -2`` (volume of each non-flat position), or ``none``."""
    parts = []
    for pair, pos in sorted(positions.items()):
        volume = getattr(pos, "volume", pos)
        if volume:
            parts.append(f"{pair} {volume}")
    return ", ".join(parts) or "none"


class TradingView(Protocol):
    state: TradingState
    listeners: list[Any]


class EffectiveTradingState:
    """The trading state as the risk gate should see it under the current policy.

    Reads REDUCING while the real state is HALTED and the policy lets reducing orders
    through; otherwise the real state. Every other attribute is the state machine's.
    """

    def __init__(self, trading: Any, runner: PolicyRunner) -> None:
        self._trading = trading
        self._runner = runner

    @property
    def state(self) -> TradingState:
        state: TradingState = self._trading.state
        if state is TradingState.HALTED and self._runner.allows_reducing_while_halted:
            return TradingState.REDUCING
        return state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trading, name)


class PolicyRunner:
    """Applies the position policy whenever trading enters HALTED."""

    def __init__(
        self,
        policy: Any,
        *,
        trading: Any,
        plugins: Any = None,
        settings: HaltSettings | None = None,
        positions: Callable[[], Mapping[str, Decimal]] | None = None,
    ) -> None:
        self.policy = policy
        self.trading = trading
        self.plugins = plugins
        self.settings = settings or HaltSettings()
        self._positions = positions
        self.untrusted: str | None = None
        """Why the bot's positions cannot be trusted (a balance-check HALT); None when they can.
        While set, no policy trades: positions are kept."""
        self._task: asyncio.Task[PolicyOutcome | None] | None = None
        self._allows_reducing: bool = bool(getattr(policy, "allows_reducing_while_halted", False))
        """Whether the policy declares that exposure-reducing orders may pass while HALTED (read once)."""
        self.flattens: bool = bool(getattr(policy, "flattens", False))
        """Whether a completed run of the policy leaves every position flat (declared by the policy)."""
        self.outcomes: list[PolicyOutcome] = []
        self.outcome_listeners: list[Callable[[PolicyOutcome], None]] = []
        """Told of every outcome (the bot stops once a flattening policy's HALT is complete)."""
        trading.listeners.append(self._on_change)

    @classmethod
    def from_context(cls, ctx: BotContext) -> PolicyRunner:
        """Build the policy named by ``[halt] position_policy`` (a missing one is a clear error)."""
        settings: HaltSettings = ctx.settings.section("halt") or HaltSettings()
        name = settings.position_policy
        policy = ctx.plugins.build("policy", name, ctx.settings.plugin_config("policy", name), ctx)
        portfolio = ctx.portfolio

        def positions() -> Mapping[str, Decimal]:
            if portfolio is None:
                return {}
            return {pair: pos.volume for pair, pos in portfolio.positions().items() if pos.volume}

        return cls(policy, trading=ctx.trading, plugins=ctx.plugins, settings=settings, positions=positions)

    @property
    def allows_reducing_while_halted(self) -> bool:
        """Whether the risk gate lets exposure-reducing orders through while HALTED (declared by the policy)."""
        if self.untrusted is not None:
            return False  # a "reducing" sell could sell coins that are not the bot's
        return self._allows_reducing

    def risk_view(self) -> EffectiveTradingState:
        """The trading state to hand to the risk gate."""
        return EffectiveTradingState(self.trading, self)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Apply the policy to a restored HALT, then own policy tasks until cancelled."""
        if self.trading.state is TradingState.HALTED and self.trading.source == BALANCE_CHECK_SOURCE:
            self.untrusted = self.trading.reason
        if self.settings.apply_on_restore and self.trading.state is TradingState.HALTED:
            change = TradingStateChange(
                previous=TradingState.HALTED,
                current=TradingState.HALTED,
                reason=f"restored after restart: {self.trading.reason}",
                source=self.trading.source,
                time=self.trading.since,
            )
            self._start(change)
        try:
            await asyncio.Event().wait()
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        """Stop a running policy (the state left HALTED, or the bot stops)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            from tradebot.core.tasks import cancel_and_wait

            await cancel_and_wait(task)

    def _on_change(self, change: TradingStateChange) -> None:
        if change.current is TradingState.HALTED:
            if change.source == BALANCE_CHECK_SOURCE:
                self.untrusted = change.reason
            self._start(change)
            return
        self.untrusted = None  # a person resumed (or loosened): they vouch for the account now
        if self.running and self._task is not None:
            log.warning("trading is %s again: stopping the %s policy", change.current.value, self.policy.name)
            self._task.cancel()

    def _start(self, change: TradingStateChange) -> None:
        if self.running and self._task is not None:
            self._task.cancel()
        self._task = asyncio.ensure_future(self.apply(change))
        self._task.set_name(f"halt-policy-{self.policy.name}")

    async def _run_policy(self, change: TradingStateChange, name: str) -> PolicyOutcome:
        log.warning("trading HALTED (%s): applying position policy %r", change.reason, name)
        try:
            async with asyncio.timeout(self.settings.policy_timeout_s):  # not wait_for: it can lose a cancel
                outcome: PolicyOutcome = await self.policy.apply(change)
        except TimeoutError:
            outcome = PolicyOutcome(
                name, False, f"policy did not finish within {self.settings.policy_timeout_s:g}s"
            )
        except asyncio.CancelledError:
            log.warning("position policy %r stopped before it finished", name)
            raise
        except Exception as exc:  # noqa: BLE001 - a failing policy is reported, never crashes the bot
            outcome = PolicyOutcome(name, False, f"policy failed: {type(exc).__name__}: {exc}")
        return outcome

    def _keep_untrusted(self, configured: str) -> PolicyOutcome:
        """A balance-check HALT: keep every position and order as it is, whatever is configured."""
        remaining = dict(self._positions()) if self._positions is not None else {}
        instead = "" if configured == "maintain" else f" instead of the configured {configured!r}"
        message = (
            f"positions kept as they are{instead}: {format_positions(remaining)}; the exchange's balances do not"
            " match the bot's journal, so the bot cannot tell its coins from others' and sells nothing;"
            " check the account, then `tradebot resume`"
        )
        return PolicyOutcome("maintain", True, message, remaining=remaining)

    async def apply(self, change: TradingStateChange) -> PolicyOutcome | None:
        """Run the policy once for ``change`` and report the outcome."""
        configured = getattr(self.policy, "name", "?")
        held = self.untrusted is not None
        if held:
            outcome = self._keep_untrusted(configured)
            name = outcome.policy
        else:
            name = configured
            outcome = await self._run_policy(change, name)
        self.outcomes.append(outcome)
        del self.outcomes[:-50]
        for listener in list(self.outcome_listeners):
            listener(outcome)
        urgent = not outcome.done or held  # unfinished, or a person must check the account
        level = logging.CRITICAL if urgent else logging.WARNING
        log.log(level, "position policy %r: %s", name, outcome.message)
        title = f"HALT position policy {name}: {'done' if outcome.done else 'NOT finished'}"
        if held:
            title = (
                f"HALT: balances do not match the journal; positions kept, policy {configured} not applied"
            )
        if self.plugins is not None:
            await self.plugins.broadcast(
                "tradebot_alert",
                alert=Alert(
                    level=AlertLevel.CRITICAL if urgent else AlertLevel.WARNING,
                    title=title,
                    message=outcome.message,
                    source=f"policy:{name}",
                    key=f"halt-policy:{name}",
                ),
            )
        return outcome
