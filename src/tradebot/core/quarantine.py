"""A quarantined plugin the bot cannot run without: heal it, or restart the process.

The plugin host switches a plugin off for the run after ``quarantine_after`` consecutive
faults (exceptions that are not our typed operational errors: bugs). For a strategy, a
check or a notifier that is the right answer, as the rest keeps going. The bot cannot
trade without its exchange, though: every order, cancel and order look-up would be
refused for the rest of the run, with orders possibly in doubt, and nothing would ever
lift it.

:class:`CriticalPluginWatch` hands such a quarantine to the healing ladder instead. Of the
built-in rungs only ``reload-module`` can lift it, and only for an ImportError or NameError
raised from the plugin's own module: it reloads the module and re-registers the plugin,
and the healing counts only if a probe through the host then works. The probe repeats the
call that failed when it takes no arguments (``balances``, ``open_orders`` ...), else it is
the plugin's cheap ``server_time``/``system_status``; so a plugin quarantined again within
``reheal_window_s`` of being healed is not healed twice. When the ladder cannot heal it,
its ``escalate`` rung, or the watch itself, stops the bot for a process restart (exit
code 75 unless configured otherwise): ``--auto-restart`` or systemd then start a fresh
process, which reconciles its order journal with the exchange before trading again. A bug
that a fresh process hits again restarts it again, within ``--auto-restart``'s or
systemd's own restart limits.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from tradebot.core.errors import describe
from tradebot.core.healing import Failure, send_alert
from tradebot.core.hookspecs import REGISTER_HOOKS
from tradebot.core.models import Alert, AlertLevel

if TYPE_CHECKING:
    from tradebot.core.healing import Healer
    from tradebot.core.plugins import PluginHost

__all__ = ["CriticalPart", "CriticalPluginWatch"]

log = logging.getLogger("tradebot.plugins")

Probe = Callable[[], Awaitable[Any]]
_MAX_REASON = 300  # characters of a fault's text repeated in alerts and the stop reason
_FALLBACK_PROBES = ("server_time", "system_status")


@attrs.frozen
class CriticalPart:
    """A part the bot needs (``role``, e.g. "the exchange") and the guarded object behind it.

    ``consequence`` says what the quarantine stops, for the alert ("the bot cannot place ...").
    """

    role: str
    part: object
    consequence: str = attrs.field(kw_only=True)

    def probe(self, method: str | None) -> Probe | None:
        """A guarded call that works only once the plugin does: ``method`` when it needs no
        arguments, else the part's cheapest read; None when it has neither."""
        for name in (method, *_FALLBACK_PROBES):
            fn = getattr(self.part, name, None) if name else None
            if fn is not None and callable(fn) and _takes_no_arguments(fn):
                return _awaiting(fn)
        return None


def _takes_no_arguments(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in params
    )


def _awaiting(fn: Callable[[], Any]) -> Probe:
    async def probe() -> Any:
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        return result

    return probe


