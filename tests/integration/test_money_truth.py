"""Money truth through the assembled bot: cash, positions and orders agree with the exchange
across restarts, strategies read their positions from the portfolio, and a spot bot never
sells what it does not hold.

Every test runs the real :class:`Bot` on the paper exchange (prices from the built-in
simulator) or live-style against the simulator, with the real executor, risk gate and store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import BALANCE_CHECK_KEY, Bot, RunOptions
from tradebot.app.config import settings_from_dict
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side, Signal, Ticker
from tradebot.core.plugins import unwrap
from tradebot.core.store import JournalEntry, StateStore
from tradebot.exchanges.paper import PaperConfig, PaperExchange

PAIR = "BTC/USD"


IDLE = {"idle": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 100000}}}
"""A strategy that does not trade within a test (a bot without any strategy stops at once)."""


def config(tmp_path: Path, strategies: dict[str, Any] | None = None, **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "bot": {"state_dir": str(tmp_path / "state"), "pairs": [PAIR]},
        "http": {"enabled": False},
        "strategies": strategies or IDLE,
        "checks": {"staleness": {"threshold_s": 5.0}},
        **extra,
    }
    return settings_from_dict(raw, source=str(tmp_path / "tradebot.toml"))


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def paper_file(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "state" / "paper-exchange.json").read_text())
    return data


def balance_record(tmp_path: Path) -> dict[str, Any]:
    with StateStore(tmp_path / "state") as store:
        raw = store.get_kv(BALANCE_CHECK_KEY)
    assert raw is not None
    record: dict[str, Any] = json.loads(raw)
    return record


async def start(settings: Any, duration_s: float = 30.0) -> tuple[Bot, asyncio.Task[Any]]:
    bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=duration_s))
    run = asyncio.create_task(bot.run())
    await wait_for(
        lambda: run.done() or (bot.context is not None and "strategy_runner" in bot.context.extras),
        30,
        "the bot to start",
    )
    assert not run.done(), run.result().stop_reason
    return bot, run


async def stop(bot: Bot, run: asyncio.Task[Any]) -> Any:
    bot.request_stop("test done")
    return await asyncio.wait_for(run, 30)


async def leave_a_fill_unrecorded(tmp_path: Path, volume: D, price: D, strategy: str = "sma") -> str:
    """The state a kill leaves between "order filled on the exchange" and "fill recorded":
    the journal holds the order as sent (attempt made durable before the send, as the
    executor does), the paper exchange has filled it and moved its balances."""
    state = tmp_path / "state"
    cid = "killed-before-recording"
    now = datetime.now(UTC)
    with StateStore(state) as store:
        store.journal_order(
            JournalEntry(
                cid,
                PAIR,
                Side.BUY,
                OrderType.MARKET,
                volume,
                OrderStatus.PENDING,
                now,
                now,
                strategy=strategy,
                reason="golden cross",
            )
        )
        store.update_order(cid, attempts=1, sent_at=now)
    exchange = PaperExchange(PaperConfig(), state_path=state / PaperConfig().state_file)
    await exchange.start()
    try:
        exchange.on_ticker(Ticker(PAIR, price, price + 1, price, D(1), now))
        info = await exchange.place_order(OrderRequest(PAIR, Side.BUY, OrderType.MARKET, volume, cid))
        assert info.status is OrderStatus.CLOSED
    finally:
        await exchange.close()
    return cid


# --- restart after a fill the bot did not record ------------------------------------------------


@pytest.mark.timeout(90)
async def test_restart_after_a_fill_made_while_down_matches_the_exchange(tmp_path: Path) -> None:
    settings = config(tmp_path, checks={"drawdown": {"interval_s": 0.1}, "staleness": {"threshold_s": 5.0}})
    bot, run = await start(settings)
    await stop(bot, run)  # a first run creates the state: starting cash = the exchange's 10000 USD
    with StateStore(tmp_path / "state") as store:
        assert store.get_kv("portfolio.starting_cash") == "10000"

    cid = await leave_a_fill_unrecorded(tmp_path, D("0.05"), D(60000))
    paper = paper_file(tmp_path)
    usd, btc = D(paper["balances"]["USD"]), D(paper["balances"]["BTC"])
    assert usd < D(10000) - D(3000)  # the buy was paid on the exchange

    bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None
    # reconciled first, then compared: the fill is charged once
    assert ctx.trading.state.value == "active", ctx.trading.reason
    assert ctx.portfolio.cash == usd and ctx.portfolio.position(PAIR).volume == btc == D("0.05")
    assert ctx.portfolio.strategy_position("sma", PAIR).volume == D("0.05")  # the order's strategy owns it
    assert ctx.store.get_order(cid).status is OrderStatus.CLOSED
    record = balance_record(tmp_path)
    assert record["ok"] and D(record["cash"]) == D(record["exchange"]["USD"]) == usd
    # the running bot's drawdown trigger keeps the last price of what it holds (for a restart)
    await wait_for(
        lambda: PAIR in (ctx.store.get_kv("checks.drawdown.marks") or ""), 10, "the drawdown trigger's marks"
    )
    summary = await stop(bot, run)
    assert summary.starting_cash == D(10000) and summary.open_positions == {PAIR: D("0.05")}
    assert summary.fees_paid == 0 and summary.lifetime_fees_paid > 0  # the fill was made before this run
    text = summary.render()
    assert "positions left open: BTC/USD 0.05" in text and "starting cash 10000.00" in text

    # rebuilding from the recorded fills reproduces the portfolio exactly
    from tradebot.core.portfolio import Portfolio

    with StateStore(tmp_path / "state") as store:
        pf = Portfolio(store)
        before = (pf.cash, pf.positions(), pf.realized_pnl, pf.strategy_positions())
        pf.rebuild_from_fills()
        assert (pf.cash, pf.positions(), pf.realized_pnl, pf.strategy_positions()) == before


@pytest.mark.timeout(90)
async def test_exchange_holding_less_than_the_journal_starts_halted_with_both_figures(tmp_path: Path) -> None:
    settings = config(tmp_path)
    bot, run = await start(settings)
    await stop(bot, run)
    await leave_a_fill_unrecorded(tmp_path, D("0.05"), D(60000))
    bot, run = await start(settings)
    await stop(bot, run)
    # the coins leave the account behind the bot's back (or a backup of another account is used)
    path = tmp_path / "state" / "paper-exchange.json"
    data = json.loads(path.read_text())
    data["balances"]["BTC"] = "0.01"
    data["balances"]["USD"] = "100"
    path.write_text(json.dumps(data))

    bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None
    assert ctx.trading.state.value == "halted"
    reason = ctx.trading.reason
    assert "BTC: the bot holds 0.05 by its journal but the exchange holds 0.01" in reason
    assert "USD: the bot's cash is" in reason and "but the exchange holds 100" in reason
    assert ctx.trading.source == "balance-check"
    orders_before = len(ctx.store.orders())
    await asyncio.sleep(0.5)
    assert len(ctx.store.orders()) == orders_before  # nothing traded
    summary = await stop(bot, run)
    assert summary.trading_state == "halted" and "by its journal" in summary.render()


@pytest.mark.timeout(120)
async def test_balance_check_halt_keeps_positions_even_with_the_close_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``close`` would sell the 0.05 BTC the journal says the bot holds; but the account does not
    match the journal, so those coins may be the user's: the HALT keeps every position, says
    why, and holds over a restart. Once a person resumes, a later HALT closes as configured."""
    settings = config(
        tmp_path,
        halt={"position_policy": "close"},
        policies={"close": {"settle_s": 0.5, "poll_s": 0.05, "max_attempts": 3}},
    )
    bot, run = await start(settings)
    await stop(bot, run)
    await leave_a_fill_unrecorded(tmp_path, D("0.05"), D(60000))
    path = tmp_path / "state" / "paper-exchange.json"
    data = json.loads(path.read_text())
    data["balances"]["USD"] = "100"  # the BTC is there, the cash is not: the journal does not explain it
    path.write_text(json.dumps(data))

    for restart in range(2):
        with caplog.at_level(logging.WARNING):
            bot, run = await start(settings)
            ctx = bot.context
            assert ctx is not None
            assert ctx.trading.state.value == "halted" and ctx.trading.source == "balance-check"
            policies = ctx.extras["halt_policy"]
            await wait_for(lambda: bool(policies.outcomes), 20, "the HALT's position policy outcome")
            await asyncio.sleep(1.0)  # time for a flatten, had one been started
        outcome = policies.outcomes[-1]
        assert outcome.policy == "maintain" and outcome.remaining == {PAIR: D("0.05")}, outcome
        assert "instead of the configured 'close'" in outcome.message
        assert "do not match the bot's journal" in outcome.message
        assert ctx.store.orders() == [] or all(
            e.client_order_id == "killed-before-recording" for e in ctx.store.orders()
        )
        assert not run.done(), "the bot stopped as if a close had completed"
        assert ctx.portfolio.position(PAIR).volume == D("0.05")
        logged = [r.getMessage() for r in caplog.records if r.name == "tradebot.policy"]
        assert any("positions kept as they are instead of the configured 'close'" in m for m in logged), (
            logged
        )
        if restart == 0:
            await stop(bot, run)
            caplog.clear()
    assert D(paper_file(tmp_path)["balances"]["BTC"]) == D("0.05")  # nothing sold on the exchange

    # a person checked the account and resumes; a later HALT applies the configured policy
    await ctx.trading.resume("account checked", "operator")
    assert policies.untrusted is None
    await ctx.trading.halt("test HALT after the resume", "operator")
    summary = await asyncio.wait_for(run, 30)  # a completed close ends the run
    assert ctx.portfolio.position(PAIR).volume == 0
    assert policies.outcomes[-1].policy == "close" and policies.outcomes[-1].done
    assert summary.exit_code == 0


