"""Chaos drill: run the real bot against the built-in simulator while injecting faults.

Each scenario starts a simulator on 127.0.0.1, runs the real :class:`~tradebot.app.bot.Bot`
against it (live-style through the ``kraken`` exchange with the simulator's credentials,
so orders take the real Kraken REST path; or on the ``paper`` exchange where the scenario
is about market data), injects a scripted fault, clears it, and then judges what happened:

- detected: how long after the fault the bot noticed (a check not ok, a trading-state
  change, a retry, a lookup of an order whose answer was lost ...);
- healed: how long after the fault ended the bot was healthy and trading again;
- HALT (or REDUCING) when the scenario requires it, none when it forbids it;
- orders: every order the bot placed is on the exchange exactly once (read from the
  simulator's ``/_sim/state``), none lost, none duplicated (orders per ``cl_ord_id``);
- state intact: the state database passes its integrity check and positions equal the
  sum of the recorded fills.

The ``process-kill`` scenario runs ``python -m tradebot run`` as a real child process
(with a config the drill writes), kills it with SIGKILL at random moments and restarts
it; afterwards no order may be lost or placed twice.

Timings come from :class:`DrillSettings` (short thresholds, so a scenario takes seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from tradebot.core.errors import ConfigError
from tradebot.core.tasks import cancel_and_wait, within
from tradebot.core.validate import ge, gt, in_range

__all__ = [
    "SCENARIOS",
    "DrillSettings",
    "Expectation",
    "Scenario",
    "ScenarioReport",
    "load_drill_config",
    "render_reports",
    "run_drill",
    "run_scenario",
    "scenario_names",
]

log = logging.getLogger("tradebot.drill")

DRILL_HOST = "kraken-sim.drill"
"""Host name of the simulator in live-style scenarios. The drill answers it with 127.0.0.1
itself (never asking a DNS server), which is how the DNS scenario can make it fail."""

MONITORED_CHECKS = ("api-connectivity", "staleness")
DRILL_PLUGINS = (
    "kraken",
    "paper",
    "sma-crossover",
    "api-connectivity",
    "staleness",
    "reconnect",
    "dns",
    "resync",
    "restart-component",
    "reload-module",
    "escalate",
    "maintain",
    "log",
)


# --- settings ----------------------------------------------------------------------------


@attrs.frozen
class DrillSettings:
    """``[drill]`` in the file given to ``tradebot drill --config``: the drill's own timings.

    Every default keeps a scenario to a few seconds; the bot under test gets short check
    intervals and thresholds derived from these.
    """

    seed: int = 7
    """Seed of the simulator's prices and of the process-kill moments."""
    tick_interval_s: float = attrs.field(default=0.05, validator=gt(0))
    """How often the simulator's market moves (the bot trades on these ticks)."""
    warmup_s: float = attrs.field(default=1.5, validator=ge(0))
    """Trading before the fault, so there is something to lose."""
    fault_s: float = attrs.field(default=1.5, validator=gt(0))
    """How long a fault lasts."""
    outage_s: float = attrs.field(default=2.5, validator=gt(0))
    """How long an outage lasts in scenarios that must end in HALT or REDUCING (longer than
    the connectivity check needs to turn critical)."""
    settle_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    """Longest wait for healing after the fault ends (a miss fails the scenario)."""
    after_heal_s: float = attrs.field(default=1.0, validator=ge(0))
    """Trading after healing, to prove orders flow again."""
    order_interval_s: float = attrs.field(default=1.5, validator=gt(0))
    """The drill's signal source asks for one order this often (alternating buy and sell).
    Each order costs about two points of Kraken's REST counter (tracking it to its fill),
    which decays by one point a second on the tier the drill uses: faster orders would
    exhaust the limit by themselves."""
    check_interval_s: float = attrs.field(default=0.2, validator=gt(0))
    """Interval of the API-connectivity and staleness checks."""
    stale_threshold_s: float = attrs.field(default=1.0, validator=gt(0))
    """Market data older than this is stale (the staleness check's threshold)."""
    auto_resume_after_s: float = attrs.field(default=0.4, validator=ge(0))
    """A trigger that has been ok this long lets trading resume by itself."""
    request_timeout_s: float = attrs.field(default=1.0, validator=gt(0))
    """The Kraken client's request timeout."""
    kill_rounds: int = attrs.field(default=3, validator=in_range(1, 1000))
    """SIGKILLs in the process-kill scenario."""
    kill_after_min_s: float = attrs.field(default=0.3, validator=ge(0))
    kill_after_max_s: float = attrs.field(default=1.2, validator=gt(0))
    """A kill comes this long (drawn at random) after the child started trading."""
    process_start_timeout_s: float = attrs.field(default=20.0, validator=gt(0))
    """Longest wait for a child process to place its first order."""


def load_drill_config(path: str | Path | None) -> tuple[DrillSettings, dict[str, Any]]:
    """Read ``--config``: its ``[drill]`` table and the rest (a base bot config).

    The base config's tables are used for the bot under test, with the drill's own
    addresses, state directory and timings laid over them. :class:`ConfigError` names
    every problem with its path.
    """
    if path is None:
        return DrillSettings(), {}
    from tradebot.app.config import parse_toml, structure

    raw = parse_toml(Path(path))
    drill_raw = raw.pop("drill", {})
    settings, issues = structure(drill_raw, DrillSettings, "$.drill")
    if settings is not None and settings.kill_after_max_s < settings.kill_after_min_s:
        issues = [
            f"kill_after_max_s must be >= kill_after_min_s (got {settings.kill_after_max_s} < "
            f"{settings.kill_after_min_s}) @ $.drill.kill_after_max_s"
        ]
    if issues or settings is None:
        raise ConfigError(f"invalid drill configuration in {path}", issues)
    return settings, raw


# --- scenarios ------------------------------------------------------------------------------


