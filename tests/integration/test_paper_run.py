"""End-to-end paper runs of the real bot against the built-in simulator (in-process)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions
from tradebot.app.config import settings_from_dict
from tradebot.core import telemetry

CONFIG = {
    "bot": {"state_dir": "state"},
    "http": {"enabled": False},
    "strategies": {
        "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 4}},
        "rsi": {"plugin": "rsi-reversion"},
    },
    "checks": {"staleness": {"threshold_s": 5.0}},
}


@pytest.mark.timeout(90)
async def test_paper_run_trades_and_traces_across_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEBOT_TRACE_STRATEGY_EVERY", "1")
    monkeypatch.setenv("TRADEBOT_TRACE_STRATEGY_INTERVAL_S", "0")
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("none", span_processor=SimpleSpanProcessor(exporter))
    try:
        settings = settings_from_dict(CONFIG, source=str(tmp_path / "tradebot.toml"))
        bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=6))
        summary = await bot.run()
    finally:
        telemetry.shutdown_tracing()
    assert summary.exit_code == 0, summary.stop_reason
    assert summary.ticks > 10
    assert summary.orders_placed >= 1 and summary.fills >= 1
    assert summary.errors == 0

    plugins_by_trace: dict[int, set[str]] = defaultdict(set)
    names_by_trace: dict[int, set[str]] = defaultdict(set)
    for span in exporter.get_finished_spans():
        trace_id = span.context.trace_id
        names_by_trace[trace_id].add(span.name)
        plugin = span.attributes.get("tradebot.plugin")
        if plugin:
            plugins_by_trace[trace_id].add(str(plugin))
    # one trace goes tick -> strategy -> risk gate -> order on the exchange, with a check fed on the way
    full = [
        t
        for t, plugins in plugins_by_trace.items()
        if "paper" in plugins and plugins & {"sma-crossover", "rsi-reversion"} and "staleness" in plugins
    ]
    assert full, {t: sorted(p) for t, p in plugins_by_trace.items() if len(p) > 1}
    assert {"market_event", "risk_gate"} <= names_by_trace[full[0]]


@pytest.mark.timeout(90)
async def test_infinite_run_stops_only_after_close_halt_flattens(tmp_path: Path) -> None:
    import asyncio

    config = {
        **CONFIG,
        "halt": {"position_policy": "close"},
        "strategies": {"sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3}}},
    }
    settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
    bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=1, infinite=True))
    run = asyncio.create_task(bot.run())
    await asyncio.sleep(2.0)
    assert not run.done(), "--infinite must ignore --duration"
    ctx = bot.context
    assert ctx is not None
    for _ in range(400):
        if any(not p.is_flat for p in ctx.portfolio.positions().values()):
            break
        await asyncio.sleep(0.05)
    assert any(not p.is_flat for p in ctx.portfolio.positions().values()), "no position was opened"
    await ctx.trading.halt("drill: operator halt", "test")
    summary = await asyncio.wait_for(run, 30)
    assert "close policy completed" in summary.stop_reason
    assert summary.trading_state == "halted"
    assert all(p.is_flat for p in ctx.portfolio.positions().values())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("extra", "code", "outcome"),
    [
        ({}, 75, "escalated"),  # the default ladder ends with its escalate rung
        # a ladder without it: the watch stops the bot itself, with the configured exit code
        (
            {"healing": {"ladder": ["reconnect", "reload-module"]}, "supervisor": {"escalate_exit_code": 76}},
            76,
            "stopped",
        ),
    ],
)
async def test_quarantined_exchange_plugin_stops_the_bot_for_a_restart(
    tmp_path: Path, extra: dict[str, object], code: int, outcome: str
) -> None:
    """A bug that keeps failing in the exchange plugin must not leave the bot unable to trade."""
    import asyncio

    from tradebot.core.errors import PluginError

    settings = settings_from_dict({**CONFIG, **extra}, source=str(tmp_path / "tradebot.toml"))
    bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=40))
    run = asyncio.create_task(bot.run())
    for _ in range(400):
        if bot.context is not None and bot.context.exchange is not None and bot.summary.ticks > 3:
            break
        await asyncio.sleep(0.05)
    ctx = bot.context
    assert ctx is not None and ctx.exchange is not None
    exchange = ctx.exchange
    alerts: list[object] = []
    bot.host.quarantine_listeners.insert(0, lambda plugin, reason: alerts.append(plugin))

    async def broken() -> None:
        raise KeyError("balance")  # a bug, not an operational error

    exchange.unwrapped.balances = broken  # what the guarded proxy calls from now on
    started = asyncio.get_running_loop().time()
    for _ in range(bot.host.quarantine_after):
        with pytest.raises(PluginError):
            await exchange.balances()
    assert bot.host.is_quarantined("paper") and alerts == ["paper"]
    summary = await asyncio.wait_for(run, 20)
    assert asyncio.get_running_loop().time() - started < 15, "the bot must not wait for --duration"
    assert summary.exit_code == code, summary.stop_reason
    assert "paper" in summary.stop_reason and "KeyError" in summary.stop_reason
    assert ctx.extras["critical_plugins"].recoveries == [("paper", outcome)]


@pytest.mark.timeout(90)
async def test_orders_the_exchange_rejects_are_counted_as_rejected_not_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run on the simulator whose every AddOrder the exchange refuses (funds held
    elsewhere on the account, which the bot's own cash cannot show): the summary must not
    call them placed."""
    from tradebot.simulator import run_simulator

    faults = "error=EOrder:Insufficient funds,on=AddOrder"
    async with run_simulator(seed=3, tick_interval_s=0.05, faults=faults) as sim:
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        config = {
            "bot": {"state_dir": "state", "exchange": "kraken", "pairs": ["ETH/USD"]},
            "http": {"enabled": False},
            "exchanges": {"kraken": {"base_url": sim.base_url, "ws_url": sim.ws_url}},
            "strategies": {"sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3}}},
        }
        settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
        summary = await Bot(prepare(settings=settings), RunOptions(duration_s=6)).run()
    assert summary.exit_code == 0, summary.stop_reason
    assert sim.stats.requests["AddOrder"] >= 1
    assert summary.refused_when_sent == sim.stats.requests["AddOrder"] and summary.orders_placed == 0
    assert f"({summary.refused_when_sent} refused when sent)" in summary.render()
