"""End to end: the real bot's ``/metrics``, read with Prometheus' own parser, says what the run did.

Each family the bot defines must be present and must have moved as the run summary, the
journal and the components say; a series nothing records fails here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions, RunSummary
from tradebot.app.config import settings_from_dict
from tradebot.core.hookspecs import hookimpl

# every family /metrics must show (prometheus_client strips a counter's ``_total``)
FAMILIES = (
    "tradebot_orders",
    "tradebot_fills",
    "tradebot_fill_volume",
    "tradebot_fees",
    "tradebot_signals",
    "tradebot_market_events",
    "tradebot_risk_rejections",
    "tradebot_healing_attempts",
    "tradebot_healing_successes",
    "tradebot_healing_failures",
    "tradebot_component_restarts",
    "tradebot_quarantines",
    "tradebot_halts",
    "tradebot_strategy_duration_seconds",
    "tradebot_exchange_request_duration_seconds",
    "tradebot_trading_state",
    "tradebot_trading_severity",
    "tradebot_equity",
    "tradebot_pnl_realized",
    "tradebot_pnl_unrealized",
    "tradebot_position_volume",
    "tradebot_breaker_state",
    "tradebot_ratelimiter_fill",
    "tradebot_check_status",
    "tradebot_queue_depth",
    "tradebot_event_loop_lag_seconds",
    "tradebot_process_rss_bytes",
    "tradebot_uptime_seconds",
    "tradebot_process_cpu_time_seconds",
    "tradebot_breaker_trips",
    "tradebot_strategy_calls",
    "tradebot_strategy_timeouts",
    "tradebot_strategy_errors",
    "tradebot_strategy_signals",
    "tradebot_process_restarts",
    "tradebot_notifications",
    "tradebot_plugins",
)
# families that move only when REST requests are made (not in paper, whose prices come over the WebSocket)
REST_FAMILIES = (
    "tradebot_api_calls",
    "tradebot_api_failures",
    "tradebot_api_retries",
    "tradebot_api_errors",
    "tradebot_exchange_queue_wait_seconds",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scraper:
    """A plugin that reads ``/metrics`` over HTTP when the bot stops (every child stopped,
    so nothing moves any more, while the server still runs)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.text = ""
        self.status: dict[str, Any] = {}

    @hookimpl
    async def tradebot_shutdown(self, context: Any, reason: str) -> None:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            assert r.status == 200
            self.text = await r.text()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/status") as r:
            self.status = await r.json()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(
    fams: dict[str, Any],
    name: str,
    where: Callable[[dict[str, str]], bool] = lambda _l: True,
    suffix: str = "_total",
) -> float:
    """Sum of a family's samples named ``name + suffix`` whose labels pass ``where``."""
    return sum(s.value for s in fams[name].samples if s.name == name + suffix and where(s.labels))


def histogram_count(
    fams: dict[str, Any], name: str, where: Callable[[dict[str, str]], bool] = lambda _l: True
) -> float:
    return total(fams, name, where, suffix="_count")


async def run_bot(
    config: dict[str, Any], tmp_path: Path, options: RunOptions, during: Callable[[Bot], Any] | None = None
) -> tuple[RunSummary, Bot, dict[str, Any], str]:
    import asyncio

    port = free_port()
    config = {**config, "http": {"enabled": True, "port": port}}
    settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
    prepared = prepare(settings=settings)
    scraper = Scraper(port)
    prepared.host.pm.register(scraper, name="test-scraper")
    bot = Bot(prepared, options)
    run = asyncio.ensure_future(bot.run())
    if during is not None:
        await during(bot)
    summary = await run
    assert scraper.text, "the bot stopped before /metrics was read"
    _STATUS[id(bot)] = scraper.status
    return summary, bot, families(scraper.text), scraper.text


_STATUS: dict[int, dict[str, Any]] = {}


def bot_status(bot: Bot) -> dict[str, Any]:
    """The ``/status`` document read next to ``/metrics`` at the end of ``bot``'s run."""
    return _STATUS[id(bot)]


