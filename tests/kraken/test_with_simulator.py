"""End to end against the Kraken-compatible simulator on 127.0.0.1: real HTTP, WebSocket, signing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stamina

from tradebot.core.errors import (
    ConnectionFailed,
    ExchangeError,
    ExchangeUnavailable,
    RateLimited,
    RequestTimeout,
)
from tradebot.core.models import Candle, OrderRequest, OrderStatus, OrderType, Side, Ticker
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.resilience.breaker import BreakerState
from tradebot.resilience.ratelimit import RateTier, RequestRateLimiter
from tradebot.simulator import Simulator, run_simulator

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(seed=1, tick_interval_s=0.05, heartbeat_s=0.1) as simulator:
        yield simulator


def connect(
    sim: Simulator, state_dir: Path | None, *, limiter: RequestRateLimiter | None = None, **overrides: Any
) -> KrakenExchange:
    settings: dict[str, Any] = dict(
        base_url=sim.base_url,
        ws_url=sim.ws_url,
        min_spacing_s=0.0,
        request_timeout_s=0.5,
        connect_timeout_s=0.5,
        order_lookup_delay_s=0.05,
        breaker_min_calls=20,
        breaker_window=20,
        breaker_open_wait_s=0.2,
        ws_heartbeat_timeout_s=0.5,
        ws_reconnect_initial_s=0.05,
        ws_reconnect_max_s=0.2,
        rest_fallback_after_s=0.1,
        rest_fallback_poll_s=0.05,
    )
    settings.update(overrides)
    limiter = limiter or RequestRateLimiter.build(RateTier("test", 20, 100.0), min_spacing_s=0.0)
    return KrakenExchange(
        KrakenConfig(**settings),
        api_key=sim.api_key,
        api_secret=sim.api_secret,
        state_dir=state_dir,
        rate_limiter=limiter,
    )


def limit_order(cl: str) -> OrderRequest:
    return OrderRequest(
        pair="BTC/USD",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        volume=Decimal("0.01"),
        client_order_id=cl,
        price=Decimal("1000"),
    )


async def test_public_and_private_round_trip(sim: Simulator, tmp_path: Path) -> None:
    ex = connect(sim, tmp_path)
    try:
        tickers = await ex.ticker(["BTC/USD", "ETH/USD"])
        assert {t.pair for t in tickers} == {"BTC/USD", "ETH/USD"} and all(t.bid <= t.ask for t in tickers)
        candles = await ex.ohlc("BTC/USD", 1)
        assert candles and candles[-1].pair == "BTC/USD"
        balances = await ex.balances()
        assert balances.get("USD") == Decimal("100000") and balances.get("BTC") == Decimal("1")
        assert (await ex.system_status()).online
        assert await ex.refresh_pairs() >= 4
    finally:
        await ex.close()


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ("error=EService:Unavailable", ExchangeUnavailable),
        ("error=EService:Busy", ExchangeUnavailable),
        ("http5xx=502", ExchangeUnavailable),
        ("malformed", ExchangeUnavailable),
        ("truncated", ExchangeUnavailable),
        ("drop", ConnectionFailed),
        ("timeout=1", RequestTimeout),
        ("error=EAPI:Rate limit exceeded", RateLimited),
    ],
)
async def test_each_fault_kind_is_typed_and_retried(
    sim: Simulator, tmp_path: Path, fault: str, cls: type[Exception]
) -> None:
    ex = connect(sim, tmp_path)
    try:
        sim.faults.add(f"{fault},on=Balance,n=1")
        assert not (await ex.balances()).stale  # one fault, then the retry succeeds
        sim.faults.add(f"{fault},on=Balance")
        with pytest.raises(cls, match="private/Balance"):
            await ex.rest.private("Balance")
    finally:
        sim.faults.clear()
        await ex.close()
    assert ex.retry_stats.of("private/Balance").retries >= 3


async def test_order_accepted_but_response_lost_ends_with_exactly_one_order(
    sim: Simulator, tmp_path: Path
) -> None:
    ex = connect(sim, tmp_path)
    sim.faults.add("drop_response,on=AddOrder,n=1")
    try:
        info = await ex.place_order(limit_order("cl-lost-1"))
    finally:
        await ex.close()
    state = sim.state()
    assert state["orders_created"]["cl-lost-1"] == 1
    assert state["add_order_calls"]["cl-lost-1"] == 1
    assert info.status is OrderStatus.OPEN and info.exchange_order_id
    assert [o["txid"] for o in state["open_orders"]] == [info.exchange_order_id]


@pytest.mark.parametrize("fault", ["drop", "http5xx=503", "timeout=1", "error=EService:Unavailable"])
async def test_order_that_never_landed_is_resent_once_proven_absent(
    sim: Simulator, tmp_path: Path, fault: str
) -> None:
    ex = connect(sim, tmp_path)
    sim.faults.add(f"{fault},on=AddOrder,n=1")
    try:
        await ex.place_order(limit_order("cl-resend-1"))
    finally:
        await ex.close()
    state = sim.state()
    assert state["orders_created"]["cl-resend-1"] == 1
    assert state["add_order_calls"]["cl-resend-1"] == 2


async def test_rate_limiter_keeps_sustained_load_free_of_rejections(sim: Simulator, tmp_path: Path) -> None:
    # a tight tier (max 6, -10/s) so a sustained load takes seconds, not minutes; the margin of
    # 2 units absorbs 0.2 s of difference between our clock and the arrival times
    sim.faults.add("ratelimit=6/10")
    limiter = RequestRateLimiter.build(RateTier("tight", 6, 10.0), min_spacing_s=0.01, margin=2.0)
    ex = connect(sim, tmp_path, limiter=limiter)
    start = asyncio.get_running_loop().time()
    with stamina.set_testing(True, attempts=1):  # a rejection would surface, not be retried away
        try:
            await asyncio.gather(*(ex.rest.private("Balance") for _ in range(30)))  # 7x the burst
        finally:
            await ex.close()
    assert limiter.counter is not None and limiter.counter.waits > 0
    assert asyncio.get_running_loop().time() - start >= (30 - 4) / 10 - 0.2  # paced at the decay rate
    # the same load without the limiter is rejected by the exchange (so this test can fail)
    await asyncio.sleep(0.7)
    unlimited = connect(sim, tmp_path, limiter=RequestRateLimiter.build(None, min_spacing_s=0.0))
    with stamina.set_testing(True, attempts=1):
        try:
            results = await asyncio.gather(
                *(unlimited.rest.private("Balance") for _ in range(30)), return_exceptions=True
            )
        finally:
            await unlimited.close()
    assert any(isinstance(r, RateLimited) for r in results)


async def test_nonces_survive_a_restart(sim: Simulator, tmp_path: Path) -> None:
    with stamina.set_testing(True, attempts=1):  # an invalid nonce would surface
        for _ in range(3):
            ex = connect(sim, tmp_path)
            try:
                await asyncio.gather(*(ex.rest.private("Balance") for _ in range(5)))
            finally:
                await ex.close()


async def test_private_requests_take_turns_so_nonces_arrive_in_order(sim: Simulator, tmp_path: Path) -> None:
    """Side by side on separate connections, requests may reach Kraken in any order: private
    ones are sent one at a time, each after the previous answer came back."""
    sim.faults.add("latency=0.05,on=Balance")
    ex = connect(sim, tmp_path)
    loop = asyncio.get_running_loop()
    done: dict[str, float] = {}

    async def timed(name: str, call: Any) -> None:
        await call
        done[name] = loop.time()

    try:
        with stamina.set_testing(True, attempts=1):  # an invalid nonce would surface
            started = loop.time()
            await asyncio.gather(
                *(timed(f"balance{i}", ex.rest.private("Balance")) for i in range(4)),
                timed("ticker", ex.ticker(["BTC/USD"])),
            )
            took = loop.time() - started
    finally:
        await ex.close()
    assert took >= 4 * 0.05 * 0.95, f"private requests overlapped ({took:.3f}s for 4 of 0.05s each)"
    assert sim.stats.requests["Balance"] == 4
    balances = sorted(t for name, t in done.items() if name != "ticker")
    assert done["ticker"] < balances[1], "a public call waited behind the private ones"


async def test_a_cancel_goes_ahead_of_look_ups_waiting_for_their_turn(sim: Simulator, tmp_path: Path) -> None:
    """On HALT the cancel must not wait behind balance and order look-ups already queued."""
    sim.faults.add("latency=0.05,on=Balance")
    ex = connect(sim, tmp_path)
    order: list[str] = []

    async def answered(name: str, call: Any) -> None:
        await call
        order.append(name)

    try:
        with stamina.set_testing(True, attempts=1):
            looking = [
                asyncio.ensure_future(answered(f"balance{i}", ex.rest.private("Balance"))) for i in range(3)
            ]
            await asyncio.sleep(0.01)  # the first Balance is on the wire, two wait for their turn
            await asyncio.gather(answered("cancel", ex.rest.private("CancelAll", idempotent=False)), *looking)
    finally:
        await ex.close()
    assert sim.stats.requests["CancelAll"] == 1 and sim.stats.requests["Balance"] == 3
    assert order == ["balance0", "cancel", "balance1", "balance2"]


async def test_calls_still_waiting_when_the_client_closes_are_not_sent(
    sim: Simulator, tmp_path: Path
) -> None:
    """Closing the client must not leave a fresh session behind for calls that were queued."""
    sim.faults.add("latency=0.1,on=Balance")
    ex = connect(sim, tmp_path)
    await ex.start()
    created = ex.rest.sessions_created
    with stamina.set_testing(True, attempts=1):
        first = asyncio.ensure_future(ex.rest.private("Balance"))
        queued = asyncio.ensure_future(ex.rest.private("AddOrder", {"pair": "XBTUSD"}, idempotent=False))
        await asyncio.sleep(0.02)  # the Balance is on the wire, the AddOrder waits for its turn
        await ex.close()
        results = await asyncio.gather(first, queued, return_exceptions=True)
        with pytest.raises(ExchangeError, match="not sent, the client was closed"):
            await ex.ticker(["BTC/USD"])
    assert isinstance(results[1], ExchangeError) and "client was closed" in str(results[1])
    assert getattr(results[1], "not_sent", False)  # an order never sent is certainly not placed
    assert ex.rest.sessions_created == created and ex.rest._session is None
    assert sim.stats.requests["AddOrder"] == 0
    await ex.start()  # started again, it works again
    try:
        assert (await ex.ticker(["BTC/USD"]))[0].bid > 0
    finally:
        await ex.close()


async def test_waiting_for_the_turn_counts_against_the_request_timeout(
    sim: Simulator, tmp_path: Path
) -> None:
    """However many private requests go ahead of it, a call ends within its own timeout, and
    one that runs out still waiting is known not to have been sent."""
    sim.faults.add("latency=0.55,on=OpenOrders")
    sim.faults.add("latency=0.55,on=CancelAll")
    ex = connect(sim, tmp_path, request_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    try:
        with stamina.set_testing(True, attempts=1):
            looking = asyncio.ensure_future(ex.rest.private("OpenOrders"))  # on the wire until 0.55 s
            await asyncio.sleep(0)
            started = loop.time()
            balance = asyncio.ensure_future(ex.rest.private("Balance"))  # waits; its timeout ends at 1.0 s
            await asyncio.sleep(0.25)
            # a cancel comes later but goes first: it holds the turn from 0.55 s to 1.1 s
            cancel = asyncio.ensure_future(ex.rest.private("CancelAll", idempotent=False))
            with pytest.raises(RequestTimeout, match="not sent") as caught:
                await balance
            assert loop.time() - started < 1.0 + 0.08  # its own timeout, not the calls' ahead of it
            assert getattr(caught.value, "not_sent", False)  # it never left: certainly not placed
            assert not isinstance(await looking, BaseException)
            assert not isinstance(await cancel, BaseException)
    finally:
        await ex.close()
    assert sim.stats.requests["Balance"] == 0
    assert sim.stats.requests["OpenOrders"] == 1 and sim.stats.requests["CancelAll"] == 1


async def test_breaker_opens_and_recovers_against_the_simulator(sim: Simulator, tmp_path: Path) -> None:
    ex = connect(sim, tmp_path, breaker_min_calls=4, breaker_window=4)
    sim.faults.add("http5xx=503,on=Ticker")
    try:
        for _ in range(2):
            with pytest.raises((ExchangeUnavailable, Exception)):
                await ex.ticker(["BTC/USD"])
        assert ex.breakers["public"].state is BreakerState.OPEN
        sim.faults.clear()
        await asyncio.sleep(0.25)
        await ex.ticker(["BTC/USD"])
        await ex.ticker(["BTC/USD"])
        assert ex.breakers["public"].state is BreakerState.CLOSED
    finally:
        await ex.close()


async def _take_until(
    stream: AsyncIterator[Ticker | Candle], done: Any, timeout: float = 8.0
) -> list[Ticker | Candle]:
    out: list[Ticker | Candle] = []

    async def run() -> None:
        async for event in stream:
            out.append(event)
            if done(event, out):
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_websocket_reconnects_resubscribes_and_falls_back_to_rest(
    sim: Simulator, tmp_path: Path
) -> None:
    ex = connect(sim, tmp_path)
    stream = ex.market_data(["BTC/USD"], ohlc_interval=1)
    try:
        events = await _take_until(stream, lambda e, out: isinstance(e, Ticker) and len(out) >= 6)
        assert any(isinstance(e, Candle) for e in events)
        stats = ex.market_data_stats
        assert stats is not None and stats.connected and stats.connects == 1
        # the exchange drops every socket and refuses new ones for a second
        sim.faults.add("ws_disconnect=1")
        await _take_until(stream, lambda e, out: isinstance(e, Ticker) and stats.using_fallback)
        assert not stats.connected and stats.fallback_polls >= 1
        assert sim.state()["requests"].get("Ticker", 0) > 0
        # back online: reconnected, resubscribed, polling stopped
        await _take_until(stream, lambda e, out: isinstance(e, Ticker) and stats.connected)
        assert not stats.using_fallback and stats.reconnects >= 1 and stats.connects >= 2
        assert sim.state()["ws"]["connections_total"] >= 2
        assert stats.subscriptions_sent == 4  # ticker + ohlc, sent again on the new socket
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await ex.close()