@attrs.frozen
class Scenario:
    """One rehearsed failure: what is injected, on which exchange, and what must happen."""

    name: str
    title: str
    exchange: str
    """``kraken`` (orders over the real Kraken REST path), ``paper`` (market-data faults)
    or ``process`` (a real child process is killed)."""
    fault: str = ""
    """Simulator fault spec (see :mod:`tradebot.simulator`), or ``dns``."""
    detect: str = "health"
    """What counts as detection: ``health`` (a monitored check not ok or the trading state
    not ACTIVE), ``retries`` (the client retried or a check noticed), ``lookup`` (an order
    whose answer was lost was looked up on the exchange)."""
    expect_state: str | None = None
    """``halted`` or ``reducing``: the state the bot must enter; None: no requirement."""
    forbid_halt: bool = False
    """The bot must absorb this fault without leaving ACTIVE."""
    long: bool = False
    """Lasts ``outage_s`` rather than ``fault_s`` (faults that need orders to hit them)."""

    def duration_s(self, settings: DrillSettings) -> float:
        """How long the fault lasts: an outage when a state change is required."""
        return settings.outage_s if self.expect_state is not None or self.long else settings.fault_s

    expected: str = ""
    """What a user should see, in one line."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "dns",
        "DNS failure",
        "kraken",
        fault="dns",
        expect_state="halted",
        expected="connectivity check fails, trading HALTs, DNS healed and trading resumes by itself",
    ),
    Scenario(
        "dropped-connections",
        "dropped connections",
        "kraken",
        fault="drop,on=public|private,p=0.4; ws_disconnect=0.5",
        detect="retries",
        expected="requests retried and WebSocket reconnected; no order lost or doubled",
    ),
    Scenario(
        "5xx-storm",
        "5xx storm",
        "kraken",
        fault="http5xx=503",
        expect_state="halted",
        expected="every call fails, breakers open, trading HALTs, then recovers by itself",
    ),
    Scenario(
        "rate-limit",
        "tighter rate limits",
        "kraken",
        fault="ratelimit=2/0.2",
        detect="retries",
        long=True,
        forbid_halt=True,
        expected="rate-limit answers are retried with backoff; trading stays ACTIVE",
    ),
    Scenario(
        "lost-responses",
        "lost order responses",
        "kraken",
        fault="drop_response,on=AddOrder,n=3",
        detect="lookup",
        forbid_halt=True,
        long=True,
        expected="each order whose answer was lost is looked up, never sent twice",
    ),
    Scenario(
        "stale-feed",
        "stale feed",
        "paper",
        fault="stale",
        expect_state="halted",
        expected="prices stop, staleness check HALTs trading, resumes when prices flow",
    ),
    Scenario(
        "maintenance",
        "maintenance mode",
        "kraken",
        fault="status=maintenance",
        expect_state="reducing",
        expected="exchange in maintenance: trading REDUCING, back to ACTIVE when online",
    ),
    Scenario(
        "process-kill",
        "process kill (SIGKILL)",
        "process",
        expected="bot killed with SIGKILL and restarted; zero lost and zero duplicate orders",
    ),
    Scenario(
        "escalation",
        "state store refuses writes (escalation)",
        "escalation",
        expected="the bot escalates and exits with code 75 within its grace period; --auto-restart starts a"
        " fresh one that trades again; zero lost and zero duplicate orders",
    ),
    Scenario(
        "dead-mans-switch",
        "killed with orders open",
        "dead-mans-switch",
        expected="bot killed with orders open: Kraken's dead man's switch cancels them within its timeout",
    ),
    Scenario(
        "restart-fills-while-down",
        "restart with fills while down",
        "process",
        expected="orders fill while their answers are lost and the bot is killed; after every restart the "
        "bot's cash and positions equal the exchange's; zero lost and zero duplicate orders",
    ),
    Scenario(
        "state-loss",
        "state loss (database and backups gone)",
        "process",
        expect_state="halted",
        expected="bot killed, its state database and backups deleted: it starts HALTED with the journal "
        "rebuilt from the exchange, places nothing until resumed, then trades on with no duplicates",
    ),
)


def scenario_names() -> list[str]:
    """Names accepted by ``--scenario`` (besides ``all``)."""
    return [s.name for s in SCENARIOS]


def _scenario(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise ConfigError(f"unknown drill scenario {name!r} (known: {', '.join(scenario_names())}, all)")


# --- results --------------------------------------------------------------------------------


@attrs.frozen
class Expectation:
    """One judged expectation: what was expected, what happened, and whether that is fine."""

    name: str
    expected: str
    actual: str
    ok: bool
    explanation: str = ""


@attrs.define
class ScenarioReport:
    """Everything a scenario measured and judged."""

    scenario: Scenario
    detected_s: float | None = None
    healed_s: float | None = None
    states: list[str] = attrs.Factory(list)
    orders_expected: int = 0
    orders_on_exchange: int = 0
    duplicates: int = 0
    lost: int = 0
    state_intact: bool = False
    orders_after_heal: int = 0
    duration_s: float = 0.0
    expectations: list[Expectation] = attrs.Factory(list)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(e.ok for e in self.expectations)

    def expect(self, name: str, expected: str, actual: str, ok: bool, explanation: str = "") -> None:
        self.expectations.append(Expectation(name, expected, actual, ok, "" if ok else explanation))

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "passed": self.passed,
            "detected_s": self.detected_s,
            "healed_s": self.healed_s,
            "states": self.states,
            "orders_expected": self.orders_expected,
            "orders_on_exchange": self.orders_on_exchange,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "state_intact": self.state_intact,
            "duration_s": round(self.duration_s, 2),
            "error": self.error,
            "expectations": [attrs.asdict(e) for e in self.expectations],
        }


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def render_reports(reports: Sequence[ScenarioReport]) -> str:
    """A table (one row per scenario) and one line of explanation per failed expectation."""
    header = (
        "scenario",
        "exchange",
        "detected",
        "healed",
        "states",
        "orders bot/exch",
        "dup",
        "lost",
        "state",
        "result",
    )
    rows = [header]
    rows.extend(
        (
            r.scenario.name,
            r.scenario.exchange,
            _fmt_s(r.detected_s),
            _fmt_s(r.healed_s),
            ">".join(r.states) or "active",
            f"{r.orders_expected}/{r.orders_on_exchange}",
            str(r.duplicates),
            str(r.lost),
            "intact" if r.state_intact else "BROKEN",
            "PASS" if r.passed else "FAIL",
        )
        for r in reports
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.extend(f"{r.scenario.name}: expected {r.scenario.expected}" for r in reports)
    failures = [(r, e) for r in reports for e in r.expectations if not e.ok]
    errors = [r for r in reports if r.error]
    if failures or errors:
        lines.append("")
        lines.append("failed expectations:")
        lines.extend(f"  {r.scenario.name}: the scenario could not run: {r.error}" for r in errors)
        lines.extend(
            f"  {r.scenario.name} / {e.name}: expected {e.expected}, got {e.actual}. {e.explanation}".rstrip()
            for r, e in failures
        )
    passed = sum(r.passed for r in reports)
    lines.append("")
    lines.append(f"{passed} of {len(reports)} scenarios passed")
    return "\n".join(lines)


# --- the bot's configuration for a scenario -------------------------------------------------


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def bot_config(
    settings: DrillSettings,
    *,
    exchange: str,
    base_url: str,
    ws_url: str,
    state_dir: Path,
    secrets_file: Path | None,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The bot config of one scenario: the user's base config under the drill's overrides."""
    check = {"interval_s": settings.check_interval_s, "auto_resume_after_s": settings.auto_resume_after_s}
    over: dict[str, Any] = {
        "bot": {
            "name": "drill",
            "exchange": exchange if exchange != "paper" else "paper",
            "pairs": ["BTC/USD"],
            "state_dir": str(state_dir),
            "market_data": "kraken",
        },
        "exchanges": {
            "kraken": {
                "base_url": base_url,
                "ws_url": ws_url,
                "request_timeout_s": settings.request_timeout_s,
                "connect_timeout_s": settings.request_timeout_s,
                "min_spacing_s": 0.0,
                "rate_tier": "pro",
                "retry_attempts": 3,
                "retry_timeout_s": 2.0,
                "retry_wait_initial_s": 0.05,
                "retry_wait_max_s": 0.3,
                "breaker_open_wait_s": 0.5,
                "breaker_open_wait_max_s": 1.0,
                "order_lookup_delay_s": 0.1,
                "dns_cache_ttl_s": 0,
                # connections are not kept between calls, so every call resolves the host
                # name (the DNS scenario needs that) and dropped connections show at once
                "keepalive_timeout_s": 0.05,
                "ws_heartbeat_timeout_s": 1.0,
                "ws_reconnect_initial_s": 0.05,
                "ws_reconnect_max_s": 0.3,
                "rest_fallback_after_s": 0.5,
                "rest_fallback_poll_s": 0.2,
            }
        },
        "checks": {
            "api-connectivity": {
                **check,
                "critical_after": 3,
                "call_timeout_s": settings.request_timeout_s * 2,
                # Balance counts against Kraken's per-key REST counter; checking it every
                # round would itself exhaust the limit at drill speed
                "check_balance": False,
                "on_maintenance": "reduce",
            },
            "staleness": {
                **check,
                "threshold_s": settings.stale_threshold_s,
                "startup_grace_s": max(5.0, settings.stale_threshold_s * 2),
            },
        },
        "plugins": {"enabled": list(DRILL_PLUGINS)},
        "risk": {
            "max_orders_per_minute": 100_000,
            "max_position": "1",
            "max_notional_per_order": "100000",
            "accept_unprotected": True,  # a drill rehearses healing, not the HALT triggers
        },
        "strategies": {
            # the process-kill child trades through a registered strategy; in-process
            # scenarios add DrillSignals to the running bot instead
            "drill": {"plugin": "sma-crossover", "params": {"fast": 3, "slow": 6, "volume": "0.001"}},
        },
        "monitoring": {"round_interval_s": 0.05},
        "http": {"enabled": False},
        "supervisor": {"restart_delay_s": 0.05},
    }
    if secrets_file is not None:
        over["bot"]["secrets_file"] = str(secrets_file)
    merged = _merge(base or {}, over)
    if "strategies" not in (base or {}):
        merged["strategies"] = over["strategies"]
    return merged


