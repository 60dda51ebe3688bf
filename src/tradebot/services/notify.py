"""Notifications: what a person hears about, through every configured notifier, never blocking trading.

Notifiers are plugins (category ``notifier``) that only know how to deliver one message
(:class:`Notifier`). The :class:`NotificationDispatcher` is the one place that decides what
to say and when: it implements the broadcast hooks ``tradebot_startup``,
``tradebot_shutdown``, ``tradebot_trading_state_changed``, ``tradebot_alert`` and
``tradebot_health_report`` (registered into the plugin host as plugin ``notifications``),
adds an hourly heartbeat, filters by level, de-duplicates alerts by key, rate-limits, and
hands each message to every notifier's own bounded outbox. A background task per notifier
sends with a timeout and a few retries; when its queue is full the oldest message is
dropped and counted. A hook call only appends to deques, so a notifier that is down or
slow never delays the bot.

Trading-state changes and critical alerts are never rate-limited; state changes are never
de-duplicated (a HALT always gets through), and they mark their key as sent so that the
bot's matching ``trading-state:<state>`` alert is not sent twice.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import ConfigError, PermanentError, RateLimited, TradebotError
from tradebot.core.hookspecs import hookimpl
from tradebot.core.models import Alert, AlertLevel, TradingStateChange, utc_now
from tradebot.core.secrets import redact
from tradebot.core.validate import ge, gt, one_of

if TYPE_CHECKING:
    from tradebot.core.context import BotContext
    from tradebot.core.health import HealthReport
    from tradebot.core.plugins import PluginHost
    from tradebot.services.metrics import BotMetrics

__all__ = [
    "ClosesNotifier",
    "Notification",
    "NotificationDispatcher",
    "NotificationSettings",
    "Notifier",
    "Outbox",
    "install_notifications",
]

log = logging.getLogger("tradebot.notify")

_LEVEL_ORDER = {"info": 0, "warning": 1, "critical": 2}


@attrs.frozen
class Notification:
    """One message for people. ``kind``: startup, restart, shutdown, trading_state,
    heartbeat, health or alert."""

    kind: str
    level: AlertLevel
    title: str
    text: str
    time: datetime = attrs.field(factory=utc_now)
    key: str | None = None
    bot: str = "tradebot"

    def as_json(self) -> dict[str, Any]:
        """The message as JSON-ready data (what the webhook posts)."""
        return {
            "bot": self.bot,
            "kind": self.kind,
            "level": self.level.value,
            "title": self.title,
            "text": self.text,
            "time": self.time.isoformat(),
            "key": self.key,
        }

    def render(self) -> str:
        """A short plain-text rendering for chat messages."""
        mark = {"info": "ℹ️", "warning": "⚠️", "critical": "🛑"}[self.level.value]
        return f"{mark} [{self.bot}] {self.title}\n{self.text}"


@runtime_checkable
class Notifier(Protocol):
    """Delivers one message. Raise a :class:`~tradebot.core.errors.TradebotError` when it failed;
    the dispatcher retries and counts. ``close`` is optional."""

    async def send(self, notification: Notification) -> None:
        """Deliver ``notification`` or raise."""


@runtime_checkable
class ClosesNotifier(Protocol):
    """A notifier's optional capability: release what it holds (an HTTP session) at shutdown.

    Checked once, when the notifier's outbox is built; ``close`` may be async."""

    def close(self) -> Awaitable[None] | None:
        """Release the notifier's resources; called once, after its queue was drained."""


@attrs.frozen
class NotificationSettings:
    """``[notifications]``: which notifiers are used and how hard they may be pushed.

    ``notifiers``: names of notifier components to use (default: every loaded one; the
    ``telegram`` and ``webhook`` plugins must be enabled in ``[plugins]``).
    ``heartbeat_interval_s``: a status message this often (0 = never).
    """

    notifiers: list[str] | None = None
    min_level: str = attrs.field(default="info", validator=one_of(tuple(_LEVEL_ORDER)))
    queue_size: int = attrs.field(default=100, validator=gt(0))
    send_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    max_attempts: int = attrs.field(default=3, validator=gt(0))
    retry_wait_s: float = attrs.field(default=2.0, validator=ge(0))
    retry_wait_max_s: float = attrs.field(default=60.0, validator=ge(0))
    rate_per_minute: float = attrs.field(default=20.0, validator=gt(0))
    dedupe_window_s: float = attrs.field(default=300.0, validator=ge(0))
    heartbeat_interval_s: float = attrs.field(default=3600.0, validator=ge(0))
    drain_timeout_s: float = attrs.field(default=5.0, validator=ge(0))


