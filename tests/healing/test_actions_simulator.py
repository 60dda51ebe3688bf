"""Each recovery action against a fault injected in the simulator (real HTTP/WebSocket on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import stamina

from tradebot.core.clock import SystemClock
from tradebot.core.errors import ConnectionFailed, DNSError, OrderOutcomeUnknown
from tradebot.core.healing import Failure, Healer, RecoveryLimits
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.plugins.recovery.dns import DnsAction, DnsConfig
from tradebot.plugins.recovery.escalate import EscalateAction
from tradebot.plugins.recovery.reconnect import ReconnectAction, ReconnectConfig
from tradebot.plugins.recovery.resync import ResyncAction
from tradebot.resilience.ratelimit import RateTier, RequestRateLimiter
from tradebot.simulator import Simulator, run_simulator

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(seed=3, tick_interval_s=0.05, heartbeat_s=0.1) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def one_try() -> Any:
    with stamina.set_testing(True, attempts=1):  # faults surface at once instead of being retried away
        yield


def exchange(sim: Simulator, tmp_path: Path, host: str = "127.0.0.1") -> KrakenExchange:
    base = sim.base_url.replace("127.0.0.1", host)
    cfg = KrakenConfig(
        base_url=base,
        ws_url=sim.ws_url,
        min_spacing_s=0.0,
        request_timeout_s=0.5,
        connect_timeout_s=0.5,
        breaker_min_calls=20,
        breaker_window=20,
        ws_heartbeat_timeout_s=0.5,
        ws_reconnect_initial_s=0.05,
        ws_reconnect_max_s=0.2,
        rest_fallback_after_s=5,
        rest_fallback_poll_s=0.5,
    )
    limiter = RequestRateLimiter.build(RateTier("test", 20, 100.0), min_spacing_s=0.0)
    return KrakenExchange(
        cfg, api_key=sim.api_key, api_secret=sim.api_secret, state_dir=tmp_path, rate_limiter=limiter
    )


class Stopper:
    def __init__(self) -> None:
        self.stops: list[tuple[str, int]] = []

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        self.stops.append((reason, exit_code))


def context(ex: Any, **kw: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(exchange=ex, clock=SystemClock(), extras={"bot": Stopper()}, **kw)


async def test_reconnect_heals_dropped_connections(sim: Simulator, tmp_path: Path) -> None:
    ex = exchange(sim, tmp_path)
    try:
        await ex.server_time()
        sessions = ex.rest.sessions_created
        sim.faults.add("drop,on=Time,for=0.3")
        with pytest.raises(ConnectionFailed) as err:
            await ex.server_time()
        failure = Failure.from_exception(err.value, component="market-data", probe=ex.server_time)
        ctx = context(ex)
        action = ReconnectAction(ReconnectConfig(attempts=5, retry_wait_s=0.1), ctx)
        healer = Healer([action, DnsAction(None, ctx), EscalateAction(None, ctx)])
        assert healer.applicable(failure) == ["reconnect", "escalate"]
        result = await healer.heal(failure)
        assert result.healed and result.action == "reconnect"
        assert result.attempts[0].outcome in ("not-healed", "error")  # the fault was still on at first
        assert ex.rest.sessions_created > sessions
        assert ctx.extras["bot"].stops == []
        await ex.server_time()
    finally:
        await ex.close()


async def test_dns_failure_on_unresolvable_host_escalates(sim: Simulator, tmp_path: Path) -> None:
    ex = exchange(sim, tmp_path, host="tradebot-test.invalid")
    try:
        with pytest.raises(DNSError) as err:
            await ex.server_time()
        failure = Failure.from_exception(err.value, probe=ex.server_time)
        assert failure.context["host"] == "tradebot-test.invalid"
        ctx = context(ex)
        dns = DnsAction(DnsConfig(resolve_attempts=2, backoff_initial_s=0.05, resolve_timeout_s=2), ctx)
        healer = Healer([ReconnectAction(None, ctx), dns, EscalateAction(None, ctx)])
        result = await healer.heal(failure)
        assert [a.action for a in result.attempts] == ["dns", "escalate"]
        assert result.attempts[0].outcome == "not-healed" and result.escalated
        assert ctx.extras["bot"].stops[0][1] == 75
        assert healer.counters.failures == {"dns": 1}
    finally:
        await ex.close()


async def test_dns_heals_once_the_name_resolves(sim: Simulator, tmp_path: Path) -> None:
    ex = exchange(sim, tmp_path, host="localhost")
    try:
        failure = Failure.from_exception(
            DNSError("DNS resolution failed for host 'localhost'", host="localhost"), probe=ex.server_time
        )
        dns = DnsAction(DnsConfig(backoff_initial_s=0.05), context(ex))
        result = await Healer([dns]).heal(failure)
        assert result.healed and dns.last_addresses
    finally:
        await ex.close()


async def test_reconnect_heals_a_stale_websocket(sim: Simulator, tmp_path: Path) -> None:
    ex = exchange(sim, tmp_path)
    got: list[float] = []

    async def consume() -> None:
        async for _ in ex.market_data(["BTC/USD"]):
            got.append(time.monotonic())  # noqa: PERF401 - read while the stream still runs

    task = asyncio.create_task(consume())
    try:
        deadline = time.monotonic() + 5
        while not got:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        sim.faults.add("ws_disconnect=0.3")
        await asyncio.sleep(0.05)
        ctx = context(ex)
        action = ReconnectAction(ReconnectConfig(fresh_data_timeout_s=3), ctx)
        result = await Healer([action]).heal(Failure(kind="stale-market-data", component="market-data"))
        assert result.healed and result.action == "reconnect"
        stats = ex.market_data_stats
        assert stats is not None and stats.reconnects + stats.connects >= 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ex.close()


async def test_resync_reconciles_after_unknown_order_outcome(sim: Simulator, tmp_path: Path) -> None:
    from tradebot.core.executor import OrderExecutor
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.store import StateStore

    ex = exchange(sim, tmp_path)
    store = StateStore(tmp_path / "state")
    try:
        executor = OrderExecutor(ex, store, Portfolio(store))
        ctx = context(ex, executor=executor)
        action = ResyncAction(RecoveryLimits(retry_wait_s=0), ctx)
        failure = Failure.from_exception(
            OrderOutcomeUnknown("AddOrder answer lost", endpoint="private/AddOrder")
        )
        assert action.applies_to(failure)
        assert not action.applies_to(Failure.from_exception(ConnectionFailed("x")))
        result = await Healer([action]).heal(failure)
        assert result.healed and action.last_report is not None and action.last_report.unresolved == ()
    finally:
        store.close()
        await ex.close()
