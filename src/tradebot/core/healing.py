"""Self-healing: recovery actions tried for a failure in a configured escalation order.

A :class:`Failure` describes what went wrong (an exception, the component and plugin it
came from, an optional cheap ``probe`` that shows whether things work again). The
:class:`Healer` walks the ladder (``[healing] ladder``, by default reconnect -> dns ->
resync -> restart-component -> reload-module -> escalate): every action that applies to
the failure and is within its limits is tried, and the ladder stops at the first action
whose result is *verified* (the action's own check, then the failure's probe).

Every attempt is logged with its context, traced (a span per attempt when tracing is on)
and counted in :class:`HealingCounters` (``healer.counters``); more than
``alert_after`` healings within ``alert_window_s`` raises an alert.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from tradebot.core import telemetry
from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import ConfigError, TradebotError, describe
from tradebot.core.models import Alert, AlertLevel, utc_now
from tradebot.core.validate import ge, gt, non_empty

if TYPE_CHECKING:
    from tradebot.core.context import BotContext

__all__ = [
    "DEFAULT_LADDER",
    "EXIT_ESCALATE",
    "AttemptRecord",
    "Failure",
    "HealResult",
    "Healer",
    "HealingCounters",
    "HealingSettings",
    "RecoveryAction",
    "RecoveryLimits",
    "failing_module",
]

log = logging.getLogger("tradebot.healing")

EXIT_ESCALATE = 75
"""Exit code of a bot that gives up healing in-process and asks for a process restart
(``EX_TEMPFAIL``): ``--auto-restart`` and systemd ``Restart=on-failure`` restart it."""

DEFAULT_LADDER = ("reconnect", "dns", "resync", "restart-component", "reload-module", "escalate")

AlertSink = Callable[[Alert], Awaitable[None] | None]


# --- failures ------------------------------------------------------------------------


def failing_module(exc: BaseException | None) -> str | None:
    """The module whose code raised ``exc`` (innermost frame outside the import system)."""
    if exc is None:
        return None
    tb: TracebackType | None = exc.__traceback__
    found: str | None = None
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__")
        if isinstance(name, str) and not name.startswith(("importlib", "<frozen")):
            found = name
        tb = tb.tb_next
    return found


@attrs.frozen
class Failure:
    """Something that went wrong and might be healed.

    ``kind`` names failures that are not exceptions (``stale-market-data`` from the
    staleness check ...); for exceptions it defaults to the exception's class name.
    ``module`` is where the exception was raised (found from the traceback).
    ``probe`` is a cheap call that failed (or that shows health); a healing attempt only
    counts as a success when it passes afterwards.
    """

    error: BaseException | None = None
    kind: str = ""
    component: str | None = None
    plugin: str | None = None
    module: str | None = None
    context: Mapping[str, Any] = attrs.field(factory=dict)
    probe: Callable[[], Awaitable[Any]] | None = attrs.field(default=None, eq=False, repr=False)
    time: datetime = attrs.field(factory=utc_now)

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        component: str | None = None,
        plugin: str | None = None,
        probe: Callable[[], Awaitable[Any]] | None = None,
        **context: Any,
    ) -> Failure:
        """Describe an exception; the raising module and the error's own context are kept."""
        chain = [exc]
        while chain[-1].__cause__ is not None and len(chain) < 10:
            chain.append(chain[-1].__cause__)
        merged: dict[str, Any] = {}
        for source in reversed(chain):  # the outermost error's context wins
            if isinstance(source, TradebotError):
                merged.update({k: v for k, v in source.context.items() if v is not None})
        merged.update(context)
        if plugin is None and isinstance(merged.get("plugin"), str):
            plugin = merged["plugin"]
        module = next((m for m in (failing_module(e) for e in reversed(chain)) if m), None)
        return cls(
            error=exc,
            kind=type(exc).__name__,
            component=component,
            plugin=plugin,
            module=module,
            context=merged,
            probe=probe,
        )

    def caused_by(self, *types: type[BaseException]) -> bool:
        """Whether the error, or an error it was raised from, is one of ``types``."""
        seen: set[int] = set()
        err = self.error
        while err is not None and id(err) not in seen:
            if isinstance(err, types):
                return True
            seen.add(id(err))
            err = err.__cause__ or err.__context__
        return False

    def describe(self) -> str:
        """One line for logs and alerts (never contains secrets: errors are sanitised)."""
        # describe(), not str(): a plugin's exception may fail to print, and healing must not
        what = f"{type(self.error).__name__}: {describe(self.error)}" if self.error is not None else self.kind
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("component", self.component), ("plugin", self.plugin), ("module", self.module))
            if v
        )
        return f"{what} ({where})" if where else what


