"""The trading state machine: ACTIVE -> REDUCING -> HALTED, persisted.

Triggers can only make the state stricter. Going back to a looser state needs an explicit
:meth:`TradingStateMachine.resume` (a person, through the CLI or HTTP) or an auto-resume
by the same source that caused the current state, once its condition has cleared. The
state is saved before listeners hear of it, so a restart never silently clears a HALT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.models import TradingState, TradingStateChange

__all__ = ["TradingStateMachine", "TradingStateStore", "is_manual_resume"]

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
            log.warning("trading state restored as %s (%s, by %s since %s)", self.state.value, reason, source, since)
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
                    self._store.save_trading_state(change.current.value, change.reason, change.source, change.time)  # type: ignore[union-attr]
                except Exception as exc:  # noqa: BLE001 - keep trying, say so once a minute
                    log.debug("trading state still not saved: %s", exc)
                    continue
                log.warning("trading state %s saved after an earlier failure", change.current.value)
                return
            log.critical("trading state %s could not be saved; a restart would not keep it", change.current.value)

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
                log.critical("trading state %s applied but NOT saved (%s); retrying the save", target.value, exc)
                self._retry_save(change)
        self.state, self.reason, self.source, self.since = target, reason, source, change.time
        self.history.append(change)
        del self.history[:-100]
        level = logging.INFO if target is TradingState.ACTIVE else logging.CRITICAL
        log.log(level, "trading state %s -> %s: %s (by %s)", change.previous.value, target.value, reason, source)
        for listener in list(self.listeners):
            try:
                result = listener(change)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - a listener never blocks a state change
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