@pytest.mark.timeout(90)
async def test_a_reduce_halt_cuts_the_holders_positions_with_the_bots_own_order_ids(tmp_path: Path) -> None:
    """The ``reduce`` policy's cut is the bot's order (its client id says so, for a rebuild from the
    exchange) and comes off the strategy holding the pair, never booked as a short of its own."""
    from tradebot.core.order_ids import OrderIds

    settings = config(tmp_path, halt={"position_policy": "reduce"}, policies={"reduce": {"fraction": "0.5"}})
    bot, run = await start(settings)
    await stop(bot, run)
    await leave_a_fill_unrecorded(tmp_path, D("0.05"), D(60000), strategy="idle")
    bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None and ctx.trading.state.value == "active", ctx.trading.reason
    await wait_for(lambda: ctx.portfolio.mark_price(PAIR) is not None, 20, "a price")
    await ctx.trading.halt("test HALT", "operator")
    await wait_for(
        lambda: ctx.portfolio.position(PAIR).volume == D("0.025") and not ctx.store.non_final_orders(),
        20,
        "the reduce policy's cut to fill",
    )
    cuts = [e for e in ctx.store.orders() if e.client_order_id != "killed-before-recording"]
    await stop(bot, run)
    assert len(cuts) == 1 and cuts[0].side is Side.SELL and cuts[0].volume == D("0.025")
    assert OrderIds(settings.bot_id).is_ours(cuts[0].client_order_id)
    assert ctx.portfolio.strategy_positions() == {
        ("idle", PAIR): ctx.portfolio.strategy_position("idle", PAIR)
    }
    assert ctx.portfolio.strategy_position("idle", PAIR).volume == D("0.025")
    assert D(paper_file(tmp_path)["balances"]["BTC"]) == D("0.025")


