"""``tradebot state check`` and ``tradebot state rebuild``: the order journal against the exchange.

Both read this bot's orders (recognised by ``[bot] id`` in their client order ids) from the
exchange's history. ``check`` lists what the journal lacks or has differently and compares
positions; ``rebuild`` journals what is missing, with its fills, and takes cash from the
exchange, then leaves the bot HALTED so a person checks before ``tradebot resume``. Neither
runs while the bot runs (they take its lock).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from tradebot.cli._common import config_option, prepare_or_exit

__all__ = ["state"]


@click.group("state")
def state() -> None:
    """Check the order journal against the exchange, or rebuild it from the exchange."""


async def _with_bot_state(prepared: Any, work: Callable[[Any, Any], Awaitable[int]]) -> int:
    """Open the bot's store and exchange (no bot may be running) and run ``work(ctx, ids)``."""
    from tradebot.core.clock import SystemClock
    from tradebot.core.context import BotContext
    from tradebot.core.errors import StateError
    from tradebot.core.order_ids import OrderIds
    from tradebot.core.secrets import load_secrets
    from tradebot.core.store import StateStore
    from tradebot.core.trading_state import TradingStateMachine
    from tradebot.services.control import BotLock

    settings = prepared.settings
    state_dir = settings.state_path
    lock = BotLock(state_dir)
    if not lock.try_acquire():
        raise StateError(
            f"the bot is running with {state_dir} (pid {lock.holder_pid() or 'unknown'}); stop it first",
            path=str(state_dir),
        )
    try:
        store = StateStore(state_dir, bot_id=settings.bot_id)
        try:
            trading = TradingStateMachine(store=store)
            trading.restore(announce=False)
            ctx = BotContext(
                settings=settings,
                plugins=prepared.host,
                clock=SystemClock(),
                state_dir=state_dir,
                store=store,
                trading=trading,
                extras={
                    "secrets": load_secrets(settings.secrets_path, declared=prepared.host.secret_names())
                },
            )
            name = settings.bot.exchange
            exchange = prepared.host.build("exchange", name, settings.plugin_config("exchange", name), ctx)
            ctx.exchange = exchange
            await exchange.start()
            try:
                return await work(ctx, OrderIds(settings.bot_id))
            finally:
                await exchange.close()
        finally:
            store.close()
    finally:
        lock.release()


def _run(config_path: Path | None, work: Callable[[Any, Any], Awaitable[int]]) -> None:
    from tradebot.core.errors import TradebotError

    prepared = prepare_or_exit(config_path)
    try:
        code = asyncio.run(_with_bot_state(prepared, work))
    except TradebotError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


@state.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """List this bot's orders the journal lacks or has differently, and compare positions.

    Exit 0 when the journal matches the exchange, 1 when it does not, 2 on an error."""
    from tradebot.core.state_rebuild import check_state

    async def work(ctx: Any, ids: Any) -> int:
        report = await check_state(ctx.store, ctx.exchange, ids, None)
        for line in report.lines():
            click.echo(line)
        click.echo(f"trading state {ctx.trading.state.value.upper()}: {ctx.trading.reason}")
        return 0 if report.clean else 1

    _run(config_path, work)


@state.command("rebuild")
@config_option
def rebuild(config_path: Path | None) -> None:
    """Journal this bot's orders from the exchange's history (with fills and positions), take
    cash from the exchange, and leave trading HALTED until you check it and resume."""
    from tradebot.core.executor import OrderExecutor
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.state_rebuild import SOURCE, check_state, rebuild_state, trades_by_order

    async def work(ctx: Any, ids: Any) -> int:
        portfolio = Portfolio(ctx.store, quote=ctx.settings.bot.quote)
        executor = OrderExecutor(ctx.exchange, ctx.store, portfolio, order_ids=ids)
        trades = await trades_by_order(
            ctx.exchange, None
        )  # read once: the check after compares with them too
        result = await rebuild_state(executor, ctx.exchange, ids, None, trades=trades)
        click.echo(result.message)
        if result.added or result.updated:
            await ctx.trading.halt_anew(
                f"{result.message} by `tradebot state rebuild`: check it (`tradebot state check`), then `tradebot resume`",
                SOURCE,
            )
        report = await check_state(ctx.store, ctx.exchange, ids, None, trades=trades)
        for line in report.lines():
            click.echo(line)
        click.echo(f"trading state {ctx.trading.state.value.upper()}: {ctx.trading.reason}")
        return 0 if report.clean else 1

    _run(config_path, work)