def write_secrets(path: Path, api_key: str, api_secret: str) -> Path:
    """Write the simulator's generated credentials as a secrets file readable only by the owner."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f'kraken_api_key = "{api_key}"\nkraken_api_secret = "{api_secret}"\n')
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Decimal):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """Write a config dict as TOML (tables of scalars, lists and inline tables)."""
    lines: list[str] = []

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        subs = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not subs):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{json.dumps(str(k))} = {_toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in subs.items():
            table(f"{prefix}.{json.dumps(str(k))}" if prefix else json.dumps(str(k)), v)

    table("", data)
    return "\n".join(lines) + "\n"


# --- DNS fault: the drill answers its own host name ----------------------------------------


class DrillResolver:
    """Answers :data:`DRILL_HOST` with 127.0.0.1 in the running loop, or fails like a DNS outage.

    Installed over the loop's ``getaddrinfo`` (aiohttp's resolver and the ``dns`` recovery
    action both resolve through it); every other name goes to the original resolver.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.failing = False
        self.lookups = 0
        self.failures = 0
        self._original = loop.getaddrinfo

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name != DRILL_HOST:
            return await self._original(host, port, *args, **kwargs)
        self.lookups += 1
        if self.failing:
            self.failures += 1
            raise socket.gaierror(
                socket.EAI_NONAME, f"Name or service not known ({DRILL_HOST}, drill DNS outage)"
            )
        return await self._original("127.0.0.1", port, *args, **kwargs)

    def install(self) -> None:
        self.loop.getaddrinfo = self.getaddrinfo  # type: ignore[method-assign]

    def uninstall(self) -> None:
        with contextlib.suppress(AttributeError):
            del self.loop.getaddrinfo


# --- the drill's signal source --------------------------------------------------------------


class DrillSignals:
    """A deterministic strategy: one small order every ``interval_s``, buy and sell in turn.

    Not a plugin: the drill adds it to the running bot's strategy runner, so its signals go
    through the risk gate and the executor like any strategy's. Alternating sides keep the
    position near flat, so the risk limits never stop the drill.
    """

    blocking = False  # quick: runs inline on the event loop

    def __init__(
        self,
        pair: str,
        *,
        interval_s: float,
        volume: Decimal = Decimal("0.001"),
        sellable: Callable[[], Decimal] | None = None,
    ) -> None:
        self.pair = pair
        self.interval_s = interval_s
        self.volume = volume
        self.sellable = sellable
        """What the drill's orders hold and may sell (a spot account sells only that): a
        sell turn with less than ``volume`` to sell buys instead."""
        self.sent = 0
        self._last = float("-inf")

    def pause(self) -> None:
        """Ask for no more orders (the drill winds down)."""
        self.interval_s = float("inf")

    def on_event(self, event: Any) -> list[Any]:
        from tradebot.core.models import Side, Signal, Ticker

        if not isinstance(event, Ticker) or event.pair != self.pair:
            return []
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return []
        self._last = now
        side = Side.BUY if self.sent % 2 == 0 else Side.SELL
        if side is Side.SELL and self.sellable is not None and self.sellable() < self.volume:
            side = Side.BUY
        self.sent += 1
        return [Signal("drill", self.pair, side, self.volume, reason=f"drill order {self.sent}")]


# --- observing the bot ----------------------------------------------------------------------


@attrs.define
class _Sample:
    bad_checks: tuple[str, ...]
    state: str
    retries: int
    backoffs: int
    reconnects: int
    lookups: int
    non_final: int


def _sample(bot: Any) -> _Sample | None:
    ctx = bot.context
    if ctx is None or ctx.health is None or ctx.executor is None:
        return None
    report = ctx.health.report()
    bad = tuple(
        sorted(n for n, r in report.results.items() if n in MONITORED_CHECKS and r.status.value != "ok")
    )
    missing = tuple(n for n in MONITORED_CHECKS if n not in report.results)
    exchange = ctx.exchange
    source = ctx.extras.get("market_data_source") or exchange
    kraken = exchange if hasattr(exchange, "retry_stats") else source
    retries = kraken.retry_stats.total_retries if hasattr(kraken, "retry_stats") else 0
    stats = getattr(source, "market_data_stats", None)
    counter = getattr(getattr(kraken, "rate_limiter", None), "counter", None)
    return _Sample(
        bad_checks=bad + missing,
        state=ctx.trading.state.value,
        retries=retries,
        backoffs=int(getattr(counter, "waits", 0)),
        reconnects=stats.reconnects if stats is not None else 0,
        lookups=int(getattr(exchange, "orders_resolved_by_lookup", 0))
        + ctx.store.get_counter("executor.outcome_unknown"),
        non_final=len(ctx.store.non_final_orders()),
    )


