"""Memory soak: N ticks through the engine (bus -> strategy runner -> portfolio marks), in-process.

    python bench/bench_soak.py [--ticks 1000000] [--warmup 100000]

Ticks are made on the fly (a geometric random walk over 4 pairs) so the generator holds no
memory of its own; two strategies (SMA crossover, RSI reversion) run through the plugin
host's guarded path; every tick also marks the portfolio (backed by a real SQLite store in
a temporary folder). RSS is read with psutil after the warm-up and at the end; the target
is growth under 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from tradebot.core import loop as event_loop
from tradebot.core.bus import EventBus
from tradebot.core.models import Signal, Ticker
from tradebot.core.plugins import PluginHost
from tradebot.core.portfolio import Portfolio
from tradebot.core.store import StateStore
from tradebot.core.strategy import StrategyContext, StrategyRunner

STRATEGIES = ("sma-crossover", "rsi-reversion")
PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD")


def ticks(n: int, seed: int = 11) -> Iterator[Ticker]:
    """``n`` tickers round-robin over :data:`PAIRS`, made one at a time."""
    rng = random.Random(seed)
    mids = [100.0 * (i + 1) for i in range(len(PAIRS))]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for k in range(n):
        i = k % len(PAIRS)
        mids[i] *= math.exp(rng.gauss(0.0, 0.0006))
        p = Decimal(f"{mids[i]:.2f}")
        yield Ticker(pair=PAIRS[i], bid=p, ask=p + Decimal("0.01"), last=p, volume=Decimal(1), time=now)


async def soak(n: int, warmup: int, state_dir: Path) -> dict[str, Any]:
    """Run ``warmup`` then ``n`` ticks; returns RSS figures (bytes) and counters."""
    host = PluginHost()
    host.load(list(STRATEGIES), required=STRATEGIES)
    bus = EventBus()
    store = StateStore(state_dir)
    portfolio = Portfolio(store, starting_cash=Decimal(100000))
    signals = 0

    async def sink(batch: list[Signal]) -> None:
        nonlocal signals
        signals += len(batch)

    runner = StrategyRunner(bus=bus, sink=sink, host=host)
    for name in STRATEGIES:
        comp = host.component("strategy", name)
        assert comp.spec.config_cls is not None
        strategy = comp.spec.factory(comp.spec.config_cls(), StrategyContext(name=name, pairs=PAIRS))
        runner.add(name, strategy, plugin=name, pairs=list(PAIRS))
    task = asyncio.create_task(runner.run())
    proc = psutil.Process()
    rss_after_warmup = 0
    started = time.perf_counter()
    for k, event in enumerate(ticks(warmup + n), 1):
        portfolio.mark(event)
        await bus.publish(event)
        if k % len(PAIRS) == 0:
            await asyncio.sleep(0)
        if k == warmup:
            gc.collect()
            rss_after_warmup = proc.memory_info().rss
    bus.close()
    await task
    elapsed = time.perf_counter() - started
    gc.collect()
    rss_end = proc.memory_info().rss
    store.close()
    calls = sum(s.calls for s in runner.stats().values())
    return {
        "ticks": n,
        "warmup": warmup,
        "seconds": elapsed,
        "strategy_calls": calls,
        "signals": signals,
        "rss_after_warmup": rss_after_warmup,
        "rss_end": rss_end,
        "growth_pct": 100.0 * (rss_end - rss_after_warmup) / rss_after_warmup,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = event_loop.run(soak(args.ticks, args.warmup, Path(tmp)))
    mb = 1024 * 1024
    ok = r["growth_pct"] < 5.0
    print(
        f"memory soak: {r['ticks']:,} ticks after {r['warmup']:,} warm-up in {r['seconds']:.1f}s "
        f"({r['ticks'] / r['seconds']:,.0f} ticks/s), {r['strategy_calls']:,} strategy calls"
    )
    print(
        f"  RSS after warm-up {r['rss_after_warmup'] / mb:.1f} MB, at end {r['rss_end'] / mb:.1f} MB, "
        f"growth {r['growth_pct']:+.2f} % (target < 5 %: {'met' if ok else 'MISSED'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
