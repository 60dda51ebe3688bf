"""The HALT gate sits at the wire: no order reaches the exchange after a HALT is acknowledged,
not even one the risk gate approved just before and that waited for its turn on the private
API; a HALT sent while the bot is still starting is applied before its first order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions
from tradebot.app.config import settings_from_dict
from tradebot.core.executor import OrderExecutor
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side, Ticker, TradingState
from tradebot.core.portfolio import Portfolio
from tradebot.core.store import StateStore
from tradebot.core.trading_state import OrderWireGate, TradingStateMachine
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.exchanges.paper import PaperExchange
from tradebot.services.control import apply_command, bot_running, send_command
from tradebot.simulator import Simulator, run_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(
        seed=5, tick_interval_s=0.02, heartbeat_s=0.2, volatility=0.002, rate_tier="pro"
    ) as simulator:
        yield simulator


def _received_add_orders(sim: Simulator) -> int:
    return sim.stats.requests["AddOrder"]


async def test_an_order_queued_behind_a_private_request_is_not_sent_after_the_halt_is_acknowledged(
    sim: Simulator, tmp_path: Path
) -> None:
    ex = KrakenExchange(
        KrakenConfig(
            base_url=sim.base_url,
            ws_url=sim.ws_url,
            min_spacing_s=0.0,
            request_timeout_s=5.0,
            order_lookup_delay_s=0.0,
            rate_tier="pro",
        ),
        api_key=sim.api_key,
        api_secret=sim.api_secret,
        state_dir=tmp_path,
    )
    store = StateStore(tmp_path)
    trading = TradingStateMachine(store=store)
    portfolio = Portfolio(store)
    executor = OrderExecutor(ex, store, portfolio, wire_gate=OrderWireGate(trading), not_found_grace_s=0.2)
    await ex.start()
    try:
        await executor.submit(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.002"), "held-0"))
        for _ in range(100):  # the fill is tracked: a position the HALT may still reduce
            await executor.poll_once()
            if portfolio.position("BTC/USD").volume == D("0.002"):
                break
            await asyncio.sleep(0.02)
        for attempt in range(6):
            sim.faults.add("latency=0.8,on=Balance,n=1")  # a slow private request holds the turn
            balances_seen = sim.stats.requests["Balance"]
            balance = asyncio.ensure_future(ex.rest.private("Balance"))
            while sim.stats.requests["Balance"] == balances_seen:  # it has the turn and waits for its answer
                await asyncio.sleep(0.01)
            cid = f"queued-{attempt}"
            order = asyncio.ensure_future(
                executor.submit(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.002"), cid))
            )
            reducing = asyncio.ensure_future(
                executor.submit(
                    OrderRequest("BTC/USD", Side.SELL, OrderType.MARKET, D("0.001"), f"reduce-{attempt}")
                )
            )
            await asyncio.sleep(0.1)  # both wait for the turn now
            assert not {cid, f"reduce-{attempt}"} & set(sim.stats.add_order_calls), (
                "not queued: nothing tested"
            )
            result = await apply_command(trading, "halt", "operator halt", "operator:test")
            assert result.ok and trading.state is TradingState.HALTED
            received_at_ack = _received_add_orders(sim)
            cids_at_ack = set(sim.stats.add_order_calls)
            info = await order
            reduced = await reducing
            await balance
            after_ack = set(sim.stats.add_order_calls) - cids_at_ack
            # only the order that reduces the position may still go; the buy never reaches the exchange
            assert after_ack <= {f"reduce-{attempt}"}, after_ack
            assert _received_add_orders(sim) - received_at_ack == len(after_ack)
            assert info.status is OrderStatus.REJECTED and cid not in sim.stats.add_order_calls
            assert "HALTED" in store.get_order(cid).last_error  # type: ignore[union-attr]
            assert reduced.status is not OrderStatus.REJECTED
            await apply_command(trading, "resume", "next try", "operator:test")
            for _ in range(100):
                await executor.poll_once()
                if not executor.working_orders():
                    break
                await asyncio.sleep(0.02)
            buy = await executor.submit(
                OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.001"), f"refill-{attempt}")
            )
            assert buy.status is not OrderStatus.REJECTED
            for _ in range(100):
                await executor.poll_once()
                if not executor.working_orders():
                    break
                await asyncio.sleep(0.02)
    finally:
        await ex.close()
        store.close()


async def test_paper_exchange_checks_the_trading_state_where_it_takes_the_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    try:
        trading = TradingStateMachine(store=store)
        paper = PaperExchange()
        paper.on_ticker(Ticker("BTC/USD", D(100), D(101), D(100), D(1), trading.since))
        portfolio = Portfolio(store, starting_cash=D(10000))
        executor = OrderExecutor(paper, store, portfolio, wire_gate=OrderWireGate(trading))
        await trading.halt("test", "operator:test")
        info = await executor.submit(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D(1), "p-1"))
        assert info.status is OrderStatus.REJECTED and await paper.order_by_client_id("p-1") is None
    finally:
        store.close()


def _bot_config(sim: Simulator, tmp_path: Path) -> dict[str, Any]:
    return {
        "bot": {
            "id": "wire",
            "state_dir": str(tmp_path / "state"),
            "exchange": "kraken",
            "pairs": ["BTC/USD"],
        },
        "http": {"enabled": False},
        "exchanges": {"kraken": {"base_url": sim.base_url, "ws_url": sim.ws_url, "min_spacing_s": 0.0}},
        "strategies": {
            "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.001"}}
        },
    }


@pytest.mark.timeout(60)
async def test_a_halt_sent_while_the_bot_starts_is_applied_before_its_first_order(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
    monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
    sim.faults.add("latency=1.5,on=Balance,n=1")  # start-up reads balances: a slow start
    settings = settings_from_dict(_bot_config(sim, tmp_path), source=str(tmp_path / "tradebot.toml"))
    state = tmp_path / "state"
    answers: list[Any] = []

    def operator() -> None:
        deadline = time.monotonic() + 20
        while not bot_running(state) and time.monotonic() < deadline:
            time.sleep(0.01)
        answers.append(send_command(state, "halt", "halt while starting", timeout_s=10))

    thread = threading.Thread(target=operator)
    thread.start()
    summary = await Bot(prepare(settings=settings), RunOptions(duration_s=3)).run()
    await asyncio.to_thread(thread.join)
    assert answers and answers[0].ok and answers[0].via == "bot", answers
    assert summary.trading_state == "halted" and "halt while starting" in summary.trading_reason
    assert summary.signals > 0, "the strategy never signalled: nothing was tested"
    assert _received_add_orders(sim) == 0, "an order left before the HALT sent during start-up"