@pytest.mark.timeout(60)
async def test_positions_the_journal_cannot_explain_are_reported_not_adopted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config(tmp_path, exchanges={"paper": {"starting_balances": {"USD": "10000", "BTC": "2"}}})
    with caplog.at_level(logging.WARNING, logger="tradebot.bot"):
        bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None
    assert ctx.trading.state.value == "active"
    assert ctx.portfolio.position(PAIR).volume == 0  # the user's 2 BTC are not the bot's
    assert any(
        "BTC: the exchange holds 2, 2 more than the bot's position 0" in r.getMessage()
        for r in caplog.records
    )
    await stop(bot, run)


@pytest.mark.timeout(90)
async def test_balances_that_cannot_be_read_after_a_restart_start_halted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradebot.simulator import run_simulator

    async with run_simulator(seed=3, tick_interval_s=0.05) as sim:
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        raw = {
            "bot": {"state_dir": str(tmp_path / "state"), "exchange": "kraken", "pairs": [PAIR]},
            "http": {"enabled": False},
            "exchanges": {
                "kraken": {
                    "base_url": sim.base_url,
                    "ws_url": sim.ws_url,
                    "retry_wait_initial_s": 0.01,
                    "retry_wait_max_s": 0.05,
                }
            },
            "strategies": IDLE,
        }
        settings = settings_from_dict(raw, source=str(tmp_path / "tradebot.toml"))
        summary = await Bot(prepare(settings=settings), RunOptions(duration_s=0.5)).run()
        assert summary.trading_state == "active", summary.trading_reason
        sim.faults.add("http5xx=503,on=Balance")
        await sim.sync_faults()
        summary = await Bot(prepare(settings=settings), RunOptions(duration_s=0.5)).run()
    assert summary.trading_state == "halted"
    assert "could not read the exchange's balances to verify" in summary.trading_reason
    assert not balance_record(tmp_path)["ok"]


