"""In-process supervision of the bot's long-running parts, in the manner of OTP.

Market data, the executor, the monitor, the strategy runner and the notifiers run as
supervised children: async tasks built from ``start`` callables. When a child ends the
supervisor decides by its restart type (``permanent``: always restart, ``transient``:
restart only after a crash, ``temporary``: never), first handing a crash to the
:class:`~tradebot.core.healing.Healer` (whose ``restart-component`` rung restarts the child
through :meth:`Supervisor.restart_child`). Restart intensity: more than ``max_restarts``
restarts within ``period_s`` escalates — the supervisor calls its ``on_escalate`` callback
(the bot stops with exit code 75 so the process supervisor restarts it). ``one_for_one``
restarts the failed child only; ``one_for_all`` restarts every child.
Shutdown cancels the children in reverse start order, all within ``stop_grace_s``; a child
that has not ended by then is named in the log and left behind (the bot then exits anyway).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import TradebotError
from tradebot.core.healing import EXIT_ESCALATE, Failure, Healer, send_alert
from tradebot.core.models import Alert, AlertLevel
from tradebot.core.validate import ge, gt, in_range, one_of

__all__ = [
    "ChildSpec",
    "ChildStatus",
    "RestartIntensityExceeded",
    "RestartType",
    "Supervisor",
    "SupervisorSettings",
]

log = logging.getLogger("tradebot.supervisor")

_LAST_MOMENT_S = 0.25
"""Children still running when the stop's bound is spent are cancelled and given this long."""