# --- actions -------------------------------------------------------------------------


@attrs.frozen
class RecoveryLimits:
    """Limits every recovery action's config carries (``[recovery.<name>]``).

    ``attempts`` is how often the action is tried for one failure; ``max_per_window``
    how often it may run within ``window_s`` in total, so a flapping fault cannot keep a
    heavy action (restart, reload) busy forever.
    """

    attempts: int = attrs.field(default=1, validator=[gt(0)])
    max_per_window: int = attrs.field(default=20, validator=[gt(0)])
    window_s: float = attrs.field(default=600.0, validator=[gt(0)])
    retry_wait_s: float = attrs.field(default=0.5, validator=[ge(0)])


@runtime_checkable
class RecoveryAction(Protocol):
    """One rung of the healing ladder, provided by a ``recovery`` plugin.

    ``applies_to`` must be cheap and side-effect free. ``recover`` does the work and
    returns whether it did anything useful (False or a raised exception: not healed).
    ``verify`` checks that the fault is gone (a cheap probe call, a running task ...).

    Optional, read once when the healer is built (absent: False): ``escalates``, True when
    the step heals by handing the failure on, as the built-in ``escalate`` hands it to a
    process restart: its success is not checked with the failure's probe (the fault is
    still there), and the result reads :attr:`HealResult.escalated`.
    """

    name: str
    limits: RecoveryLimits

    def applies_to(self, failure: Failure) -> bool:
        """Whether this action may help with ``failure`` (cheap, no side effects)."""
        ...

    async def recover(self, failure: Failure) -> bool:
        """Do the work; True when it did something that may have healed ``failure``."""
        ...

    async def verify(self, failure: Failure) -> bool:
        """Whether the fault is gone now (the failure's own probe is tried afterwards)."""
        ...


# --- results and counters --------------------------------------------------------------


@attrs.frozen
class AttemptRecord:
    """One try of one action for one failure."""

    action: str
    outcome: str  # healed | not-healed | error | skipped-limit
    duration_s: float
    detail: str = ""


@attrs.frozen
class HealResult:
    """What the ladder did for a failure."""

    failure: Failure
    healed: bool
    action: str | None
    attempts: tuple[AttemptRecord, ...]
    duration_s: float
    escalated: bool = False
    """Healed by a step that escalates (a process restart was asked for): the fault may remain."""


@attrs.define
class HealingCounters:
    """Counts of healing per action (read by metrics: ``healer.counters.as_dict()``).

    ``attempts``/``successes``/``failures``/``skipped`` are keyed by action name;
    ``healed``/``unhealed`` count failures the ladder did / did not heal.
    """

    attempts: dict[str, int] = attrs.Factory(dict)
    successes: dict[str, int] = attrs.Factory(dict)
    failures: dict[str, int] = attrs.Factory(dict)
    skipped: dict[str, int] = attrs.Factory(dict)
    healed: int = 0
    unhealed: int = 0
    alerts: int = 0

    def bump(self, table: dict[str, int], action: str) -> None:
        table[action] = table.get(action, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": dict(self.attempts),
            "successes": dict(self.successes),
            "failures": dict(self.failures),
            "skipped": dict(self.skipped),
            "healed": self.healed,
            "unhealed": self.unhealed,
            "alerts": self.alerts,
        }