@pytest.mark.timeout(120)
async def test_cash_and_position_equal_the_simulator_balances_after_buys_and_sells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot asks Kraken for every fee in the quote currency (``oflags=fciq``): the simulator
    charges a sell without that flag in the base currency, as Kraken documents, which would leave
    the exchange holding less BTC than the bot's position and more USD than its cash."""
    from tradebot.simulator import run_simulator

    async with run_simulator(seed=5, tick_interval_s=0.02, rate_tier="pro") as sim:
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        own_btc = sim.account.balances["BTC"]  # the user's coins, not the bot's
        raw = {
            "bot": {"state_dir": str(tmp_path / "state"), "exchange": "kraken", "pairs": [PAIR]},
            "http": {"enabled": False},
            "exchanges": {
                "kraken": {
                    "base_url": sim.base_url,
                    "ws_url": sim.ws_url,
                    "retry_wait_initial_s": 0.01,
                    "retry_wait_max_s": 0.05,
                }
            },
            "strategies": {
                "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.002"}}
            },
            "risk": {"max_orders_per_minute": 100000},
        }
        settings = settings_from_dict(raw, source=str(tmp_path / "tradebot.toml"))
        bot = Bot(prepare(settings=settings), RunOptions(duration_s=100))
        run = asyncio.create_task(bot.run())
        await wait_for(
            lambda: run.done() or (bot.context is not None and "strategy_runner" in bot.context.extras),
            30,
            "the bot to start",
        )
        ctx = bot.context
        assert ctx is not None and not run.done()

        def sold_and_settled() -> bool:
            sides = {f.side for f in ctx.store.fills()}
            return len(ctx.store.fills()) >= 4 and Side.SELL in sides and not ctx.store.non_final_orders()

        await wait_for(sold_and_settled, 60, "buys and sells to fill")
        summary = await stop(bot, run)
        sent = [o for o in sim.account.orders.values() if o.cl_ord_id is not None]
        balances = dict(sim.account.balances)
        # a restart's balance check agrees (the simulator keeps trading nothing for the bot meanwhile)
        restarted = await Bot(prepare(settings=settings), RunOptions(duration_s=0.5)).run()
    assert summary.fees_paid > 0
    assert ctx.portfolio.cash == balances["USD"]
    assert ctx.portfolio.position(PAIR).volume == balances["BTC"] - own_btc
    assert sent and all(o.oflags == frozenset({"fciq"}) for o in sent)
    assert restarted.trading_state == "active", restarted.trading_reason
    assert balance_record(tmp_path)["ok"]


# --- strategies read their positions from the portfolio ----------------------------------------


@pytest.mark.timeout(120)
async def test_restarted_strategies_see_their_positions_and_sell_them(tmp_path: Path) -> None:
    strategies = {
        "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.002"}},
        "rsi": {
            "plugin": "rsi-reversion",
            "params": {"period": 2, "oversold": 45, "overbought": 55, "volume": "0.003"},
        },
    }
    settings = config(tmp_path, strategies)
    held: dict[str, D] = {}
    for _ in range(3):  # a strategy may sell in the moment before the stop: run again until both hold
        bot, run = await start(settings, duration_s=100)
        ctx = bot.context
        assert ctx is not None

        def both_hold() -> bool:
            return (
                all(ctx.portfolio.strategy_position(n, PAIR).volume > 0 for n in strategies)
                and not ctx.store.non_final_orders()
            )

        await wait_for(both_hold, 60, "both strategies to hold a position")
        await stop(bot, run)
        held = {n: ctx.portfolio.strategy_position(n, PAIR).volume for n in strategies}
        if all(held.values()):
            break
    assert all(held.values()), held
    with StateStore(tmp_path / "state") as store:  # what the first run left, read after it stopped
        known = {e.client_order_id for e in store.orders()}

    bot, run = await start(settings, duration_s=100)
    ctx = bot.context
    assert ctx is not None
    runner = ctx.extras["strategy_runner"]
    for name in strategies:  # each strategy sees its own position from the persisted portfolio
        strategy = runner[name].strategy
        assert strategy.context.position(PAIR) == held[name] and strategy.holding(PAIR)

    def new_orders() -> dict[str, list[JournalEntry]]:
        by: dict[str, list[JournalEntry]] = {}
        for e in ctx.store.orders():
            if e.client_order_id not in known:
                by.setdefault(e.strategy, []).append(e)
        return by

    await wait_for(
        lambda: all(n in new_orders() for n in strategies), 60, "each strategy to trade after the restart"
    )
    after = new_orders()
    summary = await stop(bot, run)
    for name in strategies:
        first = after[name][0]
        # its first order after the restart sells the lot it held: it did not believe it was flat
        assert first.side is Side.SELL and first.volume == held[name], (name, first)
    assert summary.exit_code == 0


