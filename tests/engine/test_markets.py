"""Market rules from the simulator's AssetPairs: rounding, minimums, status, fees, dust."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import attrs
import pytest

from tradebot.core.clock import SystemClock
from tradebot.core.errors import ConfigError, InvalidOrder, TradebotError
from tradebot.core.executor import OrderExecutor
from tradebot.core.markets import (
    MarketBook,
    MarketRuleError,
    MarketRules,
    PairStatus,
    fit_order,
    order_volume,
)
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side, Signal, TradingState
from tradebot.core.portfolio import Portfolio
from tradebot.core.risk import RejectReason, RiskGate, RiskLimits, RiskRejection
from tradebot.core.store import StateStore
from tradebot.core.strategy import StrategyContext
from tradebot.core.trading_state import TradingStateMachine
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.exchanges.kraken.fees import KRAKEN_FEES
from tradebot.exchanges.paper import PaperConfig, PaperExchange
from tradebot.plugins.policies.close import CloseConfig, ClosePolicy
from tradebot.simulator import Simulator, run_simulator
from tradebot.strategies.grid import Grid, GridConfig
from tradebot.strategies.sma_crossover import SmaCrossover, SmaCrossoverConfig


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(tick_interval_s=0) as simulator:
        yield simulator


def kraken(sim: Simulator, tmp_path: Path | None = None, **cfg: Any) -> KrakenExchange:
    config = KrakenConfig(
        base_url=sim.base_url, ws_url=sim.ws_url, min_spacing_s=0.0, order_lookup_delay_s=0.0, **cfg
    )
    return KrakenExchange(
        config,
        api_key=sim.api_key,
        api_secret=sim.api_secret,
        state_dir=None if tmp_path is None else tmp_path / "k",
    )


@pytest.fixture
async def ex(sim: Simulator) -> AsyncIterator[KrakenExchange]:
    exchange = kraken(sim)
    await exchange.start()
    try:
        yield exchange
    finally:
        await exchange.close()


async def test_rules_come_from_assetpairs_with_the_accounts_fee_tier(
    sim: Simulator, ex: KrakenExchange
) -> None:
    rules = await ex.markets()
    assert {"BTC/USD", "ETH/USD", "DOGE/USD", "SHIB/USD"} <= set(rules)
    btc, shib = rules["BTC/USD"], rules["SHIB/USD"]
    assert (btc.price_decimals, btc.lot_decimals, btc.tick_size, btc.min_volume, btc.min_cost) == (
        1,
        8,
        D("0.1"),
        D("0.00005"),
        D("0.5"),
    )
    assert (shib.price_decimals, shib.lot_decimals, shib.min_volume) == (8, 1, D(200000))
    assert btc.taker_fee_pct == D("0.4") and btc.maker_fee_pct == D("0.25") and btc.fee_decimals == 4
    assert btc.status is PairStatus.ONLINE
    assert sim.stats.requests["TradeVolume"] == 1  # keys given: the account's tier was asked for

    async with run_simulator(tick_interval_s=0, fee_volume=D(60000)) as richer:
        other = kraken(richer)
        await other.start()
        try:
            tiered = (await other.markets())["ETH/USD"]
        finally:
            await other.close()
    assert (tiered.taker_fee_pct, tiered.maker_fee_pct) == (KRAKEN_FEES.taker_pct(D(60000)), D("0.14"))


@pytest.mark.parametrize(
    ("pair", "side", "volume", "price", "want_volume", "want_price"),
    [
        ("BTC/USD", Side.BUY, "0.0123456789", "60000.17", "0.01234567", "60000.1"),
        ("BTC/USD", Side.SELL, "0.0123456789", "60000.11", "0.01234567", "60000.2"),
        ("ETH/USD", Side.BUY, "0.25", "3000.019", "0.25", "3000.01"),
        ("SHIB/USD", Side.BUY, "250000.56", "0.000020005", "250000.5", "0.00002000"),
        ("SHIB/USD", Side.SELL, "250000.56", "0.000020005", "250000.5", "0.00002001"),
        ("DOGE/USD", Side.SELL, "60.123456789", "0.15000001", "60.12345678", "0.1500001"),
    ],
)
async def test_volume_rounds_down_and_price_to_the_passive_tick(
    ex: KrakenExchange, pair: str, side: Side, volume: str, price: str, want_volume: str, want_price: str
) -> None:
    book = MarketBook(await ex.markets())
    fitted = book.fit(pair=pair, side=side, order_type=OrderType.LIMIT, volume=D(volume), price=D(price))
    assert fitted == (D(want_volume), D(want_price))
    assert str(fitted[1]) == want_price  # on the pair's decimals, as sent


async def test_the_simulator_accepts_a_fitted_order_and_refuses_the_raw_one(
    sim: Simulator, ex: KrakenExchange
) -> None:
    book = MarketBook(await ex.markets())
    raw = D("0.0123456789")
    with pytest.raises(InvalidOrder):
        await ex.place_order(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, raw, "raw"))
    volume, _ = book.fit(pair="BTC/USD", side=Side.BUY, order_type=OrderType.MARKET, volume=raw)
    placed = await ex.place_order(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, volume, "fitted"))
    assert placed.volume == D("0.01234567") and sim.state()["orders_created"] == {"fitted": 1}


@pytest.mark.parametrize(
    ("pair", "volume", "reference", "rule", "figure"),
    [
        ("ETH/USD", "0.001", "3000", "min_volume", "minimum order volume 0.002"),
        ("SHIB/USD", "150000", "0.00002", "min_volume", "minimum order volume 200000"),
        ("BTC/USD", "0.00004", "60000", "min_volume", "minimum order volume 0.00005"),
        ("DOGE/USD", "60", "0.005", "min_cost", "minimum order cost 0.5"),
    ],
)
async def test_orders_below_the_pairs_minimum_are_refused_naming_it(
    ex: KrakenExchange, pair: str, volume: str, reference: str, rule: str, figure: str
) -> None:
    book = MarketBook(await ex.markets())
    with pytest.raises(MarketRuleError) as refused:
        book.fit(
            pair=pair,
            side=Side.BUY,
            order_type=OrderType.MARKET,
            volume=D(volume),
            reference_price=D(reference),
        )
    assert refused.value.rule == rule and figure in str(refused.value) and pair in str(refused.value)


async def test_a_pairs_status_refuses_what_it_forbids(sim: Simulator) -> None:
    sim.catalog.set_status("ETH/USD", "cancel_only")
    sim.catalog.set_status("SOL/USD", "limit_only")
    sim.catalog.set_status("DOGE/USD", "reduce_only")
    ex = kraken(sim)
    await ex.start()
    try:
        book = MarketBook(await ex.markets())
    finally:
        await ex.close()

    def fit(pair: str, order_type: OrderType = OrderType.MARKET, reduces: bool = False) -> object:
        price = D("150") if order_type is OrderType.LIMIT else None
        return book.fit(
            pair=pair, side=Side.BUY, order_type=order_type, volume=D(100), price=price, reduces=reduces
        )

    for pair, order_type, reduces, text in [
        ("ETH/USD", OrderType.LIMIT, True, "ETH/USD is cancel_only"),
        ("SOL/USD", OrderType.MARKET, False, "SOL/USD is limit_only"),
        ("DOGE/USD", OrderType.MARKET, False, "DOGE/USD is reduce_only"),
    ]:
        with pytest.raises(MarketRuleError, match=text) as refused:
            fit(pair, order_type, reduces)
        assert refused.value.rule == "status"
    assert fit("SOL/USD", OrderType.LIMIT) == (D(100), D("150.00"))
    assert fit("DOGE/USD", reduces=True) == (D(100), None)


async def test_a_missing_assetpairs_field_keeps_the_last_good_rules_and_is_logged(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    ex = kraken(sim, markets_refresh_s=0.001)
    await ex.start()
    try:
        first = await ex.markets()
        real_public = ex.rest.public

        async def without_ordermin(method: str, params: Any = None) -> Any:
            result = await real_public(method, params)
            if method == "AssetPairs":
                del result["XETHZUSD"]["ordermin"]
                result["XXBTZUSD"]["status"] = "post_only"  # the rest of the answer is still taken
            return result

        ex.rest.public = without_ordermin  # type: ignore[method-assign]
        await asyncio.sleep(0.01)
        with caplog.at_level(logging.ERROR, logger="tradebot.exchanges.kraken.exchange"):
            second = await ex.markets()
    finally:
        await ex.close()
    assert second["ETH/USD"] == first["ETH/USD"]
    assert second["BTC/USD"].status is PairStatus.POST_ONLY
    assert any("XETHZUSD" in r.getMessage() and "ordermin" in r.getMessage() for r in caplog.records)


def test_a_pair_with_no_rules_is_refused_with_a_clear_reason(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    try:
        portfolio = Portfolio(store, starting_cash=D(1000))
        gate = RiskGate(RiskLimits(), TradingStateMachine(), portfolio, markets=MarketBook())
        with pytest.raises(RiskRejection) as refused:
            gate.approve(Signal("s", "XRP/USD", Side.BUY, D(10)))
    finally:
        store.close()
    assert refused.value.code is RejectReason.MARKET_RULES
    assert "no market rules are known for XRP/USD" in str(refused.value)
    with pytest.raises(MarketRuleError, match="no market rules"):
        fit_order(None, pair="XRP/USD", side=Side.BUY, order_type=OrderType.MARKET, volume=D(1))


async def test_paper_and_simulator_charge_the_same_fee_on_the_same_fill(
    sim: Simulator, ex: KrakenExchange
) -> None:
    paper = PaperExchange(PaperConfig(starting_balances={"USD": 100000}), market_source=ex)
    paper_rules = await paper.markets()
    assert paper_rules == await ex.markets()  # the source's rules, fees included
    for pair, volume in [("BTC/USD", "0.01234567"), ("ETH/USD", "0.3"), ("DOGE/USD", "1234.5")]:
        (ticker,) = await ex.ticker([pair])
        paper.on_ticker(ticker)
        cid = f"{pair}-buy"
        live = await ex.place_order(OrderRequest(pair, Side.BUY, OrderType.MARKET, D(volume), cid))
        live = await ex.order_by_client_id(cid) or live
        on_paper = await paper.place_order(OrderRequest(pair, Side.BUY, OrderType.MARKET, D(volume), cid))
        assert live.status is OrderStatus.CLOSED and on_paper.status is OrderStatus.CLOSED
        assert live.avg_fill_price is not None and on_paper.avg_fill_price is not None
        # the same price (Kraken reports an average price to the quote's cost decimals)
        assert on_paper.avg_fill_price.quantize(live.avg_fill_price) == live.avg_fill_price, pair
        assert on_paper.fee == live.fee and live.fee > 0, pair


async def test_paper_refuses_what_the_exchange_would_and_can_fill_limits_in_parts(ex: KrakenExchange) -> None:
    from tradebot.core.models import Ticker, utc_now

    paper = PaperExchange(PaperConfig(limit_fill_ratio=D("0.4")), market_source=ex)
    await paper.markets()
    paper.on_ticker(Ticker("ETH/USD", D(3000), D("3000.1"), D(3000), D(1), utc_now()))
    with pytest.raises(InvalidOrder, match=r"minimum order volume 0\.002"):
        await paper.place_order(OrderRequest("ETH/USD", Side.BUY, OrderType.MARKET, D("0.001"), "small"))
    with pytest.raises(InvalidOrder, match="lot decimals"):
        await paper.place_order(
            OrderRequest("ETH/USD", Side.BUY, OrderType.MARKET, D("0.0123456789"), "fine")
        )
    order = await paper.place_order(OrderRequest("ETH/USD", Side.BUY, OrderType.LIMIT, D(1), "rest", D(2990)))
    assert order.status is OrderStatus.OPEN
    fills = []
    for _ in range(3):
        fills += paper.on_ticker(Ticker("ETH/USD", D(2989), D(2990), D(2990), D(1), utc_now()))
    assert [f.filled_volume for f in fills] == [D("0.4"), D("0.8"), D(1)]
    assert fills[-1].status is OrderStatus.CLOSED
    assert fills[-1].fee == D(2990) * D("0.25") / 100  # maker fee on every part


async def test_paper_refuses_by_the_pairs_status_as_the_simulator_does(sim: Simulator) -> None:
    """The same orders on a ``reduce_only`` and a ``limit_only`` pair: the simulator and the
    paper exchange (whose rules come from it) refuse the same ones."""
    from tradebot.core.errors import MarketClosed
    from tradebot.core.models import Ticker, utc_now

    sim.catalog.set_status("ETH/USD", "reduce_only")
    sim.catalog.set_status("SOL/USD", "limit_only")
    ex = kraken(sim)
    await ex.start()
    try:
        paper = PaperConfig(starting_balances={"USD": D(100000), "ETH": D(10)})
        paper_ex = PaperExchange(paper, market_source=ex)
        await paper_ex.markets()
        for pair, price in (("ETH/USD", D(3000)), ("SOL/USD", D(150))):
            paper_ex.on_ticker(Ticker(pair, price, price + D("0.01"), price, D(1), utc_now()))
        cases = [
            ("ETH/USD", Side.BUY, OrderType.MARKET, D("0.01"), False),
            ("ETH/USD", Side.SELL, OrderType.MARKET, D("11"), False),  # more than held: does not reduce
            ("ETH/USD", Side.SELL, OrderType.MARKET, D("0.01"), True),
            ("SOL/USD", Side.BUY, OrderType.MARKET, D("1"), False),
            ("SOL/USD", Side.BUY, OrderType.LIMIT, D("1"), True),
        ]
        for i, (pair, side, order_type, volume, accepted) in enumerate(cases):
            price = D(140) if order_type is OrderType.LIMIT else None
            request = OrderRequest(pair, side, order_type, volume, f"c{i}", price)
            for exchange in (ex, paper_ex):
                if accepted:
                    await exchange.place_order(attrs.evolve(request, client_order_id=f"{exchange.name}-{i}"))
                else:
                    with pytest.raises((MarketClosed, InvalidOrder)):
                        await exchange.place_order(
                            attrs.evolve(request, client_order_id=f"{exchange.name}-{i}")
                        )
    finally:
        await ex.close()


async def test_close_completes_when_only_dust_is_left_and_says_how_much(
    sim: Simulator, ex: KrakenExchange, tmp_path: Path
) -> None:
    store = StateStore(tmp_path)
    try:
        trading = TradingStateMachine(store=store)
        portfolio = Portfolio(store, starting_cash=D(100000))
        executor = OrderExecutor(
            ex, store, portfolio, poll_interval_s=0.05, not_found_grace_s=0.2, lookup_backoff_s=0.05
        )
        book = MarketBook(await ex.markets())
        executor.markets = book
        await executor.submit(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.01"), "open"))
        await executor.submit(OrderRequest("BTC/USD", Side.SELL, OrderType.MARKET, D("0.00998"), "most"))
        await executor.submit(OrderRequest("ETH/USD", Side.BUY, OrderType.MARKET, D("0.5"), "eth"))
        for _ in range(100):
            if portfolio.position("BTC/USD").volume == D("0.00002") and portfolio.position("ETH/USD").volume:
                break
            await executor.poll_once()
            await asyncio.sleep(0.02)
        assert portfolio.position("BTC/USD").volume == D("0.00002")  # below BTC's 0.00005: dust
        for pair in ("BTC/USD", "ETH/USD"):
            (ticker,) = await ex.ticker([pair])
            portfolio.mark(ticker)
        task = asyncio.ensure_future(executor.run())
        try:
            policy = ClosePolicy(
                CloseConfig(max_attempts=3, settle_s=3, poll_s=0.05), executor, portfolio, SystemClock(), book
            )
            outcome = await policy.apply(await trading.halt("test: close", "test"))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert outcome.done, outcome.message
        assert outcome.orders_placed == 1  # ETH only: dust is never sent
        assert outcome.dust == {"BTC/USD": D("0.00002")} and outcome.remaining == {}
        assert "dust left" in outcome.message and "BTC/USD 0.00002" in outcome.message
        assert portfolio.position("ETH/USD").volume == 0
        assert len(sim.state()["orders_created"]) == 4  # open, most, eth and one flatten of ETH
        assert trading.state is TradingState.HALTED
    finally:
        store.close()


async def test_strategies_size_from_the_quote_amount_and_the_pairs_minimum(ex: KrakenExchange) -> None:
    book = MarketBook(await ex.markets())
    eth, shib = book.rules("ETH/USD"), book.rules("SHIB/USD")
    assert order_volume(D(20), D(3000), eth) == D("0.00666666")
    assert order_volume(D(1), D("0.00002"), shib) == D(
        200000
    )  # a quote amount below the minimum trades the minimum
    assert order_volume(D(1), D(3000), eth) == D("0.002")
    ctx = StrategyContext(name="sma", pairs=["ETH/USD"], markets=book.rules)
    sma = SmaCrossover(SmaCrossoverConfig(fast=2, slow=3, quote_amount=D(30)), ctx)
    from tradebot.core.models import Ticker, utc_now

    signals = []
    for p in [100, 90, 80, 100, 120, 90, 70]:
        signals += sma.on_event(Ticker("ETH/USD", D(p), D(p), D(p), D(1), utc_now()))
    assert [s.side for s in signals] == [Side.BUY, Side.SELL]
    assert signals[0].volume == D("0.25") == signals[1].volume  # 30 USD at 120, sold as bought


async def test_grid_refuses_a_spacing_that_does_not_cover_a_round_trips_fees(ex: KrakenExchange) -> None:
    book = MarketBook(await ex.markets())
    ctx = StrategyContext(name="g", pairs=["BTC/USD"], markets=book.rules)
    with pytest.raises(ConfigError) as refused:
        Grid(GridConfig(spacing_pct=D("0.8")), ctx)
    text = str(refused.value)
    assert "spacing_pct 0.8%" in text and "0.8032%" in text and "0.4%" in text
    Grid(GridConfig(), ctx)  # the default spacing (1 %) covers them
    rules = book.rules("BTC/USD")
    assert isinstance(rules, MarketRules)


async def test_reduce_fraction_cuts_every_position_on_the_lot_grid(
    sim: Simulator, ex: KrakenExchange, tmp_path: Path
) -> None:
    from tradebot.plugins.policies.reduce import ReduceConfig, ReducePolicy

    store = StateStore(tmp_path)
    try:
        trading = TradingStateMachine(store=store)
        portfolio = Portfolio(store, starting_cash=D(100000))
        executor = OrderExecutor(
            ex, store, portfolio, poll_interval_s=0.05, not_found_grace_s=0.2, lookup_backoff_s=0.05
        )
        book = MarketBook(await ex.markets())
        executor.markets = book
        await executor.submit(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.0333"), "btc"))
        await executor.submit(OrderRequest("ETH/USD", Side.BUY, OrderType.MARKET, D("0.003"), "eth"))
        for _ in range(100):
            if portfolio.position("BTC/USD").volume and portfolio.position("ETH/USD").volume:
                break
            await executor.poll_once()
            await asyncio.sleep(0.02)
        for pair in ("BTC/USD", "ETH/USD"):
            (ticker,) = await ex.ticker([pair])
            portfolio.mark(ticker)
        policy = ReducePolicy(ReduceConfig(fraction=D("0.5")), executor, portfolio, book)
        outcome = await policy.apply(await trading.halt("test: reduce", "test"))
        for _ in range(100):
            if portfolio.position("BTC/USD").volume == D("0.01665"):
                break
            await executor.poll_once()
            await asyncio.sleep(0.02)
        assert outcome.done and outcome.orders_placed == 1, outcome.message
        assert portfolio.position("BTC/USD").volume == D("0.01665")  # half, on the lot grid
        # half of 0.003 ETH is below ETH's minimum 0.002: not cut, and said so
        assert portfolio.position("ETH/USD").volume == D("0.003")
        assert "ETH/USD's minimum order volume 0.002" in outcome.message
    finally:
        store.close()


async def test_rules_survive_a_failed_refresh_and_a_pair_no_longer_listed_is_delisted(sim: Simulator) -> None:
    ex = kraken(sim, markets_refresh_s=0.001, retry_attempts=1)
    await ex.start()
    try:
        sim.faults.add("http5xx=503,on=AssetPairs,n=1")
        with pytest.raises(TradebotError):  # no rules known yet: the failure is the caller's to see
            await ex.markets()
        first = await ex.markets()
        sim.faults.add("http5xx=503,on=AssetPairs,n=1")
        await asyncio.sleep(0.01)
        assert await ex.markets() == first  # the request failed: the last good rules
        del sim.catalog.pairs["SOLUSD"]  # Kraken stops listing a pair
        await asyncio.sleep(0.01)
        later = await ex.markets()
    finally:
        await ex.close()
    assert later["SOL/USD"].status is PairStatus.DELISTED and later["BTC/USD"] == first["BTC/USD"]
    with pytest.raises(MarketRuleError, match="SOL/USD is delisted"):
        MarketBook(later).fit(
            pair="SOL/USD", side=Side.SELL, order_type=OrderType.MARKET, volume=D(1), reduces=True
        )


async def test_book_keeps_last_good_rules_and_refuses_without_markets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    btc = MarketRules("BTC/USD", 1, 8, D("0.1"), D("0.00005"), D("0.5"), D("0.4"), D("0.25"))
    book = MarketBook()

    class NoMarkets:
        name = "third-party"

    with caplog.at_level(logging.WARNING, logger="tradebot.markets"):
        assert await book.refresh(NoMarkets(), expected=["BTC/USD"]) is False
        assert "provides no markets()" in (book.last_error or "")

        class Listing:
            name = "listing"

            def __init__(self, answer: dict[str, Any]) -> None:
                self.answer = answer

            async def markets(self) -> dict[str, Any]:
                return self.answer

        assert await book.refresh(Listing({"BTC/USD": btc}), expected=["BTC/USD", "ETH/USD"])
        # an answer that leaves BTC out, and a third-party answer that is not MarketRules
        assert await book.refresh(Listing({"ETH/USD": {"min": 1}}), expected=["BTC/USD", "ETH/USD"])
    assert book.rules("BTC/USD") == btc and book.rules("ETH/USD") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("leave out BTC/USD: kept the last good rules" in m for m in messages)
    assert any("leave out ETH/USD: orders for it are refused" in m for m in messages)
    assert any("ETH/USD from the exchange are not MarketRules" in m for m in messages)
    assert book.dust({"BTC/USD": D("0.00004"), "ETH/USD": D("0.00001")}) == {"BTC/USD": D("0.00004")}