async def _wait_for(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.02) -> float | None:
    """Seconds until ``predicate()`` held (polled), or None on timeout."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start >= timeout_s:
            return None
        await asyncio.sleep(every_s)


class _Watcher:
    """Samples the running bot every few milliseconds; remembers the trading states seen."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.latest: _Sample | None = None
        self.states: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            sample = _sample(self.bot)
            if sample is not None:
                self.latest = sample
                if sample.state != "active" and (not self.states or self.states[-1] != sample.state):
                    self.states.append(sample.state)
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self.latest = _sample(self.bot)
        self._task = asyncio.create_task(self._run(), name="drill-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


# --- judging orders and state ------------------------------------------------------------------


def _orders_verdict(
    report: ScenarioReport, journal: Sequence[Any], exchange_counts: Mapping[str, int]
) -> tuple[set[str], set[str]]:
    """Fill the order figures; returns (journal ids the bot holds placed, ids on the exchange)."""
    placed = {e.client_order_id for e in journal if e.status.value != "rejected"}
    on_exchange = {cid for cid, n in exchange_counts.items() if n > 0}
    report.orders_expected = len(placed)
    report.orders_on_exchange = len(on_exchange)
    report.duplicates = sum(max(0, n - 1) for n in exchange_counts.values())
    report.lost = len(placed - on_exchange) + len(on_exchange - placed)
    return placed, on_exchange


async def check_state(state_dir: Path, exchange: Any = None) -> tuple[bool, str]:
    """Open the state database as the next start would, reconcile it, and check it.

    Sound means: the integrity check passes without restoring a backup; after the
    reconciliation a restart performs (against ``exchange``, when given), no order is left
    unresolved; and each pair's position equals the signed sum of its recorded fills.
    """
    from tradebot.core.executor import OrderExecutor
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.store import StateStore

    store = StateStore(state_dir)
    try:
        if store.restored is not None:
            return False, f"database had to be restored: {store.restored.message}"
        if exchange is not None and store.non_final_orders():
            executor = OrderExecutor(exchange, store, Portfolio(store), not_found_grace_s=0.0)
            await executor.reconcile()
        unresolved = store.non_final_orders()
        if unresolved:
            return False, f"{len(unresolved)} order(s) left unresolved in the journal"
        sums: dict[str, Decimal] = {}
        for fill in store.fills():
            signed = fill.volume if fill.side.value == "buy" else -fill.volume
            sums[fill.pair] = sums.get(fill.pair, Decimal(0)) + signed
        positions = store.positions()
        for pair in set(sums) | set(positions):
            held = positions[pair].volume if pair in positions else Decimal(0)
            if held != sums.get(pair, Decimal(0)):
                return False, f"{pair}: position {held} but fills add up to {sums.get(pair, Decimal(0))}"
        return True, f"{len(store.fills())} fills, positions equal fills"
    finally:
        store.close()


async def _verify_with_exchange(state_dir: Path, sim: Any, *, live: bool) -> tuple[bool, str]:
    """:func:`check_state` with the exchange a restarted bot would reconcile against."""
    if live:
        from tradebot.exchanges.kraken.config import KrakenConfig
        from tradebot.exchanges.kraken.exchange import KrakenExchange

        exchange: Any = KrakenExchange(
            KrakenConfig(base_url=sim.base_url, ws_url=sim.ws_url, min_spacing_s=0.0, rate_tier="pro"),
            api_key=sim.api_key,
            api_secret=sim.api_secret,
            state_dir=state_dir,
        )
    else:
        from tradebot.exchanges.paper import PaperConfig, PaperExchange

        exchange = PaperExchange(PaperConfig(), state_path=state_dir / PaperConfig().state_file)
    await exchange.start()
    try:
        return await check_state(state_dir, exchange)
    finally:
        await exchange.close()


def _judge_common(report: ScenarioReport, state_ok: bool, state_msg: str, orders_after: int) -> None:
    report.state_intact = state_ok
    report.expect(
        "duplicates",
        "0",
        str(report.duplicates),
        report.duplicates == 0,
        "an order was created more than once on the exchange for one client order id",
    )
    report.expect(
        "lost orders",
        "0",
        str(report.lost),
        report.lost == 0,
        "the bot's order journal and the exchange disagree about which orders exist",
    )
    report.expect(
        "orders bot vs exchange",
        str(report.orders_expected),
        str(report.orders_on_exchange),
        report.orders_expected == report.orders_on_exchange,
        "the number of orders the bot placed differs from what the exchange holds",
    )
    report.expect(
        "state intact",
        "sound database, positions = fills",
        state_msg,
        state_ok,
        "state database check failed",
    )
    report.expect(
        "trading after healing",
        "> 0 orders",
        str(orders_after),
        orders_after > 0,
        "the bot placed no order once the fault was gone: it did not get back to trading",
    )


# --- one in-process scenario -------------------------------------------------------------------


async def _inject(sim: Any, resolver: DrillResolver, scenario: Scenario) -> list[int]:
    if scenario.fault == "dns":
        resolver.failing = True
        return []
    ids: list[int] = sim.faults.add(scenario.fault)
    await sim.sync_faults()
    return ids


async def _clear(sim: Any, resolver: DrillResolver, scenario: Scenario, ids: list[int]) -> None:
    resolver.failing = False
    for rule_id in ids:
        sim.faults.remove(rule_id)
    await sim.sync_faults()


def _detected(scenario: Scenario, before: _Sample, now: _Sample) -> bool:
    noticed = bool(now.bad_checks) or now.state != "active"
    if scenario.detect == "retries":
        return (
            noticed
            or now.retries > before.retries
            or now.backoffs > before.backoffs
            or now.reconnects > before.reconnects
        )
    if scenario.detect == "lookup":
        return now.lookups > before.lookups
    return noticed


async def _run_inprocess(
    scenario: Scenario, settings: DrillSettings, base: Mapping[str, Any], workdir: Path
) -> ScenarioReport:
    from tradebot.app.bootstrap import prepare
    from tradebot.app.bot import Bot, RunOptions
    from tradebot.app.config import settings_from_dict
    from tradebot.simulator import run_simulator

    report = ScenarioReport(scenario)
    loop = asyncio.get_running_loop()
    resolver = DrillResolver(loop)
    resolver.install()
    try:
        async with run_simulator(
            seed=settings.seed, tick_interval_s=settings.tick_interval_s, heartbeat_s=0.2, rate_tier="pro"
        ) as sim:
            state_dir = workdir / scenario.name
            state_dir.mkdir(parents=True, exist_ok=True)
            live = scenario.exchange == "kraken"
            secrets = (
                write_secrets(workdir / f"{scenario.name}.secrets.toml", sim.api_key, sim.api_secret)
                if live
                else None
            )
            raw = bot_config(
                settings,
                exchange=scenario.exchange,
                base_url=f"http://{DRILL_HOST}:{sim.port}",
                ws_url=sim.ws_url,
                state_dir=state_dir,
                secrets_file=secrets,
                base=base,
            )
            raw["strategies"] = {}
            prepared = prepare(settings=settings_from_dict(raw), signals_from_code=True)
            bot = Bot(prepared, RunOptions())
            run_task = asyncio.create_task(bot.run(), name=f"drill-bot-{scenario.name}")
            watcher = _Watcher(bot)
            try:
                await _drive(scenario, settings, report, bot, sim, resolver, watcher, run_task)
            finally:
                await watcher.stop()
                bot.request_stop("drill scenario finished")
                summary = await within(run_task, timeout=30)
                if summary.exit_code not in (0,) and not report.error:
                    report.error = (
                        f"the bot stopped with exit code {summary.exit_code}: {summary.stop_reason}"
                    )
            report.states = watcher.states
            from tradebot.core.store import StateStore

            ok, msg = await _verify_with_exchange(state_dir, sim, live=live)
            store = StateStore(state_dir)
            journal = store.orders()
            store.close()
            if live:
                counts = {str(k): int(v) for k, v in sim.state()["orders_created"].items()}
            else:
                counts = _paper_counts(state_dir)
            _orders_verdict(report, journal, counts)
            _judge_common(report, ok, msg, report.orders_after_heal)
    finally:
        resolver.uninstall()
    return report


def _paper_counts(state_dir: Path) -> dict[str, int]:
    path = state_dir / "paper-exchange.json"
    if not path.exists():
        return {}
    counts: dict[str, int] = {}
    for order in json.loads(path.read_text(encoding="utf-8"))["orders"]:
        cid = str(order["client_order_id"])
        counts[cid] = counts.get(cid, 0) + 1
    return counts


def _placed(bot: Any) -> int:
    ctx = bot.context
    if ctx is None or ctx.store is None:
        return 0
    return sum(1 for e in ctx.store.orders() if e.status.value != "rejected")


async def _drive(
    scenario: Scenario,
    settings: DrillSettings,
    report: ScenarioReport,
    bot: Any,
    sim: Any,
    resolver: DrillResolver,
    watcher: _Watcher,
    run_task: asyncio.Task[Any],
) -> None:
    """Warm up, inject, clear, wait for healing, trade on; fill ``report``."""

    def runner_up() -> bool:
        return run_task.done() or (bot.context is not None and "strategy_runner" in bot.context.extras)

    await _wait_for(runner_up, 20.0)
    pair = bot.settings.bot.pairs[0]

    def sellable() -> Decimal:  # the drill's own filled position, less its working sells
        ctx = bot.context
        if ctx is None or ctx.portfolio is None or ctx.executor is None:
            return Decimal(0)
        selling = sum(
            (e.remaining for e in ctx.executor.working_orders(pair) if e.side.value == "sell"), Decimal(0)
        )
        return Decimal(ctx.portfolio.strategy_position("drill", pair).volume) - selling

    signals = DrillSignals(pair, interval_s=settings.order_interval_s, sellable=sellable)
    if bot.context is not None and "strategy_runner" in bot.context.extras:
        bot.context.extras["strategy_runner"].add("drill", signals, plugin="drill")

    def ready() -> bool:
        if run_task.done():
            return True
        s = _sample(bot)
        return s is not None and not s.bad_checks and s.state == "active" and _placed(bot) >= 1

    if await _wait_for(ready, 20.0) is None or run_task.done():
        report.error = "the bot did not start trading within 20s"
        if run_task.done() and run_task.exception() is None:
            report.error += f" ({run_task.result().stop_reason})"
        return
    watcher.start()
    await asyncio.sleep(settings.warmup_s)
    before = _sample(bot)
    assert before is not None
    started = time.monotonic()
    ids = await _inject(sim, resolver, scenario)
    detected_at: float | None = None
    fault_s = scenario.duration_s(settings)
    while time.monotonic() - started < fault_s:
        now = watcher.latest
        if detected_at is None and now is not None and _detected(scenario, before, now):
            detected_at = time.monotonic() - started
        await asyncio.sleep(0.01)
    await _clear(sim, resolver, scenario, ids)
    cleared = time.monotonic()
    if detected_at is None:
        late = await _wait_for(
            lambda: watcher.latest is not None and _detected(scenario, before, watcher.latest), 2.0
        )
        if late is not None:
            detected_at = cleared - started + late
    report.detected_s = detected_at

    assert bot.context is not None
    store = bot.context.store
    pending_at_clear = {e.client_order_id for e in store.non_final_orders()}

    def healthy() -> bool:
        # healthy checks, ACTIVE trading, and every order left in doubt by the fault resolved
        s = watcher.latest
        if s is None or s.bad_checks or s.state != "active":
            return False
        return not pending_at_clear & {e.client_order_id for e in store.non_final_orders()}

    await asyncio.sleep(0.05)
    healed = await _wait_for(healthy, settings.settle_timeout_s)
    report.healed_s = None if healed is None else healed + 0.05
    placed_at_heal = _placed(bot)
    await asyncio.sleep(settings.after_heal_s)
    await _wait_for(lambda: _placed(bot) > placed_at_heal, settings.settle_timeout_s / 2)
    report.orders_after_heal = _placed(bot) - placed_at_heal
    # wind down: no new orders, and every order placed so far resolved before the bot stops
    signals.pause()
    await asyncio.sleep(0.1)
    await _wait_for(
        lambda: bot.context is not None and not bot.context.store.non_final_orders(),
        settings.settle_timeout_s,
    )

    report.expect(
        "detected",
        f"within {fault_s:g}s + 2s",
        _fmt_s(report.detected_s),
        report.detected_s is not None,
        "the bot never noticed the fault (no check, state change, retry or lookup showed it)",
    )
    report.expect(
        "healed",
        f"within {settings.settle_timeout_s:g}s",
        _fmt_s(report.healed_s),
        report.healed_s is not None,
        "the bot did not get back to healthy, ACTIVE trading with every order resolved",
    )
    seen = watcher.states
    if scenario.expect_state is not None:
        report.expect(
            "trading state",
            scenario.expect_state.upper(),
            ">".join(seen) or "ACTIVE throughout",
            scenario.expect_state in seen,
            f"the fault should have moved trading to {scenario.expect_state.upper()}",
        )
    if scenario.forbid_halt:
        report.expect(
            "trading state",
            "ACTIVE throughout",
            ">".join(seen) or "ACTIVE throughout",
            not seen,
            "the resilience layer should absorb this fault without stopping trading",
        )


# --- the process-kill scenario ---------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRADEBOT_PLUGINS", "TRADEBOT_CONFIG", "TRADEBOT_SECRETS_FILE")
    }
    env.pop("TRADEBOT_KRAKEN_API_KEY", None)
    env.pop("TRADEBOT_KRAKEN_API_SECRET", None)
    return env


