"""Market rules through the assembled bot: orders are rounded or refused before they are sent."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions
from tradebot.app.config import settings_from_dict
from tradebot.core.markets import PairStatus
from tradebot.core.risk import RejectReason
from tradebot.simulator import run_simulator


@pytest.mark.timeout(90)
async def test_live_run_rounds_to_the_lot_and_refuses_below_minimum_or_by_status_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_simulator(seed=3, tick_interval_s=0.05) as sim:
        sim.catalog.set_status("SOL/USD", "cancel_only")
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        fast = {"fast": 2, "slow": 3}
        config = {
            "bot": {"state_dir": "state", "exchange": "kraken", "pairs": ["BTC/USD", "ETH/USD", "SOL/USD"]},
            "http": {"enabled": False},
            "risk": {"max_orders_per_minute": 1000},
            "exchanges": {"kraken": {"base_url": sim.base_url, "ws_url": sim.ws_url}},
            "strategies": {
                # ten decimals: Kraken takes eight for BTC, so unrounded every order would be refused
                "btc": {
                    "plugin": "sma-crossover",
                    "pairs": ["BTC/USD"],
                    "params": {**fast, "volume": "0.0123456789"},
                },
                # half of ETH's minimum (0.002)
                "eth": {
                    "plugin": "sma-crossover",
                    "pairs": ["ETH/USD"],
                    "params": {**fast, "volume": "0.001"},
                },
                "sol": {"plugin": "sma-crossover", "pairs": ["SOL/USD"], "params": fast},
            },
        }
        settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
        bot = Bot(prepare(settings=settings), RunOptions(duration_s=6))
        with caplog.at_level(logging.DEBUG, logger="tradebot.risk"):
            summary = await bot.run()
        state = sim.state()
    assert summary.exit_code == 0, summary.stop_reason
    assert bot.context is not None
    btc = [o for o in sim.account.orders.values() if o.pair.wsname == "BTC/USD"]
    assert btc, "the BTC strategy placed nothing"
    assert all(o.volume == D("0.01234567") for o in btc)  # rounded down to the lot before sending
    assert all(o.pair.wsname == "BTC/USD" for o in sim.account.orders.values()), state["orders_created"]
    assert summary.refused_when_sent == 0  # nothing the exchange refused: the gate refused first
    gate = bot.context.extras["risk"]
    assert gate.rejections[RejectReason.MARKET_RULES] >= 2
    refusals = [r.getMessage() for r in caplog.records if r.name == "tradebot.risk"]
    assert any("ETH/USD's minimum order volume 0.002" in m for m in refusals), refusals
    assert any("SOL/USD is cancel_only on the exchange" in m for m in refusals), refusals
    assert summary.orders_rejected >= gate.rejections[RejectReason.MARKET_RULES]


@pytest.mark.timeout(60)
async def test_grid_whose_spacing_loses_to_fees_does_not_start(tmp_path: Path) -> None:
    config = {
        "bot": {"state_dir": "state", "pairs": ["BTC/USD"]},
        "http": {"enabled": False},
        "strategies": {"grid": {"plugin": "grid", "params": {"spacing_pct": "0.1"}}},
    }
    settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
    summary = await Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=5)).run()
    assert summary.exit_code != 0 and not summary.started
    assert "spacing_pct 0.1%" in summary.stop_reason and "0.8004%" in summary.stop_reason, summary.stop_reason


@pytest.mark.timeout(90)
async def test_dust_is_reported_and_a_close_halt_completes_with_it(tmp_path: Path) -> None:
    import asyncio
    import json
    import urllib.request

    from tradebot.cli.health import read_health, render
    from tradebot.core.models import OrderRequest, OrderType, Side
    from tradebot.services.http_server import HttpServer, HttpSettings

    config = {
        "bot": {"state_dir": "state", "pairs": ["BTC/USD", "ETH/USD"]},
        "http": {"enabled": False},
        "halt": {"position_policy": "close"},
        # a strategy that does not trade in this test's time: the orders are the test's own
        "strategies": {"idle": {"plugin": "sma-crossover", "params": {"fast": 500, "slow": 1000}}},
    }
    settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
    bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=60))
    run = asyncio.create_task(bot.run())
    for _ in range(400):
        ctx = bot.context
        if (
            ctx is not None
            and ctx.portfolio is not None
            and ctx.portfolio.mark_price("ETH/USD")
            and ctx.portfolio.mark_price("BTC/USD")
        ):
            break
        await asyncio.sleep(0.05)
    ctx = bot.context
    assert ctx is not None
    for cid, pair, side, volume in [
        ("b1", "BTC/USD", Side.BUY, "0.01"),
        ("b2", "BTC/USD", Side.SELL, "0.00998"),  # leaves 0.00002, below BTC's minimum 0.00005
        ("e1", "ETH/USD", Side.BUY, "0.5"),
    ]:
        order = await ctx.executor.submit(OrderRequest(pair, side, OrderType.MARKET, D(volume), cid))
        assert order.status.value == "closed", order
    assert ctx.portfolio.position("BTC/USD").volume == D("0.00002")

    server = HttpServer(ctx, HttpSettings(port=0))  # the bot's own context, as the bot serves it
    port = await server.start()
    try:
        url = f"http://127.0.0.1:{port}/status"
        status = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(url, timeout=5).read()))
    finally:
        await server.stop()
    assert status["dust"] == {"BTC/USD": "0.00002"}, status.get("dust")

    await ctx.trading.halt("test: close with dust", "test")
    summary = await asyncio.wait_for(run, 30)
    assert "close policy completed" in summary.stop_reason, summary.stop_reason
    assert "dust left" in summary.stop_reason and "BTC/USD 0.00002" in summary.stop_reason
    assert summary.dust == {"BTC/USD": D("0.00002")}
    assert "dust (below the pair's minimum order, cannot be traded): BTC/USD 0.00002" in summary.render()
    assert ctx.portfolio.position("ETH/USD").volume == 0
    health = read_health(tmp_path / "state")
    assert health["dust"] == {"BTC/USD": "0.00002"}
    assert "dust     BTC/USD 0.00002" in render(health)


@pytest.mark.timeout(90)
async def test_paper_run_rounds_and_refuses_with_the_simulators_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fast = {"fast": 2, "slow": 3}
    config = {
        "bot": {"state_dir": "state", "pairs": ["BTC/USD", "ETH/USD"]},
        "http": {"enabled": False},
        "risk": {"max_orders_per_minute": 1000},
        "strategies": {
            "btc": {
                "plugin": "sma-crossover",
                "pairs": ["BTC/USD"],
                "params": {**fast, "volume": "0.0123456789"},
            },
            "eth": {"plugin": "sma-crossover", "pairs": ["ETH/USD"], "params": {**fast, "volume": "0.001"}},
        },
    }
    settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
    bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=5))
    with caplog.at_level(logging.DEBUG, logger="tradebot.risk"):
        summary = await bot.run()
    assert summary.exit_code == 0, summary.stop_reason
    assert bot.context is not None
    from tradebot.core.store import StateStore

    store = StateStore(tmp_path / "state")
    try:
        journal = store.orders()
    finally:
        store.close()
    assert journal, "nothing was sent"
    assert {e.pair for e in journal} == {"BTC/USD"}  # no ETH order below its minimum left the bot
    assert all(e.volume == D("0.01234567") and e.status.value == "closed" for e in journal)
    assert bot.context.extras["risk"].rejections[RejectReason.MARKET_RULES] >= 1
    assert any("ETH/USD's minimum order volume 0.002" in r.getMessage() for r in caplog.records)


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


@pytest.mark.timeout(90)
async def test_a_pair_status_changed_during_the_run_is_picked_up_at_the_next_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator turns BTC/USD ``cancel_only`` while the bot trades it: at its next
    market-rules refresh (``[bot] markets_refresh_s``) the bot knows, and from then on the
    risk gate refuses BTC/USD orders before sending (no AddOrder reaches the simulator);
    back ``online``, the bot trades it again."""
    async with run_simulator(seed=3, tick_interval_s=0.05, rate_tier="pro") as sim:
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        config = {
            "bot": {
                "state_dir": "state",
                "exchange": "kraken",
                "pairs": ["BTC/USD"],
                "markets_refresh_s": 0.3,
            },
            "http": {"enabled": False},
            "risk": {"max_orders_per_minute": 1000},
            "checks": {"volatility": {"max_change_pct": 90.0}},
            "exchanges": {
                "kraken": {
                    "base_url": sim.base_url,
                    "ws_url": sim.ws_url,
                    "min_spacing_s": 0.0,
                    "rate_tier": "pro",
                    "markets_refresh_s": 0.1,
                }
            },
            "strategies": {
                "btc": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.001"}}
            },
        }
        settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
        bot = Bot(prepare(settings=settings), RunOptions(duration_s=60))
        run = asyncio.create_task(bot.run())
        try:
            await _until(lambda: len(sim.account.orders) >= 1, 30, "the bot placed no order")
            ctx = bot.context
            assert ctx is not None
            book, gate = ctx.extras["markets"], ctx.extras["risk"]
            assert book.rules("BTC/USD").status is PairStatus.ONLINE
            refreshes = book.refreshed

            sim.catalog.set_status("BTC/USD", "cancel_only")
            await _until(
                lambda: book.rules("BTC/USD").status is PairStatus.CANCEL_ONLY, 5, "status not picked up"
            )
            assert book.refreshed > refreshes
            await asyncio.sleep(0.3)  # an order that passed the gate just before: on the wire now
            sent, refused = sim.stats.requests["AddOrder"], gate.rejections[RejectReason.MARKET_RULES]
            await _until(
                lambda: gate.rejections[RejectReason.MARKET_RULES] >= refused + 2, 20, "no signal refused"
            )
            assert sim.stats.requests["AddOrder"] == sent  # refused before sending

            orders = len(sim.account.orders)
            sim.catalog.set_status("BTC/USD", "online")
            await _until(lambda: book.rules("BTC/USD").status is PairStatus.ONLINE, 5, "online not picked up")
            await _until(
                lambda: len(sim.account.orders) > orders, 20, "no order after the pair came back online"
            )
        finally:
            bot.request_stop("test over")
            summary = await asyncio.wait_for(run, 30)
    assert summary.exit_code == 0, summary.stop_reason
    assert summary.trading_state == "active"


