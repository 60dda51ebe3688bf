"""End to end on loopback: simulator -> Kraken plugin -> checks -> strategy, with metrics, the HTTP
server, notifications to a fake Telegram, and one trace per market event."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

import aiohttp
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tradebot.app.bootstrap import prepare
from tradebot.app.config import settings_from_dict
from tradebot.core import telemetry, tracing
from tradebot.core.context import BotContext
from tradebot.core.health import HealthMonitor
from tradebot.core.models import Ticker, TradingState
from tradebot.core.portfolio import Portfolio
from tradebot.core.secrets import SecretStore
from tradebot.core.store import StateStore
from tradebot.core.strategy import StrategyContext
from tradebot.core.trading_state import TradingStateMachine
from tradebot.services.http_server import HttpServer, HttpSettings
from tradebot.services.logs import LoggingSettings, configure_logging
from tradebot.services.metrics import BotMetrics
from tradebot.services.notify import install_notifications
from tradebot.simulator import run_simulator

from .fake_telegram import FakeBotApi

TG_TOKEN = "555111:TG-bot-secret-token"
CONTROL = "control-SECRET-token-123"
SECRETS = {"telegram_bot_token": TG_TOKEN, "telegram_chat_id": "99", "control_token": CONTROL}


async def _until(predicate: Any, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_paper_like_run_traces_metrics_readiness_control_and_notifications(tmp_path: Any) -> None:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing(span_processor=SimpleSpanProcessor(exporter))
    tracing.install_retry_events()
    log_stream = io.StringIO()
    handlers = configure_logging(LoggingSettings(format="json", level="DEBUG"), stream=log_stream)
    fake = FakeBotApi(TG_TOKEN)
    await fake.start()
    tasks: list[asyncio.Task[Any]] = []
    try:
        async with run_simulator(host="127.0.0.1", port=0, seed=11, tick_interval_s=0.05) as sim:
            settings = settings_from_dict(
                {
                    "bot": {"exchange": "kraken", "pairs": ["BTC/USD"], "state_dir": str(tmp_path)},
                    "plugins": {
                        "enabled": [
                            "kraken",
                            "staleness",
                            "api-connectivity",
                            "sma-crossover",
                            "log",
                            "telegram",
                            "maintain",
                        ]
                    },
                    "risk": {"accept_unprotected": True},
                    "strategies": {"sma": {"plugin": "sma-crossover"}},
                    "exchanges": {
                        "kraken": {"base_url": sim.base_url, "ws_url": sim.ws_url, "min_spacing_s": 0.0}
                    },
                    "checks": {
                        "staleness": {"threshold_s": 0.6, "startup_grace_s": 5.0, "interval_s": 0.1},
                        "api-connectivity": {
                            "interval_s": 0.2,
                            "check_balance": False,
                            "call_timeout_s": 2.0,
                        },
                    },
                    "monitoring": {"round_interval_s": 0.1},
                    "notifiers": {"telegram": {"base_url": fake.base_url, "timeout_s": 0.5}},
                    "notifications": {"heartbeat_interval_s": 0, "retry_wait_s": 0.05, "send_timeout_s": 0.5},
                }
            )
            prepared = prepare(settings=settings)
            host = prepared.host
            store = StateStore(tmp_path)
            trading = TradingStateMachine(store=store)
            ctx = BotContext(
                settings=settings,
                plugins=host,
                state_dir=tmp_path,
                store=store,
                trading=trading,
                extras={"secrets": SecretStore(SECRETS)},
            )
            exchange = host.build("exchange", "kraken", settings.plugin_config("exchange", "kraken"), ctx)
            await exchange.start()
            ctx.exchange = exchange
            ctx.portfolio = Portfolio(store=store, quote="USD")
            metrics = BotMetrics()
            metrics.attach(ctx)
            ctx.health = health = HealthMonitor.from_context(ctx)
            dispatcher = install_notifications(ctx)
            await dispatcher.start()

            async def on_change(change: Any) -> None:
                await host.broadcast("tradebot_trading_state_changed", change=change)

            trading.listeners.append(on_change)
            comp = host.component("strategy", "sma-crossover")
            strategy = host.call(
                comp.plugin,
                "factory",
                comp.spec.factory,
                settings.plugin_config("strategy-instance", "sma"),
                StrategyContext(name="sma", pairs=["BTC/USD"]),
            )
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100)
            processed = 0

            async def pump() -> None:
                async for event in exchange.market_data(["BTC/USD"]):
                    with tracing.market_event(event):
                        health.on_market_event(event)
                        if isinstance(event, Ticker):
                            ctx.portfolio.mark(event)
                        if not queue.full():
                            queue.put_nowait((event, tracing.capture()))

            async def consume() -> None:
                nonlocal processed
                while True:
                    event, trace_ctx = await queue.get()
                    with tracing.resume(trace_ctx):
                        signals = await host.acall(comp.plugin, "on_event", strategy.on_event, event)
                        with tracing.span("risk_gate", signals=len(signals or ())):
                            allowed = trading.allows_new_exposure
                        if allowed and processed % 5 == 0:
                            await exchange.ticker([event.pair])  # price check before an order
                    processed += 1

            server = HttpServer(ctx, HttpSettings(port=0))
            port = await server.start()
            tasks = [
                asyncio.create_task(c)
                for c in (health.run(), pump(), consume(), metrics.run_loop_monitor(0.1))
            ]
            await host.broadcast("tradebot_startup", context=ctx)
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    async with http.get(f"{base}/readyz") as r:
                        return r.status == 200

                await _until(ready)
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200 and (await r.json())["status"] == "alive"

                # /metrics parses and holds the bot's metrics
                await _until(lambda: asyncio.sleep(0, processed > 10))
                async with http.get(f"{base}/metrics") as r:
                    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                    text = await r.text()
                families = {f.name: f for f in text_string_to_metric_families(text)}
                for name in (
                    "tradebot_trading_state",
                    "tradebot_trading_severity",
                    "tradebot_breaker_state",
                    "tradebot_ratelimiter_fill",
                    "tradebot_api_calls",
                    "tradebot_check_status",
                    "tradebot_market_events",
                    "tradebot_exchange_request_duration_seconds",
                    "tradebot_event_loop_lag_seconds",
                    "tradebot_process_rss_bytes",
                    "tradebot_process_cpu_time_seconds",
                    "tradebot_pnl_realized",
                    "tradebot_equity",
                    "tradebot_notifications",
                    "tradebot_uptime_seconds",
                ):
                    assert name in families, (name, sorted(families))
                checks = {s.labels["check"]: s.value for s in families["tradebot_check_status"].samples}
                assert checks.get("staleness") == 0.0
                states = {s.labels["state"]: s.value for s in families["tradebot_trading_state"].samples}
                assert states == {"active": 1.0, "reducing": 0.0, "halted": 0.0}

                # control endpoints: no token, wrong token, right token
                async with http.post(f"{base}/halt") as r:
                    assert r.status == 401
                async with http.post(f"{base}/halt", headers={"Authorization": "Bearer nope"}) as r:
                    assert r.status == 401
                assert trading.state is TradingState.ACTIVE
                auth = {"Authorization": f"Bearer {CONTROL}"}
                async with http.post(
                    f"{base}/halt", headers=auth, json={"reason": "maintenance window"}
                ) as r:
                    assert r.status == 200 and (await r.json())["state"] == "halted"
                await _until(lambda: asyncio.sleep(0, any("trading HALTED" in t for t in fake.texts())))
                assert any("maintenance window" in t for t in fake.texts())

                # Telegram is down: resuming and trading go on without waiting for it
                await fake.stop()
                before = processed
                started = time.perf_counter()
                async with http.post(f"{base}/resume", headers=auth) as r:
                    assert r.status == 200 and (await r.json())["state"] == "active"
                assert time.perf_counter() - started < 0.5
                await _until(lambda: asyncio.sleep(0, processed > before + 10))
                assert dispatcher.outboxes["telegram"].stats.sent >= 2

                # /status shows state, health, PnL, and never a secret
                async with http.get(f"{base}/status") as r:
                    status_text = await r.text()
                    status = await r.json()
                assert status["trading"]["state"] == "active" and status["trading"]["source"] == "http"
                assert status["health"]["checks"]["staleness"]["status"] == "ok"
                assert "pnl" in status and "restarts" in status and "uptime_s" in status

                # the feed goes stale: not ready
                sim.faults.add("stale")

                async def not_ready() -> bool:
                    async with http.get(f"{base}/readyz") as r:
                        return r.status == 503 and any("staleness" in x for x in (await r.json())["reasons"])

                await _until(not_ready)

            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await host.broadcast("tradebot_shutdown", context=ctx, reason="test over")
            await dispatcher.stop()
            await server.stop()
            await exchange.close()
            metrics.shutdown()
            store.close()
    finally:
        for task in tasks:
            task.cancel()
        await fake.stop()
        for h in handlers:
            logging.getLogger().removeHandler(h)
        spans = list(exporter.get_finished_spans())
        telemetry.shutdown_tracing()

    # one trace crosses the exchange, a strategy and a check plugin
    by_trace: dict[int, set[str]] = {}
    for s in spans:
        plugin = (s.attributes or {}).get("tradebot.plugin")
        if plugin:
            by_trace.setdefault(s.context.trace_id, set()).add(str(plugin))
    assert any({"kraken", "sma-crossover", "staleness"} <= plugins for plugins in by_trace.values()), by_trace
    roots = [s for s in spans if s.name == "market_event"]
    assert roots and all(s.parent is None for s in roots)

    # no secret anywhere: logs, spans, /status
    span_text = " ".join(
        f"{s.name} {dict(s.attributes or {})} {[(e.name, dict(e.attributes or {})) for e in s.events]}"
        for s in spans
    )
    for secret in SECRETS.values():
        if len(secret) < 4:
            continue
        assert secret not in log_stream.getvalue()
        assert secret not in span_text
        assert secret not in status_text