@pytest.mark.timeout(60)
async def test_a_refused_buy_leaves_the_strategy_flat(tmp_path: Path) -> None:
    # within max_position (a config check refuses a volume no order could ever have), but far
    # beyond the bot's cash and the notional cap: every buy is refused by the risk gate
    strategies = {"big": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "5"}}}
    settings = config(tmp_path, strategies, risk={"max_position": "10"})
    bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None
    risk = ctx.extras["risk"]
    strategy = ctx.extras["strategy_runner"]["big"].strategy
    await wait_for(lambda: sum(risk.rejections.values()) >= 1, 30, "the oversized buy to be refused")
    await asyncio.sleep(0.1)
    assert not strategy.holding(PAIR) and strategy.context.exposure(PAIR) == 0
    assert ctx.store.orders() == []
    await stop(bot, run)


# --- spot rules through the bot ------------------------------------------------------------------


class Scripted:
    """A strategy that emits prepared signals one tick at a time (not through its context)."""

    blocking = False

    def __init__(self, name: str, script: list[Signal]) -> None:
        self.name = name
        self.script = list(script)

    def on_event(self, event: object) -> Sequence[Signal]:
        if not isinstance(event, Ticker) or not self.script:
            return ()
        return (self.script.pop(0),)


class Seller:
    """A careless strategy that tries to sell on every tick, whatever it holds."""

    blocking = False

    def __init__(self, name: str, volume: D) -> None:
        self.name = name
        self.volume = volume

    def on_event(self, event: object) -> Sequence[Signal]:
        if isinstance(event, Ticker):
            return (Signal(self.name, PAIR, Side.SELL, self.volume, reason="sell anyway"),)
        return ()