async def _spawn_bot(config: Path, log_path: Path, *extra: str) -> asyncio.subprocess.Process:
    log_file = open(log_path, "ab")  # noqa: SIM115, ASYNC230 - handed to the child, closed right after; a local append-open
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tradebot",
            "run",
            "--config",
            str(config),
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=_child_env(),
        )
    finally:
        log_file.close()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
    await proc.wait()


def _process_bot_files(
    scenario: Scenario,
    settings: DrillSettings,
    base: Mapping[str, Any],
    workdir: Path,
    sim: Any,
    over: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any], Path, Path]:
    """A scenario's bot process against ``sim``: its state folder, config (``over`` merged on
    top), secrets file and log path, in ``workdir``. Returns (state_dir, raw config, config
    file, log path)."""
    state_dir = workdir / scenario.name
    state_dir.mkdir(parents=True, exist_ok=True)
    secrets = write_secrets(workdir / f"{scenario.name}.secrets.toml", sim.api_key, sim.api_secret)
    raw = bot_config(
        settings,
        exchange="kraken",
        base_url=sim.base_url,
        ws_url=sim.ws_url,
        state_dir=state_dir,
        secrets_file=secrets,
        base=base,
    )
    if over:
        raw = _merge(raw, over)
    config = workdir / f"{scenario.name}.toml"
    config.write_text(to_toml(raw), encoding="utf-8")
    return state_dir, raw, config, workdir / f"{scenario.name}.log"


async def _run_process_kill(
    scenario: Scenario, settings: DrillSettings, base: Mapping[str, Any], workdir: Path
) -> ScenarioReport:
    from tradebot.core.store import StateStore
    from tradebot.simulator import run_simulator

    report = ScenarioReport(scenario)
    rng = random.Random(settings.seed)
    async with run_simulator(
        seed=settings.seed, tick_interval_s=settings.tick_interval_s, heartbeat_s=0.2, rate_tier="pro"
    ) as sim:
        state_dir, _, config, log_path = _process_bot_files(scenario, settings, base, workdir, sim)

        def created() -> int:
            return sum(sim.account.orders_created.values())

        restart_times: list[float] = []
        traded_rounds = 0
        for round_no in range(settings.kill_rounds):
            before = created()
            spawned = time.monotonic()
            proc = await _spawn_bot(config, log_path)
            try:
                waited = await _wait_for(
                    lambda: created() > before or proc.returncode is not None,
                    settings.process_start_timeout_s,
                    0.02,
                )
                if waited is None or proc.returncode is not None:
                    report.error = (
                        f"round {round_no + 1}: the bot process placed no order within "
                        f"{settings.process_start_timeout_s:g}s (exit code {proc.returncode}; log {log_path})"
                    )
                    break
                restart_times.append(time.monotonic() - spawned)
                traded_rounds += 1
                await asyncio.sleep(rng.uniform(settings.kill_after_min_s, settings.kill_after_max_s))
            finally:
                await _kill(proc)
        if not report.error:
            # a last, clean run: reconciles what the kills left behind, trades, exits by itself
            before = created()
            final = await _spawn_bot(config, log_path, "--duration", "3")
            try:
                code = await within(final.wait(), timeout=settings.process_start_timeout_s + 10)
            except TimeoutError:
                await _kill(final)
                code = -1
            report.expect(
                "clean restart",
                "exit code 0",
                f"exit code {code}",
                code == 0,
                f"the bot did not start and stop cleanly after the kills (see {log_path})",
            )
            report.orders_after_heal = created() - before
        report.healed_s = max(restart_times) if restart_times else None
        report.expect(
            "restarts trading",
            f"{settings.kill_rounds} of {settings.kill_rounds}",
            f"{traded_rounds} of {settings.kill_rounds}",
            traded_rounds == settings.kill_rounds,
            "a restarted bot did not get back to placing orders",
        )
        ok, msg = await _verify_with_exchange(state_dir, sim, live=True)
        store = StateStore(state_dir)
        journal = store.orders()
        store.close()
        counts = {str(k): int(v) for k, v in sim.state()["orders_created"].items()}
        _orders_verdict(report, journal, counts)
        _judge_common(report, ok, msg, report.orders_after_heal)
    return report