class RestartType(enum.StrEnum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after it crashed
    TEMPORARY = "temporary"  # never


class RestartIntensityExceeded(TradebotError):
    """More restarts within the period than the supervisor allows."""


@attrs.frozen
class SupervisorSettings:
    """``[supervisor]``: restart intensity, strategy, shutdown bound."""

    max_restarts: int = attrs.field(default=5, validator=ge(0))
    """At most this many restarts within ``period_s``; one more escalates."""
    period_s: float = attrs.field(default=60.0, validator=gt(0))
    strategy: str = attrs.field(default="one_for_one", validator=one_of(("one_for_one", "one_for_all")))
    restart_delay_s: float = attrs.field(default=0.0, validator=in_range(0, 3600))
    """Pause before a restart (lets a flapping dependency settle)."""
    stop_grace_s: float = attrs.field(default=10.0, validator=in_range(0.1, 3600))
    """Bound on any stop (escalation, signal, ``--duration``, a failure): what has not stopped
    within it is cancelled and left behind, and the process exits with its code anyway."""
    shutdown_timeout_s: float | None = attrs.field(default=None, validator=in_range(0.1, 3600))
    """The old name of ``stop_grace_s``, still read: a config that sets it gets that grace."""
    heal_crashes: bool = True
    """Hand crashes to the healing ladder before restarting."""
    escalate_exit_code: int = attrs.field(default=EXIT_ESCALATE, validator=in_range(1, 255))

    def __attrs_post_init__(self) -> None:
        old = self.shutdown_timeout_s
        if old is None:
            return
        if self.stop_grace_s not in (10.0, old):
            raise ValueError(
                f"shutdown_timeout_s is the old name of stop_grace_s; set only stop_grace_s"
                f" (got stop_grace_s = {self.stop_grace_s:g} and shutdown_timeout_s = {old:g})"
            )
        object.__setattr__(self, "stop_grace_s", old)


@attrs.frozen
class ChildSpec:
    """One supervised child. ``start()`` returns the coroutine the child runs."""

    name: str
    start: Callable[[], Awaitable[Any]]
    restart: RestartType = RestartType.PERMANENT
    plugin: str | None = None
    heal: bool = True


@attrs.define
class ChildStatus:
    """A child's state as :meth:`Supervisor.status` shows it."""

    name: str
    running: bool
    restarts: int
    last_error: str | None


@attrs.define
class _Child:
    spec: ChildSpec
    task: asyncio.Task[Any] | None = None
    generation: int = 0
    restarts: int = 0
    last_error: str | None = None
    stopped: bool = False  # removed (temporary child ended, or stop_child)


EscalateCallback = Callable[[str, int], Any]
AlertSink = Callable[[Alert], Awaitable[None] | None]


class Supervisor:
    """Runs children and restarts them by policy; escalates when restarts come too fast."""

    def __init__(
        self,
        settings: SupervisorSettings | None = None,
        *,
        clock: Clock | None = None,
        healer: Healer | None = None,
        on_escalate: EscalateCallback | None = None,
        alert: AlertSink | None = None,
        restart_unhealed: bool = True,
    ) -> None:
        self.settings = settings or SupervisorSettings()
        self.restart_unhealed = restart_unhealed
        self._clock: Clock = clock or SystemClock()
        self.healer = healer
        self.on_escalate = on_escalate
        self._alert = alert
        self._children: dict[str, _Child] = {}
        self._order: list[str] = []
        self._restarts: collections.deque[float] = collections.deque()
        self._exits: asyncio.Queue[tuple[str, int, asyncio.Task[Any]]] = asyncio.Queue()
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False
        self.escalated: str | None = None
        self.escalation = asyncio.Event()
        self.restarts_total = 0

    # --- children ------------------------------------------------------------------------

    def add(self, spec: ChildSpec) -> None:
        """Add a child; it starts now when the supervisor runs, else at :meth:`start`."""
        if spec.name in self._children and not self._children[spec.name].stopped:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        self._children[spec.name] = _Child(spec)
        if spec.name in self._order:
            self._order.remove(spec.name)
        self._order.append(spec.name)
        if self._monitor is not None and not self._stopping:
            self._launch(self._children[spec.name])

    def has_child(self, name: str) -> bool:
        child = self._children.get(name)
        return child is not None and not child.stopped

    def is_running(self, name: str) -> bool:
        child = self._children.get(name)
        return child is not None and child.task is not None and not child.task.done()

    def status(self) -> list[ChildStatus]:
        """Every child in start order."""
        return [
            ChildStatus(n, self.is_running(n), self._children[n].restarts, self._children[n].last_error)
            for n in self._order
            if n in self._children
        ]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every child in order and begin watching them."""
        if self._monitor is not None:
            return
        self._monitor = asyncio.create_task(self._watch(), name="supervisor")
        for name in list(self._order):
            self._launch(self._children[name])

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` began (nothing is restarted from then on)."""
        return self._stopping

    async def stop(self, deadline: float | None = None) -> list[str]:
        """Cancel the children in reverse start order, all within ``stop_grace_s``.

        ``deadline`` (event-loop time) overrides the bound, e.g. the end of the bot's
        grace period. Never waits past it, whatever a child or the watcher does with its
        cancellation (a task may swallow one: :func:`asyncio.wait_for` on Python 3.11 does
        when its inner task finishes at the same moment). Returns the names of the tasks
        that had not ended by then, which are logged.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.settings.stop_grace_s
        stuck: list[str] = []
        monitor = self._monitor
        if monitor is not None and not monitor.done() and monitor is not asyncio.current_task():
            monitor.cancel()
            if not await self._ended(monitor, max(0.0, deadline - loop.time())):
                stuck.append("supervisor")
        late: list[tuple[str, asyncio.Task[Any]]] = []
        for name in reversed(self._order):  # reverse start order, each in turn, one bound for all
            child = self._children.get(name)
            task = child.task if child is not None else None
            if task is None or task.done() or task is asyncio.current_task():
                continue
            task.cancel()
            left = deadline - loop.time()
            if left <= 0:
                late.append((name, task))  # the bound is spent: cancelled, given a last moment below
            elif not await self._ended(task, left):
                stuck.append(name)
        if late:
            await asyncio.wait({t for _, t in late}, timeout=_LAST_MOMENT_S)
            stuck.extend(n for n, t in late if not t.done())
        if stuck:
            log.error(
                "stop: %s did not end within the grace period of being cancelled; left behind",
                ", ".join(stuck),
                extra={"stuck": stuck},
            )
        self._monitor = None
        return stuck

    @staticmethod
    async def _ended(task: asyncio.Task[Any], timeout: float) -> bool:
        """Wait (never past ``timeout``) for a cancelled task to end; never raises its error."""
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done and not task.cancelled():
            task.exception()  # retrieved: a crash while stopping is moot
        return bool(done)

    async def _cancel(self, child: _Child, timeout: float) -> None:
        task = child.task
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.error("child %s did not stop within %.1fs of being cancelled", child.spec.name, timeout)

    def _launch(self, child: _Child) -> None:
        child.generation += 1
        gen = child.generation
        name = child.spec.name
        coro = child.spec.start()
        if not inspect.isawaitable(coro):
            raise TypeError(f"child {name!r}: start() must return an awaitable (got {type(coro).__name__})")
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        child.task = task
        task.add_done_callback(lambda t: self._exited(name, gen, t))

    def _exited(self, name: str, gen: int, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here: every crash is handled (or skipped) by the watcher
        self._exits.put_nowait((name, gen, task))

    # --- restarts -----------------------------------------------------------------------------

    def _count_restart(self, reason: str) -> None:
        now = self._clock.monotonic()
        while self._restarts and now - self._restarts[0] > self.settings.period_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.settings.max_restarts:
            raise RestartIntensityExceeded(
                f"more than {self.settings.max_restarts} restarts within {self.settings.period_s:g}s",
                last=reason,
            )
        self._restarts.append(now)
        self.restarts_total += 1

    async def restart_child(self, name: str, reason: str = "restart requested") -> None:
        """Restart one child (``one_for_all``: every child), counting restart intensity.

        Raises :class:`RestartIntensityExceeded` instead of restarting when too many
        restarts happened within the period (the caller escalates).
        """
        child = self._children.get(name)
        if child is None or child.stopped:
            raise KeyError(f"no supervised child named {name!r}")
        self._count_restart(f"{name}: {reason}")
        if self.settings.restart_delay_s > 0:
            await self._clock.sleep(self.settings.restart_delay_s)
        targets = [name] if self.settings.strategy == "one_for_one" else list(self._order)
        for n in reversed(targets):
            c = self._children[n]
            if c.task is not None and not c.task.done():
                await self._cancel(c, self.settings.stop_grace_s)
        for n in targets:
            c = self._children[n]
            if c.stopped:
                continue
            c.restarts += 1
            self._launch(c)
        log.warning("restarted %s (%s)", ", ".join(targets), reason, extra={"component": name})

    def escalate(self, reason: str, exit_code: int | None = None) -> None:
        """Give up in-process: tell the bot to stop with the escalation exit code."""
        code = exit_code if exit_code is not None else self.settings.escalate_exit_code
        if self.escalated is None:
            self.escalated = reason
            log.critical("escalating (exit code %d): %s", code, reason)
        self.escalation.set()
        if self.on_escalate is not None:
            self.on_escalate(reason, code)

    # --- watching ---------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            name, gen, task = await self._exits.get()
            child = self._children.get(name)
            if self._stopping:
                return  # stop() began: nothing is restarted or healed any more
            if child is None or gen != child.generation or task.cancelled():
                continue  # an old incarnation, or a cancel we asked for
            if self.escalated is not None:
                continue  # the bot is stopping for a process restart: restarting here is pointless
            try:
                await self._on_exit(child, task)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any single mishap
                log.exception("supervisor: handling the end of %s failed", name)

    async def _on_exit(self, child: _Child, task: asyncio.Task[Any]) -> None:
        exc = task.exception()
        name = child.spec.name
        reason = "finished"
        if exc is None:
            log.info("child %s finished", name)
            if child.spec.restart is not RestartType.PERMANENT:
                child.stopped = True  # transient/temporary children that finish are done
                return
        else:
            reason = f"{type(exc).__name__}: {exc}"
            child.last_error = reason
            log.error("child %s crashed: %s", name, child.last_error, exc_info=exc, extra={"component": name})
            if child.spec.restart is RestartType.TEMPORARY:
                child.stopped = True
                return
        if exc is not None and self.healer is not None and self.settings.heal_crashes and child.spec.heal:
            failure = Failure.from_exception(exc, component=name, plugin=child.spec.plugin)
            result = await self.healer.heal(failure)
            if result.escalated or self.escalated is not None:
                return
            if not result.healed:
                if not self.restart_unhealed:
                    self.escalate(f"{name} crashed and could not be healed: {child.last_error}", 1)
                    return
                log.error("child %s: healing did not succeed; restarting it anyway", name)
        if self.is_running(name):
            return  # the healing ladder restarted it
        try:
            await self.restart_child(name, reason=reason)
        except RestartIntensityExceeded as err:
            await self._send(
                Alert(
                    level=AlertLevel.CRITICAL,
                    title="restart intensity exceeded",
                    message=f"{err}; last: {name}: {child.last_error}. Escalating to a process restart.",
                    source="supervisor",
                    key="supervisor:intensity",
                )
            )
            self.escalate(f"restart intensity exceeded: {err}")

    async def _send(self, alert: Alert) -> None:
        await send_alert(self._alert, alert)


async def start_supervision(
    context: Any,
    request_stop: Callable[..., Any],
    *,
    infinite: bool = False,
    heartbeat: bool = True,
    alive: Callable[[], bool] | None = None,
) -> Supervisor:
    """Build the healer and the supervisor for a bot, attach them to ``context``, start them.

    ``request_stop(reason, exit_code=...)`` is the bot's stop; escalation calls it with
    the escalation exit code. Without ``infinite``, a crash the ladder cannot heal stops
    the bot (exit code 1); with it, the child is restarted anyway (up to the restart
    intensity). A heartbeat child proves liveness to ``--auto-restart`` and systemd, only
    while ``alive()`` holds (the bot is not stopping) and nothing escalated.
    """
    from tradebot.core.healing import HealingSettings
    from tradebot.core.sdnotify import Heartbeat

    settings: SupervisorSettings = context.settings.section("supervisor") or SupervisorSettings()
    healing: HealingSettings = context.settings.section("healing") or HealingSettings()
    healer = Healer.from_context(context, healing) if healing.enabled else None
    host = context.plugins

    async def alert(a: Alert) -> None:
        await host.broadcast("tradebot_alert", alert=a)

    def on_escalate(reason: str, code: int) -> None:
        request_stop(reason, exit_code=code)

    sup = Supervisor(
        settings,
        clock=context.clock,
        healer=healer,
        on_escalate=on_escalate,
        alert=alert,
        restart_unhealed=infinite,
    )
    context.healer = healer
    context.supervisor = sup
    await sup.start()

    def beating() -> bool:
        return sup.escalated is None and not sup.stopping and (alive is None or alive())

    beat = Heartbeat(alive=beating)
    if heartbeat and beat.active:
        sup.add(ChildSpec("heartbeat", beat.run, heal=False))
    return sup
