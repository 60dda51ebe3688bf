"""Pre-flight checks for ``tradebot run --dry-run``: is this setup fit to trade?"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import attrs

from tradebot.core.bootstrap import Prepared
from tradebot.core.errors import TradebotError

__all__ = ["PreflightReport", "run_preflight"]

MAX_CLOCK_SKEW_S = 5.0


@attrs.define
class PreflightItem:
    name: str
    ok: bool
    detail: str


@attrs.define
class PreflightReport:
    """Each check with its verdict; ``ok`` only when every check passed."""

    items: list[PreflightItem] = attrs.Factory(list)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append(PreflightItem(name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def render(self) -> str:
        width = max(len(i.name) for i in self.items) if self.items else 0
        lines = ["pre-flight checks:"]
        for i in self.items:
            lines.append(f"  [{'PASS' if i.ok else 'FAIL'}] {i.name.ljust(width)}  {i.detail}")
        failed = sum(not i.ok for i in self.items)
        lines.append("ready to trade" if not failed else f"NOT ready: {failed} check(s) failed")
        return "\n".join(lines)


async def run_preflight(prepared: Prepared, *, paper: bool) -> PreflightReport:
    """Run every check; never raises for a failing check, it reports it."""
    from tradebot.core.bot import Bot, RunOptions
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
        f"{len(host.loaded)} loaded" + "".join(f"; {n}: {e}" for n, e in failed.items())
        + "".join(f"; {n}: not installed" for n in host.report.unknown),
    )
    try:
        secrets = load_secrets(settings.secrets_path)
    except TradebotError as exc:
        report.add("secrets", False, str(exc))
        return report
    try:
        store = StateStore(settings.state_path, backup_count=settings.backup.count, backup_interval_s=settings.backup.interval_s)
    except (TradebotError, OSError) as exc:
        report.add("state store", False, f"{settings.state_path}: {exc}")
        return report
    restored = f"; {store.restored.message}" if store.restored is not None else ""
    report.add("state store", True, f"{store.path} (schema v{store.schema_version}){restored}")
    bot = Bot(prepared, RunOptions(paper=paper))
    ctx = BotContext(settings=settings, plugins=host, state_dir=settings.state_path, store=store, extras={"secrets": secrets})
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
            report.add("clock skew", abs(skew) <= MAX_CLOCK_SKEW_S, f"{skew:+.2f}s against {name} (limit {MAX_CLOCK_SKEW_S:g}s)")
        except TradebotError as exc:
            report.add("clock skew", False, f"{name}: {exc}")
        try:
            balances = await exchange.balances()
            shown = ", ".join(f"{a} {v}" for a, v in sorted(balances.totals.items())[:4])
            report.add("credentials valid", not balances.stale, f"{name}: balances readable ({shown or 'empty'})")
        except TradebotError as exc:
            report.add("credentials valid", False, f"{name}: {exc}")
    return report