# --- the escalation scenario -----------------------------------------------------------------


async def _run_escalation(
    scenario: Scenario, settings: DrillSettings, base: Mapping[str, Any], workdir: Path
) -> ScenarioReport:
    """``tradebot run --auto-restart`` whose state store starts refusing writes (another
    process holds its write lock): the bot must escalate, exit with code 75 within its grace
    period, and a fresh child must trade again once the store takes writes."""
    import sqlite3

    from tradebot.app.bot import STOP_BOUND_S
    from tradebot.core.store import StateStore
    from tradebot.simulator import run_simulator

    report = ScenarioReport(scenario)
    grace_s = 3.0
    async with run_simulator(
        seed=settings.seed, tick_interval_s=settings.tick_interval_s, heartbeat_s=0.2, rate_tier="pro"
    ) as sim:
        state_dir, _, config, log_path = _process_bot_files(
            scenario,
            settings,
            base,
            workdir,
            sim,
            {
                "supervisor": {"stop_grace_s": grace_s},
                "healing": {"ladder": ["escalate"]},  # a failing write is not healed in-process
            },
        )
        log_path.write_bytes(b"")

        def created() -> int:
            return sum(sim.account.orders_created.values())

        def logged(text: str) -> bool:
            return text.encode() in log_path.read_bytes()

        parent = await _spawn_bot(config, log_path, "--auto-restart", "--restart-delay", "0.2")
        lock: sqlite3.Connection | None = None
        try:
            if (
                await _wait_for(
                    lambda: created() > 0 or parent.returncode is not None, settings.process_start_timeout_s
                )
                is None
                or parent.returncode is not None
            ):
                report.error = (
                    f"the bot placed no order within {settings.process_start_timeout_s:g}s (log {log_path})"
                )
                return report
            lock = sqlite3.connect(state_dir / "tradebot.db", isolation_level=None, timeout=30)
            lock.execute("BEGIN IMMEDIATE")  # from now on every write of the bot waits, then fails
            locked = time.monotonic()
            report.detected_s = await _wait_for(lambda: logged("escalating (exit code"), 120.0, 0.1)
            # from the bot's "escalating" to its parent seeing it exit with code 75
            exit_s = await _wait_for(lambda: logged("exit code 75: healing escalated"), grace_s + 10, 0.05)
            escalated = exit_s
            report.expect(
                "escalated",
                "exit code 75",
                "exit code 75" if escalated is not None else "none",
                escalated is not None,
                "the bot did not escalate and exit with code 75 (see the log)",
            )
            bound = grace_s + STOP_BOUND_S + 0.5  # and the parent's poll
            report.expect(
                "exit after escalating",
                f"within {bound:g}s",
                _fmt_s(exit_s),
                exit_s is not None and exit_s <= bound,
                "the escalated bot did not exit within its grace period",
            )
            lock.execute("ROLLBACK")  # the store takes writes again
            lock.close()
            lock = None
            at_restart = created()
            traded = await _wait_for(
                lambda: created() > at_restart, settings.process_start_timeout_s + 10, 0.05
            )
            report.healed_s = None if traded is None else time.monotonic() - locked
            report.orders_after_heal = created() - at_restart
            report.expect(
                "fresh child trades",
                "> 0 orders",
                str(created() - at_restart),
                traded is not None,
                "no order after the restart: the fresh child did not get back to trading",
            )
        finally:
            if lock is not None:
                lock.close()
            if parent.returncode is None:
                parent.send_signal(signal.SIGTERM)
            try:
                await within(parent.wait(), timeout=grace_s + 35)
            except TimeoutError:
                await _kill(parent)
        # a last, clean run: reconciles what the stops left unfinished, exits by itself
        final = await _spawn_bot(config, log_path, "--duration", "2")
        try:
            code = await within(final.wait(), timeout=settings.process_start_timeout_s + 30)
        except TimeoutError:
            await _kill(final)
            code = -1
        report.expect("clean restart", "exit code 0", f"exit code {code}", code == 0, f"see {log_path}")
        ok, msg = await _verify_with_exchange(state_dir, sim, live=True)
        store = StateStore(state_dir)
        journal = store.orders()
        store.close()
        counts = {str(k): int(v) for k, v in sim.state()["orders_created"].items()}
        _orders_verdict(report, journal, counts)
        _judge_common(report, ok, msg, report.orders_after_heal)
    return report


# --- the dead-man's-switch scenario ---------------------------------------------------------

DEAD_MANS_SWITCH_S = 3
"""The switch's timeout in the drill (the bot refreshes it every sixth of that)."""


async def _run_dead_mans_switch(
    scenario: Scenario, settings: DrillSettings, base: Mapping[str, Any], workdir: Path
) -> ScenarioReport:
    """A real ``tradebot run`` child trades on the simulator with the switch armed; orders rest
    on its account; it is killed with SIGKILL. While it lived, the orders outlived the timeout
    (it kept refreshing); after the kill, the exchange cancels them within the timeout. A last
    clean run then trades, exits, and leaves the switch disarmed."""
    from tradebot.core.store import StateStore
    from tradebot.simulator import run_simulator
    from tradebot.simulator._account import parse_order_params

    report = ScenarioReport(scenario)
    timeout = DEAD_MANS_SWITCH_S
    async with run_simulator(
        seed=settings.seed, tick_interval_s=settings.tick_interval_s, heartbeat_s=0.2, rate_tier="pro"
    ) as sim:
        state_dir, _, config, log_path = _process_bot_files(
            scenario,
            settings,
            base,
            workdir,
            sim,
            {
                "exchanges": {
                    "kraken": {"dead_mans_switch_s": timeout, "dead_mans_switch_refresh_s": timeout / 6}
                }
            },
        )

        def created() -> int:
            return sum(sim.account.orders_created.values())

        def resting() -> list[Any]:
            return [o for o in sim.account.open_orders() if o.userref == 4242]

        proc = await _spawn_bot(config, log_path)
        try:
            armed = await _wait_for(
                lambda: sim.dead_mans_switch is not None or proc.returncode is not None,
                settings.process_start_timeout_s,
            )
            if armed is None or proc.returncode is not None:
                report.error = (
                    f"the bot armed no dead man's switch within {settings.process_start_timeout_s:g}s"
                    f" (exit code {proc.returncode}; log {log_path})"
                )
                return report
            # orders resting on the bot's account, far from the market (as a limit strategy leaves)
            bid = sim.market["XXBTZUSD"].bid
            for step in range(3):
                params = parse_order_params(
                    {
                        "pair": "XBTUSD",
                        "type": "buy",
                        "ordertype": "limit",
                        "volume": "0.001",
                        "price": str((bid * Decimal("0.9")).quantize(Decimal(1)) - step),
                        "userref": "4242",
                    },
                    sim.catalog,
                )
                sim.place_order(params)
            await asyncio.sleep(timeout + 1.0)
            alive_ok = len(resting()) == 3 and proc.returncode is None
            report.expect(
                "orders kept while the bot lives",
                f"3 open after {timeout + 1:g}s",
                f"{len(resting())} open",
                alive_ok,
                "the switch fired while the bot was running: it was not refreshed in time",
            )
        finally:
            await _kill(proc)
        killed_at = time.monotonic()
        cancelled = await _wait_for(lambda: not resting(), timeout + 3.0)
        report.detected_s = report.healed_s = cancelled
        report.expect(
            "cancelled by the exchange",
            f"within {timeout}s of the kill",
            "never" if cancelled is None else f"after {cancelled:.2f}s",
            cancelled is not None and cancelled <= timeout + 0.5,
            "the orders stayed open after the bot died: the dead man's switch did not fire",
        )
        # a clean run: reconciles, trades, exits by itself, and disarms the switch on the way out
        before = created()
        final = await _spawn_bot(config, log_path, "--duration", "3")
        try:
            code = await within(final.wait(), timeout=settings.process_start_timeout_s + 10)
        except TimeoutError:
            await _kill(final)
            code = -1
        report.orders_after_heal = created() - before
        report.expect(
            "clean exit disarms",
            "exit code 0, switch off",
            f"exit code {code}, switch {'off' if sim.dead_mans_switch is None else 'armed'}",
            code == 0 and sim.dead_mans_switch is None,
            f"a clean shutdown must disarm the switch, or orders left by policy get cancelled (see {log_path})",
        )
        log.info(
            "dead-man's-switch drill: killed at %.2f, orders cancelled %.2fs later",
            killed_at,
            cancelled or -1,
        )
        ok, msg = await _verify_with_exchange(state_dir, sim, live=True)
        store = StateStore(state_dir)
        journal = store.orders()
        store.close()
        counts = {str(k): int(v) for k, v in sim.state()["orders_created"].items()}
        _orders_verdict(report, journal, counts)
        _judge_common(report, ok, msg, report.orders_after_heal)
    return report


