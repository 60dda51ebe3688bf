"""Does a paper run predict a live run? The same strategy on the same seeded prices, twice.

    python bench/bench_paper_vs_sim.py [--ticks 3000] [--seed 7] [--quote 500]

Live: orders go over real HTTP to a Kraken-compatible simulator (signed, through the Kraken
plugin), which fills and charges them. Paper: a second simulator with the same seed serves
only prices (public, no keys); the paper exchange fills and charges the orders. Both
accounts start with the same USD and nothing else, so the change in equity is what the
strategy made; the strategy (SMA crossover, sized from a quote amount) and the market rules
(fitted before sending, as the risk gate does) are the same objects in both. The run is
stepped tick by tick, so both see identical prices. It also shows the paper exchange with
its former defaults (0.26 % / 0.16 % fees, 5 bps slippage), to show what the gap was.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from typing import Any

from tradebot.core import loop as event_loop
from tradebot.core.markets import MarketBook, MarketRuleError
from tradebot.core.models import OrderRequest, OrderType, Ticker
from tradebot.core.strategy import StrategyContext
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.exchanges.paper import PaperConfig, PaperExchange
from tradebot.simulator import Simulator, run_simulator
from tradebot.strategies.sma_crossover import SmaCrossover, SmaCrossoverConfig

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]
START = {"USD": D(100000)}


def kraken(sim: Simulator, *, keys: bool) -> KrakenExchange:
    cfg = KrakenConfig(base_url=sim.base_url, ws_url=sim.ws_url, min_spacing_s=0.0, rate_tier="pro")
    return KrakenExchange(
        cfg, api_key=sim.api_key if keys else None, api_secret=sim.api_secret if keys else None
    )


async def trade(
    sim: Simulator,
    prices: KrakenExchange,
    exchange: Any,
    on_tickers: Callable[[list[Ticker]], None],
    fees_paid: Callable[[], D],
    ticks: int,
    quote: D,
) -> tuple[D, int, D]:
    """Step the market ``ticks`` times, trading on every tick; (PnL, orders, fees)."""
    book = MarketBook(await exchange.markets())
    strategy = SmaCrossover(
        SmaCrossoverConfig(fast=5, slow=20, quote_amount=quote),
        StrategyContext(name="sma", pairs=PAIRS, markets=book.rules),
    )
    orders = 0
    tickers: list[Ticker] = []
    for n in range(ticks):
        sim.step(1)
        tickers = await prices.ticker(PAIRS)
        on_tickers(tickers)
        for ticker in tickers:
            for signal in strategy.on_event(ticker):
                try:
                    volume, _ = book.fit(
                        pair=signal.pair,
                        side=signal.side,
                        order_type=OrderType.MARKET,
                        volume=signal.volume,
                        reference_price=ticker.mid,
                    )
                except MarketRuleError:
                    continue
                cid = f"o{n}-{signal.pair.replace('/', '')}"
                await exchange.place_order(
                    OrderRequest(signal.pair, signal.side, OrderType.MARKET, volume, cid)
                )
                orders += 1
    balances = await exchange.balances()
    mids = {t.pair.split("/")[0]: t.mid for t in tickers}
    equity = sum(
        (
            amount * (mids[a] if a != "USD" else D(1))
            for a, amount in balances.totals.items()
            if a in mids or a == "USD"
        ),
        D(0),
    )
    return equity - START["USD"], orders, fees_paid()


async def live_run(seed: int, ticks: int, quote: D) -> tuple[D, int, D]:
    async with run_simulator(seed=seed, tick_interval_s=0, balances=START, rate_tier="pro") as sim:
        ex = kraken(sim, keys=True)
        await ex.start()
        try:
            return await trade(
                sim,
                ex,
                ex,
                lambda _t: None,
                lambda: sum((o.fee for o in sim.account.orders.values()), D(0)),
                ticks,
                quote,
            )
        finally:
            await ex.close()


async def paper_run(seed: int, ticks: int, quote: D, config: PaperConfig) -> tuple[D, int, D]:
    async with run_simulator(seed=seed, tick_interval_s=0, balances=START, rate_tier="pro") as sim:
        source = kraken(sim, keys=False)
        await source.start()
        try:
            paper = PaperExchange(attrs_evolve(config, starting_balances=START), market_source=source)

            def feed(tickers: list[Ticker]) -> None:
                for t in tickers:
                    paper.on_ticker(t)

            result = await trade(
                sim,
                source,
                paper,
                feed,
                lambda: sum((o.fee for o in paper._orders.values()), D(0)),
                ticks,
                quote,
            )
            assert sim.stats.requests["AddOrder"] == 0  # the paper run never touched the exchange's account
            return result
        finally:
            await source.close()


def attrs_evolve(config: PaperConfig, **changes: Any) -> PaperConfig:
    import attrs

    return attrs.evolve(config, **changes)


def row(name: str, result: tuple[D, int, D], live: D) -> str:
    pnl, orders, fees = result
    gap = "-" if name == "live (simulator)" else f"{abs(pnl - live) / abs(live) * 100:.3f} %" if live else "-"
    return f"| {name} | {pnl:.2f} | {orders} | {fees:.2f} | {gap} |"


async def main(ticks: int, seed: int, quote: D) -> None:
    runs: list[tuple[str, Callable[[], Awaitable[tuple[D, int, D]]]]] = [
        ("live (simulator)", lambda: live_run(seed, ticks, quote)),
        ("paper (defaults)", lambda: paper_run(seed, ticks, quote, PaperConfig())),
        (
            "paper (former defaults: 0.26/0.16 %, 5 bps)",
            lambda: paper_run(
                seed, ticks, quote, PaperConfig(fee_pct=D("0.26"), maker_fee_pct=D("0.16"), slippage_bps=D(5))
            ),
        ),
    ]
    results = [(name, await run()) for name, run in runs]
    live = results[0][1][0]
    print(
        f"event loop: {event_loop.loop_name()}; {ticks} ticks, seed {seed}, {quote} USD per buy, pairs {', '.join(PAIRS)}"
    )
    print("| run | PnL (USD) | orders | fees (USD) | PnL gap to live |")
    print("|---|---|---|---|---|")
    for name, result in results:
        print(row(name, result, live))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quote", type=D, default=D(500))
    args = parser.parse_args()
    event_loop.run(main(args.ticks, args.seed, args.quote))
