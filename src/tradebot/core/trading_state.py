"""The trading state machine: ACTIVE -> REDUCING -> HALTED, persisted.

Triggers can only make the state stricter. Going back to a looser state needs an explicit
:meth:`TradingStateMachine.resume` (a person, through the CLI or HTTP) or an auto-resume
by the same source that caused the current state, once its condition has cleared. The
state is saved before listeners hear of it, so a restart never silently clears a HALT.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import PermanentError
from tradebot.core.models import OrderRequest, TradingState, TradingStateChange

__all__ = [
    "OrderHeld",
    "OrderWireGate",
    "TradingStateMachine",
    "TradingStateStore",
    "is_manual_resume",
    "order_at_wire",
]

log = logging.getLogger("tradebot.trading_state")

Listener = Callable[[TradingStateChange], Awaitable[None] | None]


class TradingStateStore(Protocol):
    def load_trading_state(self) -> Any:
        """The saved (state, reason, source, time) record, or None."""

    def save_trading_state(
        self, state: str, reason: str, source: str, time: datetime, *, manual_resume: bool = False
    ) -> None:
        """Persist the current state durably (and, with ``manual_resume``, that a person resumed)."""


class TradingStateMachine:
    """Holds the trading state, its reason, source and time; persists and broadcasts changes."""

    def __init__(self, *, store: TradingStateStore | None = None, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self.state = TradingState.ACTIVE
        self.reason = "start"
        self.source = "core"
        self.since: datetime = self._clock.now()
        self.listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._save_task: asyncio.Task[None] | None = None
        self.history: list[TradingStateChange] = []
        self.wire_gate: OrderWireGate | None = None
        """Set by :class:`OrderWireGate`: a stricter state is acknowledged only once the orders
        already on the wire are answered, so none reaches the exchange after that."""

    def restore(self, *, announce: bool = True) -> bool:
        """Load the persisted state (call once at start-up). True when one was found.

        ``announce``: log a warning when the state is not ACTIVE (off for a command that
        only changes the saved state and reports the change itself)."""
        if self._store is None:
            return False
        rec = self._store.load_trading_state()
        if rec is None:
            return False
        state, reason, source, since = _fields(rec)
        self.state = TradingState(state)
        self.reason, self.source, self.since = reason, source, since
        if announce and self.state is not TradingState.ACTIVE:
            log.warning(
                "trading state restored as %s (%s, by %s since %s)", self.state.value, reason, source, since
            )
        return True

    @property
    def allows_new_exposure(self) -> bool:
        return self.state is TradingState.ACTIVE

    async def escalate(self, target: TradingState, reason: str, source: str) -> TradingStateChange | None:
        """Move to ``target`` if it is stricter than the current state (triggers use this)."""
        async with self._lock:
            if target.severity <= self.state.severity:
                return None
            return await self._set(target, reason, source)

    async def halt(self, reason: str, source: str) -> TradingStateChange | None:
        return await self.escalate(TradingState.HALTED, reason, source)

    async def halt_anew(self, reason: str, source: str) -> TradingStateChange:
        """HALT with this reason and source even when already HALTED (a HALT whose cause
        changed: only a person's resume ends it, never a check's auto-resume)."""
        async with self._lock:
            return await self._set(TradingState.HALTED, reason, source)

    async def reduce(self, reason: str, source: str) -> TradingStateChange | None:
        return await self.escalate(TradingState.REDUCING, reason, source)

    async def resume(self, reason: str, source: str) -> TradingStateChange | None:
        """Explicitly return to ACTIVE (a person's decision)."""
        async with self._lock:
            if self.state is TradingState.ACTIVE:
                return None
            return await self._set(TradingState.ACTIVE, reason, source)

    async def set_state(self, target: TradingState, reason: str, source: str) -> TradingStateChange | None:
        """Set any state explicitly (operator command), stricter or looser."""
        async with self._lock:
            if target is self.state:
                return None
            return await self._set(target, reason, source)

    async def auto_resume(self, source: str, reason: str) -> TradingStateChange | None:
        """Return to ACTIVE only when ``source`` caused the current state."""
        async with self._lock:
            if self.state is TradingState.ACTIVE or self.source != source:
                return None
            return await self._set(TradingState.ACTIVE, reason, f"{source} (auto-resume)")

    def _retry_save(self, change: TradingStateChange, *, every_s: float = 1.0, attempts: int = 300) -> None:
        """Keep trying to persist ``change`` while it is still the current state."""

        async def retry() -> None:
            for _ in range(attempts):
                await self._clock.sleep(every_s)
                if self.state is not change.current or self.since != change.time:
                    return  # a later change was saved (or will be retried) instead
                try:
                    self._store.save_trading_state(  # type: ignore[union-attr]
                        change.current.value, change.reason, change.source, change.time
                    )
                except Exception as exc:  # noqa: BLE001 - keep trying, say so once a minute
                    log.debug("trading state still not saved: %s", exc)
                    continue
                log.warning("trading state %s saved after an earlier failure", change.current.value)
                return
            log.critical(
                "trading state %s could not be saved; a restart would not keep it", change.current.value
            )

        self._save_task = asyncio.ensure_future(retry())

    async def _set(self, target: TradingState, reason: str, source: str) -> TradingStateChange:
        change = TradingStateChange(
            previous=self.state, current=target, reason=reason, source=source, time=self._clock.now()
        )
        if self._store is not None:
            # persisted before anyone hears of it
            try:
                self._store.save_trading_state(
                    target.value, reason, source, change.time, manual_resume=is_manual_resume(change)
                )
            except Exception as exc:
                if target.severity <= self.state.severity:
                    raise  # loosening waits until it can be saved
                # a safety stop takes effect even when the disk fails; saving is retried
                log.critical(
                    "trading state %s applied but NOT saved (%s); retrying the save", target.value, exc
                )
                self._retry_save(change)
        self.state, self.reason, self.source, self.since = target, reason, source, change.time
        if self.wire_gate is not None and target.severity > change.previous.severity:
            await self.wire_gate.drain()
        self.history.append(change)
        del self.history[:-100]
        level = logging.INFO if target is TradingState.ACTIVE else logging.CRITICAL
        log.log(
            level, "trading state %s -> %s: %s (by %s)", change.previous.value, target.value, reason, source
        )
        for listener in list(self.listeners):
            try:
                result = listener(change)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a listener never blocks a state change
                log.exception("trading-state listener failed")
        return change


def _fields(rec: Any) -> tuple[str, str, str, datetime]:
    if isinstance(rec, dict):
        return rec["state"], rec["reason"], rec["source"], rec["time"]
    if isinstance(rec, tuple):
        return rec[0], rec[1], rec[2], rec[3]
    return rec.state, rec.reason, rec.source, rec.time


def is_manual_resume(change: TradingStateChange) -> bool:
    """A person (not a check's auto-resume) put trading back to ACTIVE."""
    return change.current is TradingState.ACTIVE and not change.source.startswith("check:")


# --- the HALT gate at the wire ---------------------------------------------------------------


class OrderHeld(PermanentError):
    """An order stopped where it was about to be sent: trading is HALTED or REDUCING and the
    order would not reduce exposure. It was not placed."""

    not_sent = True


@attrs.define(eq=False)
class _Send:
    gate: OrderWireGate
    request: OrderRequest
    reduces: Callable[[OrderRequest], bool]


_SENDING: contextvars.ContextVar[_Send | None] = contextvars.ContextVar("tradebot_order_send", default=None)


class OrderWireGate:
    """Checks the trading state again at the moment an order is actually sent.

    The executor wraps each ``place_order`` in :meth:`sending`; an exchange that queues its
    requests (Kraken's private requests take turns) wraps the moment one leaves in
    :func:`order_at_wire`, where the state is read again in the same step as the send. A
    HALT (or REDUCING) is acknowledged only after the orders already on the wire are
    answered, so after the acknowledgement no new-exposure order reaches the exchange.
    Cancels are never gated; an order that reduces exposure still goes.

    For an exchange that does not call :func:`order_at_wire` the whole ``place_order`` call
    counts as being on the wire, so the acknowledgement waits for it instead.
    """

    def __init__(self, trading: TradingStateMachine, *, drain_timeout_s: float = 15.0) -> None:
        self.trading = trading
        self.drain_timeout_s = drain_timeout_s
        self._on_wire: set[_Send] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.held = 0
        trading.wire_gate = self

    @contextlib.contextmanager
    def sending(
        self, request: OrderRequest, reduces: Callable[[OrderRequest], bool], *, exchange_checks_at_wire: bool
    ) -> Iterator[None]:
        """Around one ``place_order``: checks now and lets the exchange check at the wire."""
        send = _Send(self, request, reduces)
        send.gate.check(send)
        token = _SENDING.set(send)
        if not exchange_checks_at_wire:
            self._enter(send)
        try:
            yield
        finally:
            _SENDING.reset(token)
            self._leave(send)

    def check(self, send: _Send) -> None:
        state = self.trading.state
        if state is TradingState.ACTIVE or send.reduces(send.request):
            return
        self.held += 1
        raise OrderHeld(
            f"order not sent: trading is {state.value.upper()} ({self.trading.reason})",
            client_order_id=send.request.client_order_id,
        )

    def _enter(self, send: _Send) -> None:
        self._on_wire.add(send)
        self._idle.clear()

    def _leave(self, send: _Send) -> None:
        self._on_wire.discard(send)
        if not self._on_wire:
            self._idle.set()

    @property
    def on_wire(self) -> int:
        """Orders sent whose answer is not back yet."""
        return len(self._on_wire)

    async def drain(self) -> None:
        """Wait (bounded) until no order is on the wire."""
        if self._idle.is_set():
            return
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.error(
                "%d order(s) still on the wire %.0f s after the trading state changed",
                self.on_wire,
                self.drain_timeout_s,
            )


@contextlib.contextmanager
def order_at_wire() -> Iterator[None]:
    """For exchanges: wrap the step in which an order request actually leaves.

    Raises :class:`OrderHeld` (nothing is sent) when the trading state no longer allows the
    order; otherwise the order counts as on the wire until the block ends. Outside an
    executor's send (a direct call, a test) it does nothing.
    """
    send = _SENDING.get()
    if send is None:
        yield
        return
    send.gate.check(send)
    send.gate._enter(send)
    try:
        yield
    finally:
        send.gate._leave(send)
