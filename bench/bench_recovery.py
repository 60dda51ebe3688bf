"""Recovery timings, run by hand: ``python bench/bench_recovery.py``.

Prints the time from the end of a fault to the first successful call after healing
(reconnect after dropped connections, DNS, WebSocket), and from a child-process crash to
the restarted child being ready (first heartbeat) under ``--auto-restart``.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import types
from pathlib import Path

import stamina

from tradebot.app.autorestart import AutoRestarter, RestartPolicy
from tradebot.core import loop as event_loop
from tradebot.core.clock import SystemClock
from tradebot.core.errors import DNSError
from tradebot.core.healing import Failure, Healer
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.plugins.recovery.dns import DnsAction, DnsConfig
from tradebot.plugins.recovery.reconnect import ReconnectAction, ReconnectConfig
from tradebot.resilience.ratelimit import RateTier, RequestRateLimiter
from tradebot.simulator import run_simulator

ROUNDS = 5


def make_exchange(sim: object, tmp: Path, host: str = "127.0.0.1") -> KrakenExchange:
    cfg = KrakenConfig(
        base_url=sim.base_url.replace("127.0.0.1", host),  # type: ignore[attr-defined]
        ws_url=sim.ws_url,  # type: ignore[attr-defined]
        min_spacing_s=0.0,
        request_timeout_s=0.5,
        connect_timeout_s=0.5,
        breaker_min_calls=50,
        breaker_window=50,
        breaker_open_wait_s=0.05,
        ws_heartbeat_timeout_s=0.5,
        ws_reconnect_initial_s=0.02,
        ws_reconnect_max_s=0.1,
        rest_fallback_after_s=30,
    )
    limiter = RequestRateLimiter.build(RateTier("bench", 1000, 1000.0), min_spacing_s=0.0)
    return KrakenExchange(cfg, state_dir=tmp, rate_limiter=limiter)


def report(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(f"{name:<44} median {statistics.median(ms):8.1f} ms   max {max(ms):8.1f} ms   (n={len(ms)})")


async def bench_reconnect(sim: object, tmp: Path) -> list[float]:
    ex = make_exchange(sim, tmp)
    out = []
    try:
        for _ in range(ROUNDS):
            await ex.server_time()
            sim.faults.add("drop,on=Time,for=0.3")  # type: ignore[attr-defined]
            fault_end = time.monotonic() + 0.3
            try:
                await ex.server_time()
            except Exception as exc:  # noqa: BLE001
                failure = Failure.from_exception(exc, probe=ex.server_time)
            ctx = types.SimpleNamespace(exchange=ex, clock=SystemClock(), extras={})
            action = ReconnectAction(
                ReconnectConfig(attempts=10, retry_wait_s=0.01, max_per_window=1000), ctx
            )
            result = await Healer([action]).heal(failure)
            assert result.healed, result
            out.append(time.monotonic() - fault_end)
    finally:
        await ex.close()
    return out


async def bench_dns(sim: object, tmp: Path) -> list[float]:
    ex = make_exchange(sim, tmp, host="localhost")
    out = []
    try:
        for _ in range(ROUNDS):
            t0 = time.monotonic()
            failure = Failure.from_exception(
                DNSError("resolution failed", host="localhost"), probe=ex.server_time
            )
            dns = DnsAction(
                DnsConfig(backoff_initial_s=0.05, max_per_window=1000), types.SimpleNamespace(exchange=ex)
            )
            assert (await Healer([dns]).heal(failure)).healed
            out.append(time.monotonic() - t0)
    finally:
        await ex.close()
    return out


async def bench_websocket(sim: object, tmp: Path) -> list[float]:
    ex = make_exchange(sim, tmp)
    got: list[float] = []

    async def consume() -> None:
        async for _ in ex.market_data(["BTC/USD"]):
            got.append(time.monotonic())  # noqa: PERF401 - read while the stream still runs

    task = asyncio.create_task(consume())
    out = []
    try:
        while not got:
            await asyncio.sleep(0.01)
        for _ in range(ROUNDS):
            sim.faults.add("ws_disconnect=0.3")  # type: ignore[attr-defined]
            fault_end = time.monotonic() + 0.3
            await asyncio.sleep(0.3)
            ctx = types.SimpleNamespace(exchange=ex, clock=SystemClock(), extras={})
            action = ReconnectAction(ReconnectConfig(fresh_data_timeout_s=5, max_per_window=1000), ctx)
            result = await Healer([action]).heal(Failure(kind="stale-market-data"))
            assert result.healed
            first = next(t for t in got if t > fault_end)
            out.append(first - fault_end)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ex.close()
    return out


def bench_child_restart(tmp: Path) -> list[float]:
    marker = tmp / "lives"
    script = tmp / "child.py"
    script.write_text(
        textwrap.dedent(f"""
        import pathlib, sys, time
        from tradebot.core.sdnotify import Heartbeat
        p = pathlib.Path({str(marker)!r})
        n = int(p.read_text()) if p.exists() else 0
        p.write_text(str(n + 1))
        Heartbeat().beat()          # ready
        time.sleep(0.1)
        sys.exit(0 if n >= {ROUNDS} else 1)
    """)
    )
    r = AutoRestarter(
        [sys.executable, str(script)],
        RestartPolicy(restart_delay_s=0, jitter=0, heartbeat_timeout_s=10, poll_interval_s=0.005),
        state_dir=tmp / "state",
    )
    assert r.run() == 0
    return [b.ready_at - a.ended for a, b in itertools.pairwise(r.runs) if b.ready_at and a.ended]  # type: ignore[operator]


async def main() -> None:
    with stamina.set_testing(True, attempts=1), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        async with run_simulator(seed=5, tick_interval_s=0.05, heartbeat_s=0.1) as sim:
            report("reconnect: fault end -> first good call", await bench_reconnect(sim, tmp))
            report("dns: failure -> resolved + first good call", await bench_dns(sim, tmp))
            report("websocket: fault end -> first message", await bench_websocket(sim, tmp))
        holder: list[list[float]] = []
        t = threading.Thread(target=lambda: holder.append(bench_child_restart(tmp)))
        t.start()
        t.join()
        report("child crash -> restarted child ready", holder[0])


if __name__ == "__main__":
    event_loop.run(main())