# --- the restart-with-fills-while-down scenario ----------------------------------------------

FILLS_WHILE_DOWN_FAULT = "drop_response,on=AddOrder; http5xx=503,on=OpenOrders|ClosedOrders|QueryOrders"
"""Orders are placed and filled but their answers are lost, and every lookup fails: the bot
cannot record the fills before it is killed."""


def _money_verdict(
    record: Mapping[str, Any] | None, initial: Mapping[str, Decimal], quote: str, pair: str
) -> str:
    """'' when the bot's cash and position equal the exchange's balances (the bot's share:
    the account's start-up holdings of the base asset are not the bot's), else what differs."""
    if record is None:
        return "no start-up balance check was recorded"
    base = pair.partition("/")[0]
    cash = Decimal(record["cash"])
    exchange_cash = Decimal(record["exchange"].get(quote, "0"))
    position = Decimal(record["positions"].get(pair, "0"))
    exchange_base = Decimal(record["exchange"].get(base, "0")) - initial.get(base, Decimal(0))
    problems = []
    if abs(cash - exchange_cash) > Decimal("0.05"):  # the exchange rounds each fill's cost and fee to cents
        problems.append(f"cash {cash} vs exchange {exchange_cash}")
    if position != exchange_base:
        problems.append(f"{pair} position {position} vs exchange {exchange_base} (the bot's share)")
    if not record.get("ok", False):
        problems.append("start-up check: " + "; ".join(record.get("problems", [])))
    return ", ".join(problems)


def _unrecorded_fills(state_dir: Path, sim: Any) -> int:
    """Orders the simulator filled further than the bot's journal records (after a kill)."""
    from tradebot.core.store import StateStore

    state = sim.state()
    executed = {
        str(o["cl_ord_id"]): Decimal(o["vol_exec"])
        for o in (*state["open_orders"], *state["closed_orders"])
        if o.get("cl_ord_id")
    }
    store = StateStore(state_dir)
    try:
        return sum(1 for e in store.orders() if executed.get(e.client_order_id, Decimal(0)) > e.filled_volume)
    finally:
        store.close()


def _balance_record(state_dir: Path, since: float) -> dict[str, Any] | None:
    """The start-up balance check a bot started after ``since`` (wall clock) recorded."""
    from datetime import UTC, datetime

    from tradebot.app.bot import BALANCE_CHECK_KEY
    from tradebot.core.store import StateStore

    store = StateStore(state_dir)
    try:
        raw = store.get_kv(BALANCE_CHECK_KEY)
        at = store.kv_updated_at(BALANCE_CHECK_KEY)
    finally:
        store.close()
    if raw is None or at is None or at < datetime.fromtimestamp(since, UTC):
        return None
    record: dict[str, Any] = json.loads(raw)
    return record


async def _run_restart_fills_while_down(
    scenario: Scenario, settings: DrillSettings, base: Mapping[str, Any], workdir: Path
) -> ScenarioReport:
    """Kill the bot while orders it placed have filled but are not recorded; restart; compare."""
    from tradebot.core.store import StateStore
    from tradebot.simulator import run_simulator

    report = ScenarioReport(scenario)
    async with run_simulator(
        seed=settings.seed, tick_interval_s=settings.tick_interval_s, heartbeat_s=0.2, rate_tier="pro"
    ) as sim:
        state_dir, raw, config, log_path = _process_bot_files(scenario, settings, base, workdir, sim)
        pair, quote = raw["bot"]["pairs"][0], str(raw["bot"].get("quote", "USD"))
        initial = dict(sim.account.balances)  # the account's own holdings before the bot traded

        def created() -> int:
            return sum(sim.account.orders_created.values())

        mismatches: list[str] = []
        unrecorded = 0
        restarts_checked = 0
        for round_no in range(settings.kill_rounds):
            before = created()
            spawned_wall = time.time()
            proc = await _spawn_bot(config, log_path)
            try:
                waited = await _wait_for(
                    lambda: created() > before or proc.returncode is not None,
                    settings.process_start_timeout_s,
                    0.02,
                )
                if waited is None or proc.returncode is not None:
                    report.error = (
                        f"round {round_no + 1}: the bot process placed no order within "
                        f"{settings.process_start_timeout_s:g}s (exit code {proc.returncode}; log {log_path})"
                    )
                    break
                at_fault = created()
                ids = sim.faults.add(FILLS_WHILE_DOWN_FAULT)
                await sim.sync_faults()
                try:
                    # an order placed now is filled but its answer is lost; one in flight when the
                    # fault began cannot be looked up: either way the fill is not recorded
                    await _wait_for(
                        lambda: created() > at_fault or proc.returncode is not None, settings.outage_s, 0.02
                    )
                    await asyncio.sleep(0.2)
                finally:
                    await _kill(proc)
                    for rule_id in ids:
                        sim.faults.remove(rule_id)
                    await sim.sync_faults()
            finally:
                await _kill(proc)
            unrecorded += _unrecorded_fills(state_dir, sim)
            record = _balance_record(state_dir, spawned_wall)
            problem = _money_verdict(record, initial, quote, pair)
            restarts_checked += 1
            if problem:
                mismatches.append(f"start {round_no + 1}: {problem}")
        final_record: dict[str, Any] | None = None
        if not report.error:
            # a last, clean run: reconciles what the kills left behind, trades, exits by itself
            before = created()
            spawned_wall = time.time()
            final = await _spawn_bot(config, log_path, "--duration", "3")
            try:
                code = await within(final.wait(), timeout=settings.process_start_timeout_s + 10)
            except TimeoutError:
                await _kill(final)
                code = -1
            report.expect(
                "clean restart",
                "exit code 0",
                f"exit code {code}",
                code == 0,
                f"the bot did not start and stop cleanly after the kills (see {log_path})",
            )
            report.orders_after_heal = created() - before
            final_record = _balance_record(state_dir, spawned_wall)
            problem = _money_verdict(final_record, initial, quote, pair)
            restarts_checked += 1
            if problem:
                mismatches.append(f"final start: {problem}")
        report.expect(
            "fills while down",
            ">= 1 fill unrecorded when killed",
            str(unrecorded),
            unrecorded >= 1,
            "no order was placed while its answer was lost, so nothing was left to reconcile",
        )
        report.expect(
            "money after every restart",
            f"cash and positions = exchange at {restarts_checked} starts",
            "; ".join(mismatches) or f"equal at {restarts_checked} starts",
            not mismatches and restarts_checked > 0,
            "after a restart the bot's cash or positions differ from the exchange's balances",
        )
        ok, msg = await _verify_with_exchange(state_dir, sim, live=True)
        if ok:
            # and once everything is settled: the bot's records against the exchange right now
            from tradebot.core.portfolio import Portfolio

            store = StateStore(state_dir)
            try:
                pf = Portfolio(store, quote=quote)
                balances = sim.account.balances
                base_code = pair.partition("/")[0]
                now_record = {
                    "ok": True,
                    "cash": str(pf.cash),
                    "positions": {p: str(v.volume) for p, v in pf.positions().items()},
                    "exchange": {quote: str(balances[quote]), base_code: str(balances[base_code])},
                }
            finally:
                store.close()
            problem = _money_verdict(now_record, initial, quote, pair)
            if problem:
                ok, msg = False, f"after the last run: {problem}"
        store = StateStore(state_dir)
        journal = store.orders()
        store.close()
        counts = {str(k): int(v) for k, v in sim.state()["orders_created"].items()}
        _orders_verdict(report, journal, counts)
        _judge_common(report, ok, msg, report.orders_after_heal)
    return report