@pytest.mark.timeout(90)
async def test_an_order_the_exchange_refuses_by_pair_status_is_recorded_rejected_and_trading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange turns the pair ``cancel_only`` before the bot's next refresh: the order
    that reaches it is refused (``EService:Market in cancel_only mode``), recorded REJECTED
    with that reason, counted as refused when sent, never placed, and the run goes on."""
    async with run_simulator(seed=3, tick_interval_s=0.05, rate_tier="pro") as sim:
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        config = {
            "bot": {
                "state_dir": "state",
                "exchange": "kraken",
                "pairs": ["BTC/USD"],
            },  # rules refreshed every 60 s
            "http": {"enabled": False},
            "risk": {"max_orders_per_minute": 1000},
            "checks": {"volatility": {"max_change_pct": 90.0}},
            "exchanges": {
                "kraken": {
                    "base_url": sim.base_url,
                    "ws_url": sim.ws_url,
                    "min_spacing_s": 0.0,
                    "rate_tier": "pro",
                }
            },
            "strategies": {
                "btc": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.001"}}
            },
        }
        settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
        bot = Bot(prepare(settings=settings), RunOptions(duration_s=60))
        run = asyncio.create_task(bot.run())
        try:
            await _until(lambda: len(sim.account.orders) >= 1, 30, "the bot placed no order")
            ctx = bot.context
            assert ctx is not None
            sim.catalog.set_status("BTC/USD", "cancel_only")
            placed = len(sim.account.orders)

            def refused() -> list[Any]:
                return [e for e in ctx.store.orders() if e.status.value == "rejected"]

            await _until(lambda: bool(refused()), 20, "no order reached the exchange")
            entry = refused()[0]
            assert (
                ctx.extras["markets"].rules("BTC/USD").status is PairStatus.ONLINE
            )  # the bot did not know yet
            assert sim.stats.add_order_calls.get(entry.client_order_id) == 1  # refused once, not retried
        finally:
            bot.request_stop("test over")
            summary = await asyncio.wait_for(run, 30)
        assert len(sim.account.orders) == placed  # the exchange placed none of them
    assert "MarketClosed" in (entry.last_error or "") and "cancel_only" in (entry.last_error or ""), (
        entry.last_error
    )
    assert summary.exit_code == 0, summary.stop_reason
    assert summary.refused_when_sent >= 1 and summary.trading_state == "active"
    assert "refused when sent" in summary.render()
