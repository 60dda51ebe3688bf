"""A quarantined plugin the bot cannot run without: heal it, or restart the process.

The plugin host switches a plugin off for the run after ``quarantine_after`` consecutive
faults (exceptions that are not our typed operational errors: bugs). For a strategy, a
check or a notifier that is the right answer, as the rest keeps going. The bot cannot
trade without its exchange, though: every order, cancel and order look-up would be
refused for the rest of the run, with orders possibly in doubt, and nothing would ever
lift it.

:class:`CriticalPluginWatch` hands such a quarantine to the healing ladder instead. The
``reload-module`` rung lifts it once the plugin's broken module imports and runs again
(the failure's probe, a guarded call to the plugin, must pass too). When the ladder
cannot heal it, its ``escalate`` rung, or the watch itself when healing is off or ends
without escalating, stops the bot with :data:`~tradebot.core.healing.EXIT_ESCALATE`:
``--auto-restart`` or systemd then start a fresh process, which reconciles its order
journal with the exchange before trading again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from tradebot.core.healing import EXIT_ESCALATE, Failure, send_alert
from tradebot.core.models import Alert, AlertLevel

if TYPE_CHECKING:
    from tradebot.core.healing import Healer
    from tradebot.core.plugins import PluginHost

__all__ = ["CriticalPluginWatch"]

log = logging.getLogger("tradebot.plugins")

Probe = Callable[[], Awaitable[Any]]


class CriticalPluginWatch:
    """Heals or escalates the quarantine of the plugins in ``critical`` (plugin -> its role).

    ``probes`` maps a plugin to a cheap guarded call that works only once the plugin does
    (it goes through the host, so it fails while the quarantine holds). ``healer`` is read
    when a quarantine happens (None: healing is off). ``stop(reason, exit_code)`` stops the
    bot; ``alert`` receives a critical alert for each quarantine.
    """

    def __init__(
        self,
        host: PluginHost,
        critical: Mapping[str, str],
        *,
        probes: Mapping[str, Probe] | None = None,
        healer: Callable[[], Healer | None],
        stop: Callable[[str, int], None],
        alert: Callable[[Alert], Any] | None = None,
    ) -> None:
        self._host = host
        self._critical = dict(critical)
        self._probes = dict(probes or {})
        self._healer = healer
        self._stop = stop
        self._alert = alert
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self.recoveries: list[tuple[str, str]] = []
        """(plugin, outcome) per quarantine handled: ``healed``, ``escalated`` or ``stopped``."""

    def attach(self) -> None:
        """Start listening to the host's quarantines (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._host.quarantine_listeners.append(self._on_quarantine)

    async def close(self) -> None:
        """Stop listening; a recovery still running is cancelled."""
        if self._on_quarantine in self._host.quarantine_listeners:
            self._host.quarantine_listeners.remove(self._on_quarantine)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_quarantine(self, plugin: str, reason: str) -> None:
        # a listener runs inside whatever call counted the fault, possibly on a worker
        # thread: the recovery itself is scheduled on the loop
        if plugin not in self._critical or self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._start, plugin, reason)

    def _start(self, plugin: str, reason: str) -> None:
        task = asyncio.ensure_future(self.recover(plugin, reason))
        task.set_name(f"recover-quarantined:{plugin}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.critical("recovering a quarantined plugin failed: %s", exc, exc_info=exc)
            self._stop(f"recovering a quarantined plugin failed: {exc}", EXIT_ESCALATE)

    async def recover(self, plugin: str, reason: str) -> bool:
        """Heal the quarantined ``plugin`` or stop the bot for a restart. True when healed."""
        role = self._critical.get(plugin, "a part the bot needs")
        message = (
            f"plugin {plugin!r} ({role}) was switched off after repeated faults: {reason}. "
            "Until it is healed every call to it is refused, so the bot cannot place, cancel or look up orders"
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
        healer = self._healer()
        if healer is not None:
            cause = self._host.quarantine_cause(plugin)
            probe = self._probes.get(plugin)
            if cause is not None:
                failure = Failure.from_exception(cause, component=role, plugin=plugin, probe=probe, reason=reason)
            else:
                failure = Failure(kind="plugin-quarantined", component=role, plugin=plugin, probe=probe)
            result = await healer.heal(failure)
            if result.escalated:
                self.recoveries.append((plugin, "escalated"))
                return False
            if result.healed and not self._host.is_quarantined(plugin):
                log.warning("plugin %r healed by %s: its quarantine is lifted", plugin, result.action)
                self.recoveries.append((plugin, "healed"))
                return True
        self.recoveries.append((plugin, "stopped"))
        self._stop(
            f"{message}; stopping so a fresh process (--auto-restart, systemd) starts it again", EXIT_ESCALATE
        )
        return False