# --- settings ------------------------------------------------------------------------------


def _ladder_names(_inst: Any, attribute: attrs.Attribute[Any], value: Sequence[str]) -> None:
    non_empty(_inst, attribute, value)
    seen: set[str] = set()
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{attribute.name} entries must be action names (got {name!r})")
        if name in seen:
            raise ValueError(f"{attribute.name} names {name!r} twice")
        seen.add(name)


@attrs.frozen
class HealingSettings:
    """``[healing]``: the escalation order and when frequent healing raises an alert."""

    enabled: bool = True
    ladder: list[str] = attrs.field(factory=lambda: list(DEFAULT_LADDER), validator=_ladder_names)
    action_timeout_s: float = attrs.field(default=60.0, validator=gt(0))
    """Longest one recover() + verify() may take."""
    alert_after: int = attrs.field(default=5, validator=gt(0))
    """Raise an alert when more than this many healings happen within ``alert_window_s``."""
    alert_window_s: float = attrs.field(default=600.0, validator=gt(0))


# --- the healer ----------------------------------------------------------------------------


class Healer:
    """Walks the ladder for a failure; one failure at a time (actions must not interleave)."""

    def __init__(
        self,
        actions: Sequence[RecoveryAction],
        *,
        settings: HealingSettings | None = None,
        clock: Clock | None = None,
        alert: AlertSink | None = None,
    ) -> None:
        self.settings = settings or HealingSettings()
        self.actions = list(actions)
        self._clock: Clock = clock or SystemClock()
        self._alert = alert
        self._lock = asyncio.Lock()
        self._uses: dict[str, collections.deque[float]] = {a.name: collections.deque() for a in self.actions}
        self._escalates: dict[str, bool] = {
            a.name: bool(getattr(a, "escalates", False)) for a in self.actions
        }
        """What each step declares, read once here."""
        self._healings: collections.deque[float] = collections.deque()
        self._alerted_until = float("-inf")
        self.counters = HealingCounters()
        self.history: collections.deque[HealResult] = collections.deque(maxlen=200)

    @classmethod
    def from_context(cls, context: BotContext, settings: HealingSettings | None = None) -> Healer:
        """Build the ladder's actions from the loaded ``recovery`` plugins, in ladder order.

        A ladder name no loaded plugin provides is a :class:`ConfigError` naming it.
        """
        settings = settings or context.settings.section("healing") or HealingSettings()
        host = context.plugins
        available = host.components("recovery")
        missing = [n for n in settings.ladder if n not in available]
        from tradebot.core.plugins import installed_plugins

        installed = installed_plugins()
        for n in [m for m in missing if m in installed]:
            log.warning("healing: ladder step %r skipped: its plugin is installed but not enabled", n)
        missing = [m for m in missing if m not in installed]
        if missing:
            import difflib

            issues = []
            for n in missing:
                near = difflib.get_close_matches(n, list(available), n=2)
                hint = (
                    f"; did you mean {', '.join(near)}?"
                    if near
                    else f"; loaded: {', '.join(sorted(available)) or 'none'}"
                )
                issues.append(f"no loaded recovery plugin provides {n!r}{hint} @ $.healing.ladder")
            raise ConfigError("the healing ladder names recovery actions that are not loaded", issues)
        actions = []
        for name in [n for n in settings.ladder if n in available]:
            comp = available[name]
            config = context.settings.plugin_config("recovery", name)
            if config is None and comp.spec.config_cls is not None:
                config = comp.spec.config_cls()
            actions.append(host.build("recovery", name, config, context))

        async def alert(a: Alert) -> None:
            await host.broadcast("tradebot_alert", alert=a)

        return cls(actions, settings=settings, clock=context.clock, alert=alert)

    # --- public ------------------------------------------------------------------------

    def applicable(self, failure: Failure) -> list[str]:
        """Names of the ladder's actions that apply to ``failure``, in order."""
        return [a.name for a in self.actions if self._applies(a, failure)]

    async def heal(self, failure: Failure) -> HealResult:
        """Try the ladder for ``failure``; stop at the first verified success."""
        async with self._lock:
            return await self._heal(failure)

    # --- internals -----------------------------------------------------------------------

    def _applies(self, action: RecoveryAction, failure: Failure) -> bool:
        try:
            return bool(action.applies_to(failure))
        except Exception as exc:  # noqa: BLE001 - a broken action is skipped, never fatal
            log.error("recovery action %s: applies_to failed: %s", action.name, exc)
            return False

    def _within_limit(self, action: RecoveryAction) -> bool:
        uses = self._uses.setdefault(action.name, collections.deque())
        now = self._clock.monotonic()
        while uses and now - uses[0] > action.limits.window_s:
            uses.popleft()
        return len(uses) < action.limits.max_per_window

    async def _heal(self, failure: Failure) -> HealResult:
        started = time.monotonic()
        records: list[AttemptRecord] = []
        if not self.settings.enabled:
            log.warning("healing is off ([healing] enabled = false); not healing: %s", failure.describe())
            return HealResult(failure, False, None, (), 0.0)
        log.warning(
            "healing: %s", failure.describe(), extra={"failure": failure.kind, "component": failure.component}
        )
        for action in self.actions:
            if not self._applies(action, failure):
                continue
            for attempt in range(1, action.limits.attempts + 1):
                if not self._within_limit(action):
                    self.counters.bump(self.counters.skipped, action.name)
                    records.append(
                        AttemptRecord(action.name, "skipped-limit", 0.0, "limit per window reached")
                    )
                    log.warning(
                        "healing: %s skipped, %d uses within %gs already",
                        action.name,
                        action.limits.max_per_window,
                        action.limits.window_s,
                    )
                    break
                record = await self._attempt(action, failure, attempt)
                records.append(record)
                if record.outcome == "healed":
                    result = HealResult(
                        failure,
                        True,
                        action.name,
                        tuple(records),
                        time.monotonic() - started,
                        escalated=self._escalates.get(action.name, False),
                    )
                    await self._finish(result)
                    return result
                if attempt < action.limits.attempts and action.limits.retry_wait_s > 0:
                    await self._clock.sleep(action.limits.retry_wait_s * 2 ** (attempt - 1))
        result = HealResult(failure, False, None, tuple(records), time.monotonic() - started)
        await self._finish(result)
        return result

    async def _attempt(self, action: RecoveryAction, failure: Failure, attempt: int) -> AttemptRecord:
        name = action.name
        self._uses.setdefault(name, collections.deque()).append(self._clock.monotonic())
        self.counters.bump(self.counters.attempts, name)
        tracer = telemetry.get_tracer()
        span_cm = (
            tracer.start_as_current_span(
                f"healing.{name}",
                attributes={
                    "tradebot.healing.action": name,
                    "tradebot.healing.attempt": attempt,
                    "tradebot.healing.failure": failure.kind,
                    "tradebot.healing.component": failure.component or "",
                    "tradebot.healing.plugin": failure.plugin or "",
                },
            )
            if tracer is not None
            else None
        )
        t0 = time.monotonic()
        outcome, detail = "not-healed", ""
        span = span_cm.__enter__() if span_cm is not None else None
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
            # arrives as the action finishes (the escalate rung asks the bot to stop, whose stop
            # cancels this very task), and the task would then run on through the stop
            async with asyncio.timeout(self.settings.action_timeout_s):
                outcome, detail = await self._run(action, failure)
        except TimeoutError:
            outcome, detail = "error", f"timed out after {self.settings.action_timeout_s:g}s"
        except asyncio.CancelledError:
            if span_cm is not None:
                span_cm.__exit__(None, None, None)
            raise
        except Exception as exc:  # noqa: BLE001 - an action failing is a rung that did not heal
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"
        duration = time.monotonic() - t0
        if span is not None:
            span.set_attribute("tradebot.healing.outcome", outcome)
            if detail:
                span.set_attribute("tradebot.healing.detail", detail[:500])
        if span_cm is not None:
            span_cm.__exit__(None, None, None)
        if outcome == "healed":
            self.counters.bump(self.counters.successes, name)
            log.warning(
                "healing: %s healed %s in %.3fs (attempt %d)",
                name,
                failure.describe(),
                duration,
                attempt,
                extra={"action": name, "outcome": outcome, "component": failure.component},
            )
        else:
            self.counters.bump(self.counters.failures, name)
            log.warning(
                "healing: %s did not heal %s (attempt %d, %.3fs): %s",
                name,
                failure.describe(),
                attempt,
                duration,
                detail or "verification failed",
                extra={"action": name, "outcome": outcome, "component": failure.component},
            )
        return AttemptRecord(name, outcome, duration, detail)

    async def _run(self, action: RecoveryAction, failure: Failure) -> tuple[str, str]:
        if not await action.recover(failure):
            return "not-healed", "the action could not run"
        if not await action.verify(failure):
            return "not-healed", "the action ran but the check afterwards failed"
        if failure.probe is not None and not self._escalates.get(action.name, False):
            try:
                result = failure.probe()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - the probe failing means not healed
                return "not-healed", f"probe still fails: {type(exc).__name__}: {exc}"
        return "healed", ""

    async def _finish(self, result: HealResult) -> None:
        self.history.append(result)
        if result.healed:
            self.counters.healed += 1
        else:
            self.counters.unhealed += 1
            log.error(
                "healing: nothing healed %s (tried: %s)",
                result.failure.describe(),
                ", ".join(r.action for r in result.attempts) or "no action applied",
            )
            await self._send(
                Alert(
                    level=AlertLevel.CRITICAL,
                    title="healing failed",
                    message=f"no recovery action healed {result.failure.describe()}",
                    source="healing",
                    key="healing:failed",
                )
            )
        now = self._clock.monotonic()
        self._healings.append(now)
        window = self.settings.alert_window_s
        while self._healings and now - self._healings[0] > window:
            self._healings.popleft()
        if len(self._healings) > self.settings.alert_after and now >= self._alerted_until:
            self._alerted_until = now + window  # one alert per window, not one per healing
            self.counters.alerts += 1
            await self._send(
                Alert(
                    level=AlertLevel.WARNING,
                    title="frequent healing",
                    message=(
                        f"{len(self._healings)} healings within {window:g}s (threshold {self.settings.alert_after});"
                        f" last: {result.failure.describe()}; counts: {self.counters.successes}"
                    ),
                    source="healing",
                    key="healing:frequent",
                )
            )

    async def _send(self, alert: Alert) -> None:
        await send_alert(self._alert, alert)


FRAMEWORK_PACKAGES = (
    "tradebot.core",
    "tradebot.api",
    "tradebot.app",
    "tradebot.services",
    "tradebot.resilience",
    "tradebot.drill",
)
"""The framework's own packages: never reloaded by recovery."""


def is_core_module(module: str | None) -> bool:
    """Whether ``module`` belongs to the framework (the core, the API, the application, the
    services, the resilience toolkit, the drill): never reloaded."""
    if module is None:
        return False
    return module in sys.builtin_module_names or any(
        module == pkg or module.startswith(pkg + ".") for pkg in FRAMEWORK_PACKAGES
    )


async def send_alert(sink: Callable[[Alert], Any] | None, alert: Alert) -> None:
    """Hand ``alert`` to ``sink`` (sync or async); a failing sink never breaks the caller."""
    if sink is None:
        return
    try:
        res = sink(alert)
        if inspect.isawaitable(res):
            await res
    except Exception:  # alerting must never break healing or supervision
        log.exception("could not send the alert %r", alert.title)