@pytest.mark.timeout(90)
async def test_three_strategies_on_one_pair_never_sell_more_than_held(tmp_path: Path) -> None:
    """The account also holds 5 BTC of the user's own: none of them may ever be sold."""
    strategies = {
        "fast": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.002"}},
        "slow": {"plugin": "sma-crossover", "params": {"fast": 3, "slow": 5, "volume": "0.003"}},
        "rsi": {"plugin": "rsi-reversion", "params": {"period": 2, "oversold": 45, "overbought": 55}},
    }
    settings = config(
        tmp_path,
        strategies,
        exchanges={"paper": {"starting_balances": {"USD": "10000", "BTC": "5"}}},
        risk={"max_orders_per_minute": 100000},
    )
    bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None
    ctx.extras["strategy_runner"].add("careless", Seller("careless", D("0.004")), plugin="careless")
    paper = unwrap(ctx.exchange.inner)
    lowest_btc = D(5)
    lowest_position = D(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8
    while loop.time() < deadline:
        lowest_btc = min(lowest_btc, paper._balances.get("BTC", D(0)) - ctx.portfolio.position(PAIR).volume)
        lowest_position = min(
            lowest_position,
            ctx.portfolio.position(PAIR).volume,
            *(p.volume for p in ctx.portfolio.strategy_positions().values()),
        )
        await asyncio.sleep(0.01)
    fills = ctx.store.fills()
    strategy_of = {e.client_order_id: e.strategy for e in ctx.store.orders()}
    summary = await stop(bot, run)
    risk = ctx.extras["risk"]
    assert len(fills) >= 2 and summary.orders_placed >= 2
    assert lowest_position >= 0, "a position went short"
    assert lowest_btc >= 5, "the user's own coins were sold"
    bought: dict[str, D] = {}
    sold: dict[str, D] = {}
    for f in fills:
        book = bought if f.side is Side.BUY else sold
        name = strategy_of[f.client_order_id]
        book[name] = book.get(name, D(0)) + f.volume
    for name, volume in sold.items():
        assert volume <= bought.get(name, D(0)), f"{name} sold {volume} but bought {bought.get(name)}"
    assert "careless" not in sold  # it never held anything of its own
    assert {c.value for c in risk.rejections} & {"no_short", "strategy_holdings"}


@pytest.mark.timeout(90)
async def test_spot_sell_without_holdings_and_cheap_limit_sell_over_the_cap_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config(tmp_path, risk={"max_orders_per_minute": 100000})
    bot, run = await start(settings)
    ctx = bot.context
    assert ctx is not None
    await wait_for(lambda: ctx.portfolio.mark_price(PAIR) is not None, 20, "a price")
    mark = ctx.portfolio.mark_price(PAIR)
    assert mark is not None
    import attrs

    risk = ctx.extras["risk"]
    cap = (mark * D("0.015")).quantize(D(1))
    risk.limits = attrs.evolve(risk.limits, max_notional_per_order=cap)
    script = [
        Signal("scripted", PAIR, Side.SELL, D("0.01"), reason="sell what is not held"),
        Signal("scripted", PAIR, Side.BUY, D("0.01")),
        Signal("scripted", PAIR, Side.BUY, D("0.01")),
        # half the market: under the cap at its own price, over it at the mark (a price of 1
        # would be refused first by the pair's minimum cost)
        Signal(
            "scripted",
            PAIR,
            Side.SELL,
            D("0.02"),
            OrderType.LIMIT,
            (mark / 2).quantize(D(1)),
            reason="cheap limit sell",
        ),
    ]
    with caplog.at_level(logging.WARNING, logger="tradebot.risk"):
        ctx.extras["strategy_runner"].add("scripted", Scripted("scripted", script), plugin="scripted")
        await wait_for(
            lambda: sum(risk.rejections.values()) >= 2 and len(ctx.store.fills()) >= 2,
            30,
            f"the script to play (left {script}, refused {risk.rejections}, fills {ctx.store.fills()})",
        )
    sells = [e for e in ctx.store.orders() if e.side is Side.SELL]
    await stop(bot, run)
    assert sells == []  # nothing refused was sent
    assert not [o for o in paper_file(tmp_path)["orders"] if o["side"] == "sell"]
    messages = [r.getMessage() for r in caplog.records]
    no_short = [m for m in messages if "code=no_short" in m]
    notional = [m for m in messages if "code=max_notional" in m]
    assert no_short and re.search(r"spot sell of 0\.010* BTC/USD refused: the bot holds 0", no_short[0]), (
        no_short
    )
    assert notional and f"max_notional_per_order {cap}" in notional[0]
    assert f"the order's limit price {(mark / 2).quantize(D(1))} is below the mark" in notional[0]
    assert ctx.portfolio.position(PAIR).volume == D("0.02")
    assert ctx.portfolio.strategy_position("scripted", PAIR).volume == D("0.02")


# --- the API-error-rate trigger hears every failed call -----------------------------------------


@pytest.mark.timeout(90)
async def test_failing_order_calls_reach_the_api_error_rate_trigger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AddOrder answers 502 for the whole run: the trigger counts the failures and HALTs."""
    from tradebot.simulator import run_simulator

    async with run_simulator(seed=3, tick_interval_s=0.05, faults="http5xx=502,on=AddOrder") as sim:
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
        monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
        raw = {
            "bot": {"state_dir": str(tmp_path / "state"), "exchange": "kraken", "pairs": [PAIR]},
            "http": {"enabled": False},
            "exchanges": {
                "kraken": {
                    "base_url": sim.base_url,
                    "ws_url": sim.ws_url,
                    "retry_wait_initial_s": 0.01,
                    "retry_wait_max_s": 0.05,
                    "order_lookup_delay_s": 0.01,
                }
            },
            "strategies": {
                "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.002"}}
            },
            "checks": {"api-error-rate": {"max_errors": 3, "window_s": 60, "interval_s": 0.2}},
        }
        settings = settings_from_dict(raw, source=str(tmp_path / "tradebot.toml"))
        bot = Bot(prepare(settings=settings), RunOptions(duration_s=30))
        run = asyncio.create_task(bot.run())
        await wait_for(
            lambda: run.done() or (bot.context is not None and bot.context.trading.state.value == "halted"),
            60,
            "the API-error-rate trigger to HALT",
        )
        summary = await stop(bot, run)
    assert sim.stats.requests["AddOrder"] >= 1
    assert summary.exchange_errors >= 3
    assert summary.trading_state == "halted" and "API errors" in summary.trading_reason
    assert "failed exchange calls" in summary.render()
