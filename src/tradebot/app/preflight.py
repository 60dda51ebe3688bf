"""Pre-flight checks for ``tradebot run --dry-run``: is this setup fit to trade?"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import attrs

from tradebot.app.bootstrap import Prepared
from tradebot.core.errors import TradebotError

__all__ = ["PreflightReport", "run_preflight", "setup_problems"]

MAX_CLOCK_SKEW_S = 5.0


def setup_problems(settings: Any, secrets: Any, host: Any, *, paper: bool = False) -> list[str]:
    """What stops this config from running with these secrets, each with its path: checked by
    ``config check``, ``run --dry-run`` and at start-up (a configuration error, exit 2).

    A component in use without a secret it declares it needs, or with one its own check
    refuses (a Kraken API secret that is not base64 ...); an HTTP server reachable from other
    hosts without a token.
    """
    from tradebot.services.http_server import http_problems

    problems: list[str] = []
    if host is not None:
        problems.extend(_secret_problems(settings, secrets, host, paper=paper))
    if host is not None:
        from tradebot.core.errors import ConfigError
        from tradebot.core.paper_trading import paper_plan

        try:
            paper_plan(settings, host, paper=paper)
        except ConfigError as exc:
            problems.extend(exc.issues)
    http = settings.section("http")
    if http is not None:
        problems.extend(http_problems(http, secrets))
    return problems


def _in_use(settings: Any, host: Any, *, paper: bool) -> list[tuple[str, str, Any]]:
    """(where in the config, name, registered component) of every component this setup runs."""
    used: list[tuple[str, str, Any]] = []

    def add(category: str, name: str, where: str) -> None:
        comp = host.components(category).get(name)
        if comp is not None and all(comp is not c for _, _, c in used):
            used.append((where, name, comp))

    if not paper:  # a paper run's exchange trades nothing and never holds keys
        add("exchange", settings.bot.exchange, "$.bot.exchange")
    notifications = settings.section("notifications")
    loaded = host.components("notifier")
    names = getattr(notifications, "notifiers", None)
    for name in names if names is not None else sorted(loaded):
        add("notifier", name, f"$.notifiers.{name}")
    halt = settings.section("halt")
    add("policy", getattr(halt, "position_policy", "maintain"), "$.halt.position_policy")
    for instance, strategy in getattr(settings, "strategies", {}).items():
        if getattr(strategy, "enabled", True):
            add("strategy", strategy.plugin, f"$.strategies.{instance}")
    for category in ("check", "halt-trigger", "recovery"):  # every one loaded runs
        for name in sorted(host.components(category)):
            add(category, name, f"$.plugins ({category} {name})")
    return used


def _secret_problems(settings: Any, secrets: Any, host: Any, *, paper: bool) -> list[str]:
    """Secrets the components in use declare they need and do not have, or whose check fails."""
    from tradebot.core.components import secret_env_var
    from tradebot.core.secrets import KNOWN_SECRETS

    problems: list[str] = []
    for where, name, comp in _in_use(settings, host, paper=paper):
        spec = comp.spec
        missing = [k for k in spec.secrets if not secrets.get(k)]
        if missing:
            env = ", ".join(KNOWN_SECRETS.get(k, secret_env_var(k)) for k in missing)
            off = (
                f"tradebot plugins disable {name}"
                if comp.category == "notifier"
                else "choose another in the config"
            )
            problems.append(
                f"the {comp.category} {name} needs the secret(s) {', '.join(missing)}, which are not set: set {env} or"
                f" put them in the secrets file, or {off} @ {where}"
            )
        elif spec.check_secrets is not None:
            given = {k: secrets[k] for k in (*spec.secrets, *spec.optional_secrets) if secrets.get(k)}
            try:
                found = list(
                    host.call(comp.plugin, f"{comp.category}:{name}.check_secrets", spec.check_secrets, given)
                )
            except TradebotError as exc:
                found = [f"checking its secrets failed: {exc}"]
            problems.extend(f"{line} @ {where}" for line in found)
    return problems


@attrs.define
class PreflightItem:
    name: str
    ok: bool
    detail: str
    warn: bool = False
    """Passes, but the user should know (the bot will start HALTED ...)."""


@attrs.define
class PreflightReport:
    """Each check with its verdict; ``ok`` only when every check passed."""

    items: list[PreflightItem] = attrs.Factory(list)

    def add(self, name: str, ok: bool, detail: str, *, warn: bool = False) -> bool:
        self.items.append(PreflightItem(name, ok, detail, warn=warn))
        return ok

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def render(self) -> str:
        width = max(len(i.name) for i in self.items) if self.items else 0
        lines = ["pre-flight checks:"]
        for i in self.items:
            verdict = "FAIL" if not i.ok else "WARN" if i.warn else "PASS"
            lines.append(f"  [{verdict}] {i.name.ljust(width)}  {i.detail}")
        failed = sum(not i.ok for i in self.items)
        lines.append("ready to trade" if not failed else f"NOT ready: {failed} check(s) failed")
        from tradebot.core.secrets import redact

        return redact("\n".join(lines))  # an exchange's error may quote what it was sent


async def run_preflight(prepared: Prepared, *, paper: bool) -> PreflightReport:
    """Run every check; never raises for a failing check, it reports it."""
    from tradebot.app.bot import Bot, RunOptions
    from tradebot.core.context import BotContext
    from tradebot.core.secrets import load_secrets
    from tradebot.core.store import StateStore

    report = PreflightReport()
    settings, host = prepared.settings, prepared.host
    report.add("config", True, settings.source or "built-in defaults (no config file)")
    failed = host.report.failed
    report.add(
        "plugins",
        not failed and not host.report.unknown,
        f"{len(host.loaded)} loaded"
        + "".join(f"; {n}: {e}" for n, e in failed.items())
        + "".join(f"; {n}: not installed" for n in host.report.unknown),
    )
    try:
        secrets = load_secrets(settings.secrets_path, declared=host.secret_names())
    except TradebotError as exc:
        report.add("secrets", False, str(exc))
        return report
    problems = setup_problems(settings, secrets, host, paper=paper)
    if problems:
        report.add("setup", False, "\n      ".join(problems))
    from tradebot.services.http_server import check_bind

    http = settings.section("http")
    if http is not None and http.enabled:
        busy = check_bind(http)
        report.add("http server", busy is None, busy or f"{http.host}:{http.port} is free")
    try:
        store = StateStore(
            settings.state_path,
            backup_count=settings.backup.count,
            backup_interval_s=settings.backup.interval_s,
        )
    except (TradebotError, OSError) as exc:
        report.add("state store", False, f"{settings.state_path}: {exc}")
        return report
    restored = f"; {store.restored.message}" if store.restored is not None else ""
    report.add("state store", True, f"{store.path} (schema v{store.schema_version}){restored}")
    from tradebot.services.control import BotLock, bot_running

    if bot_running(settings.state_path):
        pid = BotLock(settings.state_path).holder_pid()
        report.add(
            "state store",
            False,
            f"a bot (pid {pid or 'unknown'}) is running on {settings.state_path}: "
            "a second one would not start",
        )
    saved = store.load_trading_state()
    if saved is not None and saved.state.value != "active":
        report.add(
            "trading state",
            True,
            f"the saved state will start the bot {saved.state.value.upper()} ({saved.reason}; by {saved.source}, "
            f"since {saved.time.isoformat(timespec='seconds')}): it places no new orders until "
            "`tradebot resume`",
            warn=True,
        )
    bot = Bot(prepared, RunOptions(paper=paper))
    ctx = BotContext(
        settings=settings,
        plugins=host,
        state_dir=settings.state_path,
        store=store,
        extras={"secrets": secrets},
    )
    async with AsyncExitStack() as stack:
        stack.callback(store.close)
        try:
            exchange = await bot._start_exchange(ctx, stack)
        except TradebotError as exc:
            report.add("exchange reachable", False, str(exc))
            return report
        name = bot._exchange_name
        try:
            status = await exchange.system_status()
            report.add("exchange reachable", status.online, f"{name}: status {status.status}")
        except TradebotError as exc:
            report.add("exchange reachable", False, f"{name}: {exc}")
        try:
            before = time.time()
            server = await exchange.server_time()
            local = (before + time.time()) / 2
            skew = server.timestamp() - local
            report.add(
                "clock skew",
                abs(skew) <= MAX_CLOCK_SKEW_S,
                f"{skew:+.2f}s against {name} (limit {MAX_CLOCK_SKEW_S:g}s)",
            )
        except TradebotError as exc:
            report.add("clock skew", False, f"{name}: {exc}")
        try:
            balances = await exchange.balances()
            shown = ", ".join(f"{a} {v}" for a, v in sorted(balances.totals.items())[:4])
            report.add(
                "credentials valid", not balances.stale, f"{name}: balances readable ({shown or 'empty'})"
            )
        except TradebotError as exc:
            report.add("credentials valid", False, f"{name}: {exc}")
    return report