PAPER = {
    "bot": {"state_dir": "state", "pairs": ["BTC/USD"]},
    "strategies": {"sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 4}}},
    "risk": {"max_orders_per_minute": 4},  # later signals are refused by the rate rule
    "checks": {"staleness": {"threshold_s": 5.0}},
}


@pytest.mark.timeout(90)
async def test_paper_run_metrics_equal_the_run_summary_and_the_journal(tmp_path: Path) -> None:
    summary, bot, fams, text = await run_bot(PAPER, tmp_path, RunOptions(paper=True, duration_s=6))
    assert summary.exit_code == 0, summary.stop_reason
    for name in FAMILIES:
        assert name in fams, (name, sorted(fams))
    ctx = bot.context
    assert ctx is not None
    from tradebot.core.store import StateStore

    store = StateStore(ctx.state_dir)  # the journal as the run left it

    # orders: placed == the summary's, and == the journal's orders the exchange took
    placed = total(fams, "tradebot_orders", lambda labels: labels["outcome"] == "placed")
    assert placed == summary.orders_placed > 0
    journal = store.orders()
    assert placed == sum(1 for o in journal if o.status.value in ("open", "closed", "canceled", "expired"))
    filled = total(fams, "tradebot_orders", lambda labels: labels["outcome"] == "filled")
    assert filled == sum(1 for o in journal if o.status.value == "closed")
    assert (
        total(fams, "tradebot_orders", lambda labels: labels["outcome"] == "rejected")
        == summary.refused_when_sent
    )
    # every outcome of every pair and side exists, at 0 when nothing happened
    outcomes = {(s.labels["side"], s.labels["outcome"]) for s in fams["tradebot_orders"].samples}
    assert outcomes == {
        (side, o)
        for side in ("buy", "sell")
        for o in ("placed", "filled", "cancelled", "expired", "rejected", "unknown")
    }

    # fills, volume and fees == the fills the journal recorded
    fills = store.fills()
    assert total(fams, "tradebot_fills") == summary.fills == len(fills) > 0
    assert total(fams, "tradebot_fill_volume") == pytest.approx(
        float(sum((f.volume for f in fills), Decimal(0)))
    )
    fees = sum((f.fee for f in fills), Decimal(0))
    assert fees > 0
    assert total(fams, "tradebot_fees") == pytest.approx(float(fees))

    # signals, risk refusals and market events == the summary's
    assert total(fams, "tradebot_signals") == summary.signals > 0
    assert total(fams, "tradebot_risk_rejections") == summary.orders_rejected - summary.refused_when_sent > 0
    rules = {s.labels["rule"]: s.value for s in fams["tradebot_risk_rejections"].samples}
    assert {"halted", "max_position", "min_size", "rate_limit"} <= set(rules)
    assert rules["rate_limit"] > 0
    assert total(fams, "tradebot_market_events") == summary.ticks > 10

    # strategy calls: the duration histogram counts every call the runner made
    calls = total(fams, "tradebot_strategy_calls")
    assert histogram_count(fams, "tradebot_strategy_duration_seconds") == calls > 0

    # series a dashboard alerts on are there at 0 in a quiet run
    assert {s.labels["action"] for s in fams["tradebot_healing_attempts"].samples} >= {
        "restart-component",
        "escalate",
    }
    assert total(fams, "tradebot_healing_attempts") == 0
    components = {s.labels["component"]: s.value for s in fams["tradebot_component_restarts"].samples}
    assert {"market-data", "executor", "strategies", "monitor"} <= set(components)
    assert set(components.values()) == {0.0}
    assert bot_status(bot)["restarts"]["components"] == dict.fromkeys(components, 0)  # /status agrees
    quarantines = {
        (s.labels["plugin"], s.labels["instance"]): s.value for s in fams["tradebot_quarantines"].samples
    }
    assert quarantines[("paper", "")] == 0 and quarantines[("sma-crossover", "sma")] == 0
    halts = {s.labels["source"]: s.value for s in fams["tradebot_halts"].samples}
    assert halts["check:staleness"] == 0 and halts["operator:cli"] == 0
    states = {(s.labels["plugin"], s.labels["state"]): s.value for s in fams["tradebot_plugins"].samples}
    assert states[("paper", "loaded")] == 1 and states[("paper", "quarantined")] == 0
    assert 'tradebot_notifications_total{notifier="log",outcome="sent"}' in text

    # HALTs by source == the trading-state changes of the run
    halted = [c for c in ctx.trading.history if c.current.value == "halted"]
    assert total(fams, "tradebot_halts") == len(halted)
    for change in halted:
        assert halts[change.source] >= 1
    store.close()


class FlakyPlugin:
    """A third-party plugin whose order-report hook always fails: the host quarantines it."""

    @hookimpl
    def tradebot_order_report(self, order: Any) -> None:
        raise RuntimeError("flaky plugin bug")


class BrokenPlugin:
    """A plugin implementing a hook nobody specified: it does not load."""

    @hookimpl
    def tradebot_no_such_hook(self) -> None:  # pragma: no cover - never called
        pass


@pytest.mark.timeout(120)
async def test_kraken_run_with_faults_moves_healing_restart_quarantine_and_request_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import logging

    from tradebot.drill import DrillSettings, bot_config, write_secrets
    from tradebot.simulator import run_simulator

    caplog.set_level(logging.INFO, logger="tradebot.notify.log")
    async with run_simulator(seed=5, tick_interval_s=0.05, heartbeat_s=0.2, rate_tier="pro") as sim:
        secrets = write_secrets(tmp_path / "secrets.toml", sim.api_key, sim.api_secret)
        config = bot_config(
            DrillSettings(),
            exchange="kraken",
            base_url=sim.base_url,
            ws_url=sim.ws_url,
            state_dir=tmp_path / "state",
            secrets_file=secrets,
        )
        assert "log" in config["plugins"]["enabled"]
        config["plugins"]["quarantine_after"] = 2
        config["strategies"] = {
            "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 4, "volume": "0.001"}}
        }
        port = free_port()
        config["http"] = {"enabled": True, "port": port}
        prepared = prepare(settings=settings_from_dict(config, source=str(tmp_path / "tradebot.toml")))
        scraper = Scraper(port)
        prepared.host.pm.register(scraper, name="test-scraper")
        assert prepared.host.register(FlakyPlugin(), "flaky")
        assert not prepared.host.register(BrokenPlugin(), "broken")
        bot = Bot(prepared, RunOptions())
        run = asyncio.ensure_future(bot.run())

        async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not predicate():
                assert not run.done(), (await run).stop_reason
                assert loop.time() < deadline, "condition not met in time"
                await asyncio.sleep(0.05)

        try:
            await until(lambda: bot.summary.orders_placed >= 2)
            ctx = bot.context
            assert ctx is not None
            # a component crashes: the supervisor hands it to the healing ladder, which restarts it
            executor = ctx.executor
            original = executor.poll_once

            async def crash_once() -> int:
                executor.poll_once = original  # type: ignore[method-assign]
                raise RuntimeError("injected crash of the order tracker")

            executor.poll_once = crash_once  # type: ignore[method-assign]
            await until(lambda: ctx.healer.counters.successes.get("restart-component", 0) >= 1)
            # the exchange misbehaves: private calls answer 503 a few times, an order's answer is lost
            sim.faults.add("http5xx=503,on=private,n=3; drop_response,on=AddOrder,n=1")
            placed = bot.summary.orders_placed
            await until(lambda: bot.summary.orders_placed >= placed + 2 and not sim.faults.describe())
            # and one order is refused for want of funds
            sim.faults.add("error=EOrder:Insufficient funds,on=AddOrder,n=1")
            await until(lambda: bot.summary.refused_when_sent >= 1)
            await until(lambda: ctx.plugins.is_quarantined("flaky"))
            # a person HALTs and resumes
            await ctx.trading.halt("maintenance", "operator:cli")
            await ctx.trading.resume("maintenance over", "operator:cli")
            await asyncio.sleep(0.3)  # the quarantine alert is delivered
        finally:
            bot.request_stop("test over")
            summary = await run
    assert set(prepared.host.report.failed) == {"broken"}
    assert summary.exit_code == 0, summary.stop_reason
    fams = families(scraper.text)
    for name in (*FAMILIES, *REST_FAMILIES):
        assert name in fams, (name, sorted(fams))

    from tradebot.core.store import StateStore

    store = StateStore(tmp_path / "state")
    journal = store.orders()
    placed_total = total(fams, "tradebot_orders", lambda labels: labels["outcome"] == "placed")
    assert placed_total == summary.orders_placed
    assert placed_total == sum(
        1 for o in journal if o.status.value in ("open", "closed", "canceled", "expired")
    )
    assert total(fams, "tradebot_fills") == summary.fills == len(store.fills())
    refused = [o for o in journal if o.status.value == "rejected"]
    assert total(fams, "tradebot_orders", lambda labels: labels["outcome"] == "rejected") == len(refused)
    assert total(fams, "tradebot_order_rejections") == len(refused) == summary.refused_when_sent >= 1
    assert (
        total(fams, "tradebot_order_rejections", lambda labels: labels["reason"] == "InsufficientFunds") == 1
    )
    store.close()

    # healing and restarts moved after the crash, as the healer and the supervisor counted them
    assert (
        total(fams, "tradebot_healing_attempts", lambda labels: labels["action"] == "restart-component") >= 1
    )
    assert (
        total(fams, "tradebot_healing_successes", lambda labels: labels["action"] == "restart-component") >= 1
    )
    restarts = {s.labels["component"]: s.value for s in fams["tradebot_component_restarts"].samples}
    assert restarts["executor"] >= 1

    # the faults: retried calls, errors by class, request durations by outcome, the private queue
    assert total(fams, "tradebot_api_retries") >= 1
    assert total(fams, "tradebot_api_errors", lambda labels: labels["error"] == "ExchangeUnavailable") >= 1
    assert (
        histogram_count(
            fams,
            "tradebot_exchange_request_duration_seconds",
            lambda labels: labels["outcome"] == "ExchangeUnavailable",
        )
        >= 1
    )
    assert (
        histogram_count(
            fams,
            "tradebot_exchange_request_duration_seconds",
            lambda labels: labels["group"] == "trading" and labels["outcome"] == "ok",
        )
        >= 1
    )
    assert histogram_count(fams, "tradebot_exchange_queue_wait_seconds") >= 1
    assert total(fams, "tradebot_api_calls") > 0

    halts = {s.labels["source"]: s.value for s in fams["tradebot_halts"].samples}
    assert halts["operator:cli"] == 1 and halts["http"] == 0

    # the quarantine: counted, alerted through the notifiers; the plugin that did not load too
    quarantines = {
        (s.labels["plugin"], s.labels["instance"]): s.value for s in fams["tradebot_quarantines"].samples
    }
    assert quarantines[("flaky", "")] == 1 and quarantines[("kraken", "")] == 0
    states = {(s.labels["plugin"], s.labels["state"]): s.value for s in fams["tradebot_plugins"].samples}
    assert states[("flaky", "quarantined")] == 1 and states[("broken", "failed")] == 1
    notified = [r.getMessage() for r in caplog.records if r.name == "tradebot.notify.log"]
    assert any("plugin flaky quarantined" in m for m in notified), notified
    assert any("plugin broken not loaded" in m and "no spec" in m for m in notified), notified
    assert total(fams, "tradebot_notifications", lambda labels: labels["outcome"] == "sent") >= 2

    # the run summary names the quarantine and the HALT
    text = summary.render()
    assert "quarantined: plugin flaky: 2 consecutive failures" in text, text
    assert "HALT " in text and "by operator:cli: maintenance" in text, text
