"""Operator control of the trading state: ``tradebot halt`` / ``resume`` and HTTP.

:func:`apply_command` is the one entry point that changes the trading state on a
person's behalf; the control watcher and the HTTP server both call it.

A running bot holds an exclusive lock on ``<state_dir>/bot.lock`` (released by the OS
even after a kill -9), and a :class:`ControlWatcher` looks into ``<state_dir>/control/``
every ``poll_s`` (0.2 s) for request files. :func:`send_command` (what the CLI calls)
checks the lock: with a bot running it drops a request file and waits for the bot's
answer file; with none running it takes the lock itself and changes the persisted state
in the store directly, so the next start honours it. Requests older than
``max_request_age_s`` are answered as expired, never applied late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from tradebot.core.errors import StateError
from tradebot.core.models import TradingState

__all__ = [
    "ACTIONS",
    "BotLock",
    "ControlResult",
    "ControlWatcher",
    "apply_command",
    "bot_running",
    "send_command",
]

log = logging.getLogger("tradebot.control")

LOCK_FILE = "bot.lock"
CONTROL_DIR = "control"
ACTIONS: dict[str, TradingState] = {
    "halt": TradingState.HALTED,
    "reduce": TradingState.REDUCING,
    "resume": TradingState.ACTIVE,
}


@attrs.frozen
class ControlResult:
    """The answer to an operator command."""

    ok: bool
    action: str
    state: str
    message: str
    via: str = "bot"
    """``bot`` (a running bot applied it) or ``store`` (no bot ran; the saved state changed)."""

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def apply_command(trading: Any, action: str, reason: str, source: str) -> ControlResult:
    """Apply ``halt`` / ``reduce`` / ``resume`` to a trading state machine (the core entry point)."""
    target = ACTIONS.get(action)
    if target is None:
        return ControlResult(
            False, action, trading.state.value, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"
        )
    reason = reason.strip() or f"operator {action}"
    change = await trading.set_state(target, reason, source)
    if change is None:
        return ControlResult(
            True, action, trading.state.value, f"already {trading.state.value}: nothing changed"
        )
    return ControlResult(
        True, action, change.current.value, f"{change.previous.value} -> {change.current.value}: {reason}"
    )


class BotLock:
    """The exclusive lock a running bot holds on ``<state_dir>/bot.lock``."""

    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if free; False when another process holds it."""
        import fcntl

        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot use the state directory {self.path.parent}: {exc.strerror or exc}; make sure it is "
                "writable and the disk has free space",
                path=str(self.path),
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: the lock holds anyway, only the pid note is missing
            pass
        self._fd = fd
        return True

    def acquire(self, *, wait_s: float = 3.0) -> None:
        """Take the lock, waiting a little for a CLI command that holds it briefly."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise StateError(
                    "another tradebot process is running with this state directory "
                    f"(pid {self.holder_pid() or 'unknown'}); stop it or use another state_dir",
                    path=str(self.path),
                )
            time.sleep(0.05)

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None


def bot_running(state_dir: Path | str) -> bool:
    """True when a bot holds the state directory's lock."""
    probe = BotLock(state_dir)
    if not probe.path.exists():
        return False
    if probe.try_acquire():
        probe.release()
        return False
    return True


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


class ControlWatcher:
    """Holds the bot lock and applies operator requests dropped into the control folder."""

    def __init__(
        self,
        state_dir: Path | str,
        trading: Any,
        *,
        poll_s: float = 0.2,
        max_request_age_s: float = 30.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / CONTROL_DIR
        self.trading = trading
        self.poll_s = poll_s
        self.max_request_age_s = max_request_age_s
        self.lock = BotLock(self.state_dir)
        self.applied = 0

    def acquire(self) -> None:
        """Take the bot lock (:class:`StateError` when another bot runs here)."""
        self.lock.acquire()
        self.dir.mkdir(parents=True, exist_ok=True)

    def release(self) -> None:
        self.lock.release()

    async def run(self) -> None:
        """Poll for requests until cancelled."""
        if not self.lock.held:
            self.acquire()
        while True:
            try:
                await self.poll_once()
            except OSError as exc:
                log.warning("control folder %s unreadable: %s", self.dir, exc)
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> int:
        """Apply every pending request, oldest first; returns how many were handled."""
        handled = 0
        for req in sorted(self.dir.glob("*.req.json")):
            res = req.with_name(req.name[: -len(".req.json")] + ".res.json")
            try:
                data = json.loads(req.read_text(encoding="utf-8"))
                action, reason, source = (
                    str(data["action"]),
                    str(data.get("reason", "")),
                    str(data.get("source", "operator")),
                )
                age = time.time() - float(data.get("sent_at", 0))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                result = ControlResult(False, "?", self.trading.state.value, f"unreadable request: {exc}")
            else:
                if age > self.max_request_age_s:
                    result = ControlResult(
                        False,
                        action,
                        self.trading.state.value,
                        f"request expired ({age:.0f}s old), not applied",
                    )
                else:
                    result = await apply_command(self.trading, action, reason, source)
                    log.warning("operator %s (%s, by %s): %s", action, reason, source, result.message)
                    self.applied += 1
            _write_json(res, result.as_json())
            with contextlib.suppress(FileNotFoundError):
                req.unlink()
            handled += 1
        return handled


def send_command(
    state_dir: Path | str,
    action: str,
    reason: str = "",
    *,
    source: str = "operator:cli",
    timeout_s: float = 5.0,
) -> ControlResult:
    """Halt / reduce / resume a running bot, or change the saved state when none runs.

    Blocking (it is what the CLI calls). :class:`StateError` when a running bot does not
    answer within ``timeout_s`` (the request is withdrawn, so it is not applied later).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    state_dir = Path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
            raise PermissionError(13, "not readable and writable")
    except OSError as exc:
        raise StateError(
            f"cannot use the state directory {state_dir}: {exc.strerror or exc}", path=str(state_dir)
        ) from None
    lock = BotLock(state_dir)
    if lock.try_acquire():
        try:
            return _apply_offline(state_dir, action, reason, source)
        finally:
            lock.release()
    folder = state_dir / CONTROL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    req, res = folder / f"{rid}.req.json", folder / f"{rid}.res.json"
    _write_json(req, {"action": action, "reason": reason, "source": source, "sent_at": time.time()})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if res.exists():
            try:
                data = json.loads(res.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                time.sleep(0.02)
                continue
            res.unlink(missing_ok=True)
            return ControlResult(**data)
        time.sleep(0.02)
    req.unlink(missing_ok=True)
    raise StateError(
        f"the running bot (pid {lock.holder_pid() or 'unknown'}) did not answer within {timeout_s:g}s",
        path=str(folder),
    )


def _apply_offline(state_dir: Path, action: str, reason: str, source: str) -> ControlResult:
    from tradebot.core.store import StateStore
    from tradebot.core.trading_state import TradingStateMachine

    store = StateStore(state_dir)
    try:
        trading = TradingStateMachine(store=store)
        trading.restore(announce=False)  # the command reports the change itself
        result = asyncio.run(apply_command(trading, action, reason, source))
    finally:
        store.close()
    note = " (no bot is running: saved for the next start)"
    return attrs.evolve(result, via="store", message=result.message + note)
