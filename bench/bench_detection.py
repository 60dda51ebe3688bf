"""Detection latency of the HALT triggers, measured on a real event loop (run by hand).

    python bench/bench_detection.py [--trials 30]

1. Market-data staleness: a feed of tickers stops; time from the last update to HALT,
   minus the threshold (the check's own delay).
2. API outage: the Kraken-compatible simulator starts answering every call with HTTP 503;
   time from the fault to HALT through the API-connectivity check (interval 0.1 s,
   critical after 3 failed rounds) over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from decimal import Decimal as D

from tradebot.checks.api_connectivity import ApiConnectivityCheck, ApiConnectivityConfig
from tradebot.checks.staleness import StalenessCheck, StalenessConfig
from tradebot.core import loop as event_loop
from tradebot.core.clock import SystemClock
from tradebot.core.health import HealthMonitor, MonitoringSettings
from tradebot.core.models import Ticker, TradingState
from tradebot.core.trading_state import TradingStateMachine


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def staleness_trial(threshold: float) -> float:
    trading = TradingStateMachine()
    halted: list[float] = []
    trading.listeners.append(lambda change: halted.append(time.monotonic()))
    check = StalenessCheck(
        "staleness", StalenessConfig(threshold_s=threshold, startup_grace_s=5), ["BTC/USD"], SystemClock()
    )
    monitor = HealthMonitor([check], trading=trading, settings=MonitoringSettings(round_interval_s=10))
    task = asyncio.ensure_future(monitor.run())
    await asyncio.sleep(0)
    last = 0.0
    for _ in range(10):
        monitor.on_market_event(Ticker("BTC/USD", D(1), D(1), D(1), D(1), SystemClock().now()))
        last = time.monotonic()
        await asyncio.sleep(0.01)
    while not halted:
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return halted[0] - last - threshold


async def outage_trial() -> float:
    from tradebot.exchanges.kraken.config import KrakenConfig
    from tradebot.exchanges.kraken.exchange import KrakenExchange
    from tradebot.simulator import run_simulator

    async with run_simulator(tick_interval_s=0) as sim:
        ex = KrakenExchange(
            KrakenConfig(
                base_url=sim.base_url,
                ws_url=sim.ws_url,
                min_spacing_s=0.0,
                request_timeout_s=1.0,
                connect_timeout_s=0.5,
                balance_cache_s=0.0,
            ),
            api_key=sim.api_key,
            api_secret=sim.api_secret,
        )
        await ex.start()
        trading = TradingStateMachine()
        halted: list[float] = []
        trading.listeners.append(lambda change: halted.append(time.monotonic()))
        cfg = ApiConnectivityConfig(interval_s=0.1, degraded_after=1, critical_after=3, call_timeout_s=1.0)
        monitor = HealthMonitor(
            [ApiConnectivityCheck("api-connectivity", cfg, ex)],
            trading=trading,
            settings=MonitoringSettings(round_interval_s=0.05),
        )
        task = asyncio.ensure_future(monitor.run())
        try:
            await asyncio.sleep(0.3)
            assert trading.state is TradingState.ACTIVE, trading.reason
            sim.faults.add("http5xx=503")
            began = time.monotonic()
            while not halted:
                await asyncio.sleep(0.005)
            return halted[0] - began
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ex.close()


def show(name: str, values: list[float], unit_ms: bool = True) -> None:
    k = 1000 if unit_ms else 1
    print(
        f"{name:<48} n={len(values):<3} p50={pct(values, 0.5) * k:7.1f} ms  p99={pct(values, 0.99) * k:7.1f} ms  "
        f"max={max(values) * k:7.1f} ms  mean={statistics.mean(values) * k:7.1f} ms"
    )


async def main(trials: int) -> None:
    import stamina

    stamina.set_testing(True, attempts=1)  # measure the check, not the client's retry waits
    logging.disable(logging.CRITICAL)  # state changes are logged at CRITICAL; keep the figures readable
    threshold = 0.2
    stale = [await staleness_trial(threshold) for _ in range(trials)]
    show(f"staleness: detection after threshold ({threshold}s)", stale)
    outage = [await outage_trial() for _ in range(max(3, trials // 3))]
    show("API outage (HTTP 503) -> HALT, interval 0.1s x3", outage)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    event_loop.run(main(parser.parse_args().trials))
