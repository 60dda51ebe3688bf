"""Kraken client figures against the local simulator (run by hand).

    /tmp/venv/bin/python bench/bench_kraken_client.py [--calls 400]

Prints calls/s and p50/p99 latency of Ticker (public) and Balance (private, signed) with
the pooled keep-alive session and with a new session per call, and the latency of a
fast-fail through an open circuit breaker. Client-side rate limits are switched off and
the simulator's counter is lifted so the figures show the client, not the pacing.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tradebot.core import loop as event_loop
from tradebot.core.errors import CircuitOpen, RequestTimeout
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.resilience.ratelimit import RequestRateLimiter
from tradebot.simulator import run_simulator


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    name: str,
    calls: int,
    call: Callable[[], Awaitable[object]],
    after: Callable[[], Awaitable[None]] | None = None,
) -> None:
    for _ in range(10):  # warm-up
        await call()
    latencies: list[float] = []
    start = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)
        if after is not None:
            await after()
    elapsed = time.perf_counter() - start
    print(
        f"{name:<34} {calls / elapsed:9.0f} calls/s   p50 {pct(latencies, 0.5) * 1e3:7.3f} ms"
        f"   p99 {pct(latencies, 0.99) * 1e3:7.3f} ms"
    )


async def main(calls: int) -> None:
    async with run_simulator(seed=1, tick_interval_s=0.2, faults="ratelimit=1000000/1000000") as sim:
        config = KrakenConfig(base_url=sim.base_url, ws_url=sim.ws_url, min_spacing_s=0.0)
        with tempfile.TemporaryDirectory() as state:
            ex = KrakenExchange(
                config,
                api_key=sim.api_key,
                api_secret=sim.api_secret,
                state_dir=Path(state),
                rate_limiter=RequestRateLimiter.build(None, min_spacing_s=0.0),
            )
            try:
                print(f"simulator at {sim.base_url}, {calls} sequential calls each\n")
                await measure("Ticker  pooled session", calls, lambda: ex.ticker(["BTC/USD"]))

                # a closed client sends nothing until start() opens it again: each call opens one
                async def fresh(call: Callable[[], Awaitable[object]]) -> object:
                    await ex.rest.start()
                    return await call()

                await measure(
                    "Ticker  new session per call",
                    calls,
                    lambda: fresh(lambda: ex.ticker(["BTC/USD"])),
                    ex.rest.close,
                )
                await ex.rest.start()
                await measure("Balance pooled session", calls, lambda: ex.rest.private("Balance"))
                await measure(
                    "Balance new session per call",
                    calls,
                    lambda: fresh(lambda: ex.rest.private("Balance")),
                    ex.rest.close,
                )
                print(f"\nsessions created: {ex.rest.sessions_created}")
                await ex.rest.start()

                breaker = ex.breakers["public"]
                while breaker.state.value != "open":
                    breaker.record(breaker.acquire(), RequestTimeout("bench"))
                n = 100_000
                t0 = time.perf_counter()
                for _ in range(n):
                    with contextlib.suppress(CircuitOpen):
                        breaker.acquire()
                raw = (time.perf_counter() - t0) / n
                m = 20_000
                t0 = time.perf_counter()
                for _ in range(m):
                    with contextlib.suppress(CircuitOpen):
                        await ex.ticker(["BTC/USD"])
                full = (time.perf_counter() - t0) / m
                print(
                    f"open breaker fast-fail: acquire() {raw * 1e6:.2f} us, full ticker() call {full * 1e6:.2f} us"
                )
            finally:
                await ex.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    event_loop.run(main(parser.parse_args().calls))
