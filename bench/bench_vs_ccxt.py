"""Kraken client against ccxt's async Kraken client and a bare aiohttp loop, one simulator, one run.

    python bench/bench_vs_ccxt.py [--calls 3000] [--rounds 5] [--remote N]

Each client makes ``--calls`` public Ticker calls (BTC/USD) to the same local simulator
and parses the answer into prices:

* tradebot: ``KrakenExchange.ticker`` (retry, breaker, limiter, validation, Decimal models);
* ccxt: ``ccxt.async_support.kraken().fetch_ticker`` with ``urls['api']`` pointed at the
  simulator and its own rate limiting off (skipped with a message when ccxt is missing;
  install it with ``pip install ccxt`` — it is not a tradebot dependency);
* bare loop: ``aiohttp`` GET and ``json.loads`` of the answer, nothing else (the ceiling).

By default the simulator runs in this process and the calls are sequential, so every
column also pays the simulator's share of each call. ``--remote N`` runs it as a separate
``tradebot sim`` process instead, as a real exchange is, with ``N`` calls in flight per
client: calls/s then shows what each client itself costs per call.

All clients run on the event loop the bot runs on (uvloop where installed;
``TRADEBOT_EVENT_LOOP=asyncio`` for asyncio's own). Rounds alternate the clients; each
client's best round is reported (this machine's speed varies by 10-15% from round to round;
the defaults make the best of each client steady to about 2%). Targets: tradebot
>= 1.5x ccxt's calls/s with a lower p99, and within 1.25x of the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import aiohttp

from tradebot.core import loop as event_loop
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.resilience.ratelimit import RequestRateLimiter
from tradebot.simulator import run_simulator


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    calls: int, call: Callable[[], Awaitable[Decimal]], concurrency: int = 1
) -> tuple[float, float, float]:
    """(calls/s, p50 s, p99 s) of ``calls`` calls, ``concurrency`` in flight, after a warm-up."""
    for _ in range(20):
        await call()
    latencies: list[float] = []

    async def caller(count: int) -> None:
        for _ in range(count):
            t0 = time.perf_counter()
            price = await call()
            latencies.append(time.perf_counter() - t0)
            assert price > 0

    start = time.perf_counter()
    await asyncio.gather(*(caller(calls // concurrency) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, pct(latencies, 0.5), pct(latencies, 0.99)


@contextlib.asynccontextmanager
async def simulator(remote: bool) -> AsyncIterator[tuple[str, str]]:
    """(REST URL, WebSocket URL) of a simulator in this process, or in a process of its own."""
    if not remote:
        async with run_simulator(seed=1, tick_interval_s=0.2) as sim:
            yield sim.base_url, sim.ws_url
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tradebot",
        "sim",
        "--port",
        "0",
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        async with asyncio.timeout(30):
            while len(urls) < 2:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the simulator process ended before it printed its addresses")
                for name in ("REST", "WebSocket"):
                    if line.strip().startswith(name + " "):
                        urls[name] = line.split()[-1]
        yield urls["REST"], urls["WebSocket"]
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def main(calls: int, rounds: int, remote: int) -> int:
    try:
        import ccxt.async_support as ccxt_async
    except ImportError:
        ccxt_async = None
        print(
            "ccxt is not installed: its column is skipped (pip install ccxt into this environment to compare)"
        )
    concurrency = max(1, remote)
    async with simulator(remote > 0) as (base_url, ws_url):
        with tempfile.TemporaryDirectory() as state:
            ours = KrakenExchange(
                KrakenConfig(
                    base_url=base_url, ws_url=ws_url, min_spacing_s=0.0, pool_limit=max(20, concurrency)
                ),
                state_dir=Path(state),
                rate_limiter=RequestRateLimiter.build(None, min_spacing_s=0.0),
            )
            await ours.start()
            session = aiohttp.ClientSession()
            url = f"{base_url}/0/public/Ticker?pair=XBTUSD"

            async def tradebot_call() -> Decimal:
                return (await ours.ticker(["BTC/USD"]))[0].bid

            async def bare_call() -> Decimal:
                async with session.get(url) as resp:
                    body = json.loads(await resp.read())
                return Decimal(body["result"]["XXBTZUSD"]["b"][0])

            clients: dict[str, Callable[[], Awaitable[Decimal]]] = {
                "tradebot": tradebot_call,
                "bare aiohttp": bare_call,
            }
            ccxt_client = None
            if ccxt_async is not None:
                ccxt_client = ccxt_async.kraken({"enableRateLimit": False})
                ccxt_client.urls["api"] = {**ccxt_client.urls["api"], "public": base_url, "private": base_url}
                await ccxt_client.load_markets()

                async def ccxt_call() -> Decimal:
                    return Decimal(str((await ccxt_client.fetch_ticker("BTC/USD"))["bid"]))

                clients["ccxt"] = ccxt_call
            best: dict[str, tuple[float, float, float]] = {}
            try:
                for _ in range(rounds):
                    for name, call in clients.items():
                        result = await measure(calls, call, concurrency)
                        if name not in best or result[0] > best[name][0]:
                            best[name] = result
            finally:
                await session.close()
                await ours.close()
                if ccxt_client is not None:
                    await ccxt_client.close()
    if remote:
        where = f"simulator in its own process on 127.0.0.1, {concurrency} calls in flight per client"
    else:
        where = "simulator in this process on 127.0.0.1, sequential calls"
    print(
        f"{where}; event loop {event_loop.loop_name()}; {calls} Ticker calls per round, best of {rounds} rounds\n"
    )
    for name, (rate, p50, p99) in best.items():
        print(f"{name:<14} {rate:8.0f} calls/s   p50 {p50 * 1e3:6.3f} ms   p99 {p99 * 1e3:6.3f} ms")
    ok = True
    t_rate, _, t_p99 = best["tradebot"]
    b_rate = best["bare aiohttp"][0]
    ratio_bare = b_rate / t_rate
    met = ratio_bare <= 1.25
    ok &= met
    print(f"\nbare loop / tradebot: {ratio_bare:.2f}x (target <= 1.25x: {'met' if met else 'MISSED'})")
    if "ccxt" in best:
        c_rate, _, c_p99 = best["ccxt"]
        met = t_rate / c_rate >= 1.5 and t_p99 < c_p99
        ok &= met
        print(
            f"tradebot / ccxt: {t_rate / c_rate:.2f}x calls/s, p99 {t_p99 * 1e3:.3f} vs {c_p99 * 1e3:.3f} ms "
            f"(target >= 1.5x and lower p99: {'met' if met else 'MISSED'})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--remote",
        type=int,
        default=0,
        metavar="N",
        help="run the simulator as a separate process, with N calls in flight per client (0: in this process)",
    )
    args = parser.parse_args()
    sys.exit(event_loop.run(main(args.calls, args.rounds, args.remote)))