def _short(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "..."


class CriticalPluginWatch:
    """Heals or escalates the quarantine of the plugins in ``critical`` (plugin -> its part).

    ``healer`` is read when a quarantine happens (None: healing is off). ``stop(reason)``
    stops the bot for a process restart; ``alert`` receives a critical alert for each
    quarantine of any plugin (one not in ``critical`` is only reported: the bot goes on
    without it); :attr:`quarantines` lists them all, for the run summary. Nothing is done
    once :meth:`close` was called or ``active()`` is false (the bot is stopping).
    """

    def __init__(
        self,
        host: PluginHost,
        critical: Mapping[str, CriticalPart],
        *,
        healer: Callable[[], Healer | None],
        stop: Callable[[str], None],
        alert: Callable[[Alert], Any] | None = None,
        active: Callable[[], bool] = lambda: True,
        reheal_window_s: float = 600.0,
    ) -> None:
        self._host = host
        self._critical = dict(critical)
        self._healer = healer
        self._stop = stop
        self._alert = alert
        self._active = active
        self.reheal_window_s = reheal_window_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[bool]] = set()
        self._recovering: set[str] = set()
        self._healed_at: dict[str, float] = {}
        self.recoveries: list[tuple[str, str]] = []
        """(plugin, outcome) per quarantine handled: ``healed``, ``escalated`` or ``stopped``."""
        self.quarantines: list[tuple[str, str]] = []
        """(plugin, why) of every quarantine heard of, critical or not, in order."""
        self._alert_tasks: set[asyncio.Task[None]] = set()

    def attach(self) -> None:
        """Start listening to the host's quarantines (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._host.quarantine_listeners.append(self._on_quarantine)
        for plugin, reason in self._host.quarantined.items():  # switched off before we listened
            if plugin in self._critical:
                self._start(plugin, reason)
            else:
                self._alert_quarantine(plugin, reason)

    async def close(self) -> None:
        """Stop listening; a recovery still running is cancelled."""
        self._closed = True
        if self._on_quarantine in self._host.quarantine_listeners:
            self._host.quarantine_listeners.remove(self._on_quarantine)
        if self._alert_tasks:  # alerts already on their way are delivered (bounded by the notifiers)
            await asyncio.gather(*self._alert_tasks, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_quarantine(self, plugin: str, reason: str) -> None:
        # a listener runs inside whatever call counted the fault, possibly on a worker
        # thread: the recovery (or the alert) is scheduled on the loop
        loop = self._loop
        if self._closed or loop is None or loop.is_closed():
            return
        if plugin in self._critical:
            loop.call_soon_threadsafe(self._start, plugin, reason)
        else:
            loop.call_soon_threadsafe(self._alert_quarantine, plugin, reason)

    def _alert_quarantine(self, plugin: str, reason: str) -> None:
        """A plugin the bot trades on without was quarantined: a person hears of it."""
        if self._closed:
            return
        parts = [
            f"{comp.category} {name}"
            for category in REGISTER_HOOKS.values()
            for name, comp in self._host.components(category).items()
            if comp.plugin == plugin
        ]
        what = f" ({', '.join(parts)})" if parts else ""
        message = (
            f"plugin {plugin!r}{what} was switched off for this run after repeated faults: {_short(reason)}. "
            "The bot goes on without it; a restart loads it again"
        )
        alert = Alert(
            level=AlertLevel.CRITICAL,
            title=f"plugin {plugin} quarantined",
            message=message,
            source="plugins",
            key=f"quarantine:{plugin}",
        )
        self.quarantines.append((plugin, reason))
        task = asyncio.ensure_future(send_alert(self._alert, alert))
        task.set_name(f"alert-quarantined:{plugin}")
        self._alert_tasks.add(task)
        task.add_done_callback(self._alert_tasks.discard)

    def _start(self, plugin: str, reason: str) -> None:
        if not self._closed:
            self.quarantines.append((plugin, reason))
        if self._closed or not self._active() or plugin in self._recovering:
            return
        self._recovering.add(plugin)
        task = asyncio.ensure_future(self.recover(plugin, reason))
        task.set_name(f"recover-quarantined:{plugin}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        log.critical("recovering a quarantined plugin failed: %s", describe(exc), exc_info=exc)
        if not self._closed and self._active():
            self._stop(f"recovering a quarantined plugin failed: {_short(describe(exc))}")

    async def recover(self, plugin: str, reason: str) -> bool:
        """Heal the quarantined ``plugin`` or stop the bot for a restart. True when healed."""
        try:
            return await self._recover(plugin, reason)
        finally:
            self._recovering.discard(plugin)

    async def _recover(self, plugin: str, reason: str) -> bool:
        part = self._critical[plugin]
        message = (
            f"plugin {plugin!r} ({part.role}) was switched off after repeated faults: {_short(reason)}. "
            f"Until it is healed {part.consequence}"
        )
        log.critical(message, extra={"plugin": plugin})
        await send_alert(
            self._alert,
            Alert(
                level=AlertLevel.CRITICAL,
                title=f"plugin {plugin} quarantined",
                message=message,
                source="plugins",
                key=f"quarantine:{plugin}",
            ),
        )
        healed_at = self._healed_at.get(plugin)
        healer = self._healer()
        if healed_at is not None and time.monotonic() - healed_at < self.reheal_window_s:
            why = f"it was quarantined again {time.monotonic() - healed_at:.0f}s after it was healed"
        elif healer is None:
            why = "healing is off"
        else:
            cause = self._host.quarantine_cause(plugin)
            probe = part.probe(cause.method if cause is not None else None)
            if cause is not None:
                failure = Failure.from_exception(cause.error, component=part.role, plugin=plugin, probe=probe)
            else:
                failure = Failure(kind="plugin-quarantined", component=part.role, plugin=plugin, probe=probe)
            result = await healer.heal(failure)
            if result.escalated:
                self.recoveries.append((plugin, "escalated"))
                return False
            if result.healed and not self._host.is_quarantined(plugin):
                log.warning("plugin %r healed by %s: its quarantine is lifted", plugin, result.action)
                self._healed_at[plugin] = time.monotonic()
                self.recoveries.append((plugin, "healed"))
                return True
            why = "the healing ladder could not heal it"
        self.recoveries.append((plugin, "stopped"))
        if self._active() and not self._closed:
            self._stop(
                f"plugin {plugin!r} ({part.role}) was quarantined ({_short(reason)}) and {why}: stopping so a "
                "fresh process (--auto-restart, systemd) starts it again"
            )
        return False