async def _run_state_loss(
    scenario: Scenario, settings: DrillSettings, base: Mapping[str, Any], workdir: Path
) -> ScenarioReport:
    """Trade, SIGKILL, delete the state database and its backups, restart: HALTED and rebuilt?
    Then resume and trade on."""
    from tradebot.core.store import StateStore
    from tradebot.services.control import send_command
    from tradebot.simulator import run_simulator

    report = ScenarioReport(scenario)
    async with run_simulator(
        seed=settings.seed, tick_interval_s=settings.tick_interval_s, heartbeat_s=0.2, rate_tier="pro"
    ) as sim:
        state_dir, _, config, log_path = _process_bot_files(scenario, settings, base, workdir, sim)

        def created() -> int:
            return sum(sim.account.orders_created.values())

        proc = await _spawn_bot(config, log_path)
        try:
            traded = await _wait_for(
                lambda: created() >= 3 or proc.returncode is not None, settings.process_start_timeout_s, 0.02
            )
        finally:
            await _kill(proc)
        if traded is None or created() < 3:
            report.error = f"the bot placed no orders before the state was deleted (log {log_path})"
            return report
        for p in state_dir.glob("tradebot.db*"):
            p.unlink()
        shutil.rmtree(state_dir / "backups", ignore_errors=True)
        started = time.monotonic()
        before = created()
        halted = await _spawn_bot(config, log_path, "--duration", "3")
        code = await within(halted.wait(), timeout=settings.process_start_timeout_s + 10)
        report.detected_s = time.monotonic() - started
        store = StateStore(state_dir)
        try:
            saved = store.load_trading_state()
            journal = store.orders()
        finally:
            store.close()
        state = saved.state.value if saved is not None else "none"
        report.states.append(state)
        report.expect(
            "starts HALTED",
            "halted (by state)",
            f"{state} (by {saved.source if saved else '-'})",
            code == 0 and saved is not None and state == "halted" and saved.source == "state",
            f"a bot whose state was lost must start HALTED saying why (see {log_path})",
        )
        report.expect(
            "orders while HALTED",
            "0",
            str(created() - before),
            created() == before,
            "the bot traded on its own with a lost state",
        )
        counts = {str(k): int(v) for k, v in sim.state()["orders_created"].items()}
        rebuilt = {e.client_order_id for e in journal if e.status.value != "rejected"}
        missing = {cid for cid, n in counts.items() if n > 0} - rebuilt
        report.expect(
            "journal rebuilt",
            "every order on the exchange",
            f"{len(missing)} missing",
            not missing,
            "orders the exchange has are missing from the rebuilt journal",
        )
        result = await asyncio.to_thread(send_command, state_dir, "resume", "drill: state checked")
        before = created()
        final = await _spawn_bot(config, log_path, "--duration", "3")
        try:
            code = await within(final.wait(), timeout=settings.process_start_timeout_s + 10)
        except TimeoutError:
            await _kill(final)
            code = -1
        report.healed_s = time.monotonic() - started
        report.orders_after_heal = created() - before
        report.expect(
            "resume",
            "active after resume, exit 0",
            f"{result.state}, exit {code}",
            result.ok and code == 0,
            result.message,
        )
        ok, msg = await _verify_with_exchange(state_dir, sim, live=True)
        store = StateStore(state_dir)
        journal = store.orders()
        store.close()
        _orders_verdict(report, journal, {str(k): int(v) for k, v in sim.state()["orders_created"].items()})
        _judge_common(report, ok, msg, report.orders_after_heal)
    return report


_RUNNERS: dict[
    str, Callable[[Scenario, DrillSettings, Mapping[str, Any], Path], Awaitable[ScenarioReport]]
] = {
    "restart-fills-while-down": _run_restart_fills_while_down,
    "state-loss": _run_state_loss,
}
"""Scenarios with a runner of their own (the others run in-process or as process-kill)."""


# --- running ---------------------------------------------------------------------------------


async def run_scenario(
    name: str,
    settings: DrillSettings | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    workdir: Path | None = None,
) -> ScenarioReport:
    """Run one scenario and judge it. Never raises for a failed expectation: see the report."""
    scenario = _scenario(name)
    settings = settings or DrillSettings()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tradebot-drill-")))
        runner = _RUNNERS.get(scenario.name) or {
            "process": _run_process_kill,
            "escalation": _run_escalation,
            "dead-mans-switch": _run_dead_mans_switch,
        }.get(scenario.exchange, _run_inprocess)
        try:
            report = await runner(scenario, settings, base or {}, workdir)
        except Exception as exc:  # a scenario that crashes is a failed scenario, reported
            log.exception("drill scenario %s could not run", name)
            report = ScenarioReport(scenario, error=f"{type(exc).__name__}: {exc}")
    report.duration_s = time.monotonic() - started
    return report


async def run_drill(
    names: Sequence[str],
    settings: DrillSettings | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    workdir: Path | None = None,
    on_report: Callable[[ScenarioReport], Awaitable[None] | None] | None = None,
) -> list[ScenarioReport]:
    """Run scenarios one after another (``all`` runs every one)."""
    wanted = scenario_names() if "all" in names else list(names)
    for name in wanted:
        _scenario(name)  # unknown names fail before anything runs
    reports = []
    for name in wanted:
        report = await run_scenario(name, settings, base=base, workdir=workdir)
        reports.append(report)
        if on_report is not None:
            res = on_report(report)
            if asyncio.iscoroutine(res):
                await res
    return reports