@attrs.define
class OutboxStats:
    """What one notifier's outbox did."""

    queued: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


class Outbox:
    """A bounded queue and a sender task for one notifier.

    :meth:`put` never blocks: when full, the oldest message is dropped (and counted).
    """

    def __init__(
        self,
        name: str,
        notifier: Any,
        settings: NotificationSettings,
        *,
        clock: Clock | None = None,
        metrics: Any = None,
    ) -> None:
        self.name = name
        self.notifier = notifier
        self.closes: ClosesNotifier | None = notifier if isinstance(notifier, ClosesNotifier) else None
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self.queue: collections.deque[tuple[Notification, int]] = collections.deque()
        self.stats = OutboxStats()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, notification: Notification) -> None:
        """Queue a message; drop the oldest when the queue is full."""
        if len(self.queue) >= self.settings.queue_size:
            dropped, _ = self.queue.popleft()
            self.stats.dropped += 1
            self._count("dropped")
            log.warning(
                "notifier %s: queue full, dropped %r (%d dropped so far)",
                self.name,
                dropped.title,
                self.stats.dropped,
            )
        self.queue.append((notification, 0))
        self.stats.queued += 1
        self._idle.clear()
        self._wake.set()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.notification(self.name, outcome)

    async def run(self) -> None:
        """Send queued messages until cancelled."""
        while True:
            if not self.queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            notification, attempts = self.queue.popleft()
            wait = await self._send_once(notification, attempts)
            if wait is None:
                continue
            if wait < 0 or attempts + 1 >= self.settings.max_attempts:
                self.stats.failed += 1
                self._count("failed")
                log.error(
                    "notifier %s: giving up on %r after %d attempts",
                    self.name,
                    notification.title,
                    attempts + 1,
                )
                continue
            self.stats.retries += 1
            if len(self.queue) < self.settings.queue_size:
                self.queue.appendleft((notification, attempts + 1))
            else:
                self.stats.dropped += 1
                self._count("dropped")
            await self.clock.sleep(wait)

    async def _send_once(self, notification: Notification, attempts: int) -> float | None:
        """Try once. None when sent, a negative number when retrying is pointless, else the wait."""
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                await self.notifier.send(notification)
        except TimeoutError:
            log.warning("notifier %s: sending timed out after %gs", self.name, self.settings.send_timeout_s)
        except RateLimited as exc:
            log.warning("notifier %s: rate limited: %s", self.name, redact(str(exc)))
            if exc.retry_after_s is not None:
                return min(exc.retry_after_s, self.settings.retry_wait_max_s)
        except PermanentError as exc:
            log.error("notifier %s: %s (not retried)", self.name, redact(str(exc)))
            return -1.0
        except TradebotError as exc:
            log.warning("notifier %s: %s", self.name, redact(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a notifier's bug must not stop its outbox
            log.error("notifier %s failed: %s: %s", self.name, type(exc).__name__, redact(str(exc)))
        else:
            self.stats.sent += 1
            self._count("sent")
            return None
        return min(self.settings.retry_wait_s * (2**attempts), self.settings.retry_wait_max_s)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until the queue is empty (at most ``timeout_s`` real seconds)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class NotificationDispatcher:
    """Turns bot events into notifications for every notifier. Register it into the plugin host.

    Build with :func:`install_notifications` (or directly with notifier objects for tests),
    then ``await start()``; ``await stop()`` at shutdown sends what is queued (bounded by
    ``drain_timeout_s``) and cancels the senders.
    """

    def __init__(
        self,
        notifiers: dict[str, Any],
        settings: NotificationSettings | None = None,
        *,
        context: BotContext | None = None,
        clock: Clock | None = None,
        metrics: BotMetrics | None = None,
        bot_name: str = "tradebot",
    ) -> None:
        self.settings = settings or NotificationSettings()
        self.context = context
        self.clock: Clock = clock or (context.clock if context is not None else SystemClock())
        self.metrics = metrics if metrics is not None else (context.metrics if context is not None else None)
        self.bot_name = bot_name
        self.outboxes = {
            name: Outbox(name, n, self.settings, clock=self.clock, metrics=self.metrics)
            for name, n in notifiers.items()
        }
        if self.metrics is not None:
            for name in self.outboxes:
                self.metrics.seed_notifier(name)
        self._sent_keys: dict[str, float] = {}
        self._tokens = float(self.settings.rate_per_minute)
        self._tokens_at = self.clock.monotonic()
        self.suppressed = 0
        self.deduplicated = 0
        self._health: tuple[str, dict[str, str]] | None = None
        self._started_at = self.clock.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start one sender task per notifier and the heartbeat."""
        if self._tasks:
            return
        self._started_at = self.clock.monotonic()
        for name, box in self.outboxes.items():
            self._tasks.append(asyncio.create_task(box.run(), name=f"notifier:{name}"))
        if self.settings.heartbeat_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="notifier:heartbeat"))

    async def stop(self) -> None:
        """Send what is queued (bounded), then stop the tasks and close the notifiers."""
        if self._tasks:
            await asyncio.gather(
                *(box.drain(self.settings.drain_timeout_s) for box in self.outboxes.values()),
                return_exceptions=True,
            )
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for name, box in self.outboxes.items():
            if box.closes is not None:
                try:
                    result = box.closes.close()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:  # closing must not stop the shutdown
                    log.warning("notifier %s: close failed", name, exc_info=True)

    # --- the decision ------------------------------------------------------------------

    def notify(self, notification: Notification, *, force: bool = False) -> bool:
        """Queue ``notification`` for every notifier unless filtered. Returns whether it was queued.

        ``force`` skips de-duplication and rate limiting (trading-state changes).
        """
        if _LEVEL_ORDER[notification.level.value] < _LEVEL_ORDER[self.settings.min_level] and not force:
            return False
        now = self.clock.monotonic()
        key = notification.key
        if not force and key is not None:
            last = self._sent_keys.get(key)
            if last is not None and now - last < self.settings.dedupe_window_s:
                self.deduplicated += 1
                self._count_all("deduplicated")
                return False
        if not force and notification.level is not AlertLevel.CRITICAL and not self._take_token(now):
            self.suppressed += 1
            self._count_all("rate_limited")
            return False
        if key is not None:
            self._sent_keys[key] = now
            self._forget_old_keys(now)
        if self.suppressed:
            notification = attrs.evolve(
                notification,
                text=f"{notification.text}\n({self.suppressed} earlier message(s) suppressed by rate limit)",
            )
            self.suppressed = 0
        notification = attrs.evolve(
            notification, bot=self.bot_name, title=redact(notification.title), text=redact(notification.text)
        )
        for box in self.outboxes.values():
            box.put(notification)
        return True

    def _take_token(self, now: float) -> bool:
        rate = self.settings.rate_per_minute / 60.0
        self._tokens = min(self.settings.rate_per_minute, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _forget_old_keys(self, now: float) -> None:
        if len(self._sent_keys) > 1000:
            window = self.settings.dedupe_window_s
            self._sent_keys = {k: t for k, t in self._sent_keys.items() if now - t < window}

    def _count_all(self, outcome: str) -> None:
        if self.metrics is not None:
            for name in self.outboxes:
                self.metrics.notification(name, outcome)

    # --- hooks (registered into the plugin host) -----------------------------------------

    @hookimpl
    def tradebot_startup(self, context: BotContext) -> None:
        starts = _counter(context, "starts")
        trading = context.trading
        state = (
            f"; trading state {trading.state.value.upper()} ({trading.reason})" if trading is not None else ""
        )
        pairs = ", ".join(context.settings.bot.pairs)
        if starts > 1:
            self.notify(
                Notification(
                    "restart",
                    AlertLevel.WARNING,
                    "bot restarted",
                    f"start #{starts}; trading {pairs}{state}",
                    key=f"restart:{starts}",
                )
            )
        else:
            self.notify(
                Notification(
                    "startup", AlertLevel.INFO, "bot started", f"trading {pairs}{state}", key="startup"
                ),
                force=True,
            )
        self._announce_load_failures(context.plugins)

    def _announce_load_failures(self, host: PluginHost | None) -> None:
        """Every enabled plugin that did not load is an alert: the bot runs without it."""
        if host is None:
            return
        report = host.report
        problems = {**dict.fromkeys(report.unknown, "enabled but not installed"), **dict(report.failed)}
        for name, error in problems.items():
            self.notify(
                Notification(
                    "alert",
                    AlertLevel.CRITICAL,
                    f"plugin {name} not loaded",
                    f"{error}; the bot runs without it (from plugins)",
                    key=f"plugin-load:{name}",
                )
            )

    @hookimpl
    def tradebot_shutdown(self, context: Any, reason: str) -> None:
        self.notify(
            Notification(
                "shutdown",
                AlertLevel.WARNING,
                "bot stopping",
                f"{reason}; uptime {_duration(self.clock.monotonic() - self._started_at)}"
                f"{self._status_line()}",
                key="shutdown",
            ),
            force=True,
        )

    @hookimpl
    def tradebot_trading_state_changed(self, change: TradingStateChange) -> None:
        level = AlertLevel.INFO if change.current.value == "active" else AlertLevel.CRITICAL
        title = (
            "trading resumed"
            if change.current.value == "active"
            else f"trading {change.current.value.upper()}"
        )
        self.notify(
            Notification(
                "trading_state",
                level,
                title,
                f"{change.previous.value} -> {change.current.value}: {change.reason} (by {change.source})",
                time=change.time,
                key=f"trading-state:{change.current.value}",
            ),
            force=True,
        )

    @hookimpl
    def tradebot_alert(self, alert: Alert) -> None:
        self.notify(
            Notification(
                "alert",
                alert.level,
                alert.title,
                f"{alert.message} (from {alert.source})",
                time=alert.time,
                key=alert.key or f"alert:{alert.source}:{alert.title}",
            )
        )

    @hookimpl
    def tradebot_health_report(self, report: HealthReport) -> None:
        overall, checks = _health_statuses(report)
        previous = self._health
        self._health = (overall, checks)
        if previous is None and overall == "ok":
            return
        if previous is not None and previous[0] == overall and previous[1] == checks:
            return
        changed = [
            f"{name}: {(previous[1] if previous else {}).get(name, 'unknown')} -> {status}"
            for name, status in checks.items()
            if (previous[1] if previous else {}).get(name) != status
        ]
        level = {"ok": AlertLevel.INFO, "degraded": AlertLevel.WARNING}.get(overall, AlertLevel.CRITICAL)
        title = "health recovered" if overall == "ok" else f"health {overall}"
        messages = _health_messages(report)
        details = "\n".join(
            f"{line}{' - ' + messages[n] if messages.get(n) else ''}"
            for line, n in ((c, c.split(":")[0]) for c in changed)
        )
        self.notify(
            Notification(
                "health",
                level,
                title,
                details or f"overall {overall}",
                key=f"health:{overall}:{','.join(sorted(f'{k}={v}' for k, v in checks.items()))}",
            )
        )

    # --- heartbeat -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await self.clock.sleep(self.settings.heartbeat_interval_s)
            self.notify(self.heartbeat_message())

    def heartbeat_message(self) -> Notification:
        """The periodic 'still alive' status message."""
        uptime = _duration(self.clock.monotonic() - self._started_at)
        return Notification(
            "heartbeat", AlertLevel.INFO, "heartbeat", f"uptime {uptime}{self._status_line()}"
        )

    def _status_line(self) -> str:
        ctx = self.context
        if ctx is None:
            return ""
        parts: list[str] = []
        if ctx.trading is not None:
            parts.append(f"state {ctx.trading.state.value.upper()}")
        portfolio = ctx.portfolio
        if portfolio is not None:
            equity = portfolio.equity()
            if equity is not None:
                parts.append(f"equity {equity:.2f}")
            parts.append(f"realised PnL {portfolio.realized_pnl:.2f}")
        if self._health is not None:
            parts.append(f"health {self._health[0]}")
        return ("; " + ", ".join(parts)) if parts else ""


def _counter(context: BotContext, name: str) -> int:
    store = context.store
    try:
        return int(store.get_counter(name)) if store is not None else 0
    except Exception:  # noqa: BLE001 - a store problem must not stop the start-up message
        return 0


def _health_statuses(report: HealthReport) -> tuple[str, dict[str, str]]:
    """(overall status, check -> status) from a health report."""
    checks = {str(name): r.status.value for name, r in report.results.items()}
    return report.status.value, checks


def _health_messages(report: HealthReport) -> dict[str, str]:
    return {str(name): r.message or "" for name, r in report.results.items()}


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def install_notifications(
    context: BotContext, settings: NotificationSettings | None = None
) -> NotificationDispatcher:
    """Build every configured notifier, register the dispatcher's hooks; the caller starts/stops it.

    Raises :class:`ConfigError` when ``[notifications] notifiers`` names a notifier that is
    not loaded.
    """
    settings = settings or context.settings.section("notifications") or NotificationSettings()
    host = context.plugins
    available = host.components("notifier")
    names = settings.notifiers if settings.notifiers is not None else sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(
            "invalid configuration",
            [
                f"notifier {n!r} is not loaded (enable its plugin in [plugins] enabled; loaded: "
                f"{', '.join(sorted(available)) or 'none'}) @ $.notifications.notifiers"
                for n in missing
            ],
        )
    notifiers = {
        name: host.build("notifier", name, context.settings.plugin_config("notifier", name), context)
        for name in names
    }
    dispatcher = NotificationDispatcher(
        notifiers, settings, context=context, bot_name=context.settings.bot.name
    )
    if host.pm.get_plugin("notifications") is None:
        host.pm.register(dispatcher, name="notifications")
    context.extras["notifications"] = dispatcher
    return dispatcher
