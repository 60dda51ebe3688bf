"""Idempotent orders: an unknown outcome is resolved by lookup, never by a blind resend."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from tradebot.core.errors import InsufficientFunds, InvalidOrder, OrderOutcomeUnknown
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side

from .conftest import make_exchange
from .fake_kraken import FakeKraken


def order(cl: str = "cl-1", **kw: object) -> OrderRequest:
    fields: dict[str, object] = dict(
        pair="BTC/USD",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        volume=Decimal("1.25"),
        client_order_id=cl,
        price=Decimal("37500"),
    )
    fields.update(kw)
    return OrderRequest(**fields)  # type: ignore[arg-type]


async def test_order_carries_its_client_id(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    try:
        info = await ex.place_order(order())
    finally:
        await ex.close()
    assert info.client_order_id == "cl-1" and info.exchange_order_id and info.status is OrderStatus.OPEN
    ((_, _, params),) = [r for r in server.requests if r[0] == "AddOrder"]
    assert params["cl_ord_id"] == "cl-1" and params["pair"] == "XBTUSD" and params["price"] == "37500"
    assert params["volume"] == "1.25" and params["type"] == "buy" and params["ordertype"] == "limit"


@pytest.mark.parametrize(
    "lost",
    [("execute_then_drop",), ("execute_then_hang", 1.5)],
    ids=["response-dropped", "response-timed-out"],
)
async def test_accepted_order_with_lost_response_ends_with_exactly_one_order(
    server: FakeKraken, tmp_path: Path, lost: tuple[object, ...]
) -> None:
    ex = make_exchange(server.base_url, tmp_path, request_timeout_s=0.5)
    server.then("AddOrder", lost)
    try:
        info = await ex.place_order(order("cl-lost"))
    finally:
        await ex.close()
    assert info.client_order_id == "cl-lost" and info.status is OrderStatus.OPEN
    assert server.add_order_calls["cl-lost"] == 1  # found by lookup: never resent
    assert len(server.orders) == 1
    assert ex.orders_resolved_by_lookup == 1
    assert server.count("OpenOrders") >= 1


@pytest.mark.parametrize(
    "fault",
    [
        ("drop",),
        ("status", 502, b"<title>502: Bad gateway</title>"),
        ("json", {"error": ["EService:Unavailable"]}),
    ],
    ids=["dropped-before-execution", "http-502", "unavailable"],
)
async def test_order_that_did_not_land_is_resent_after_lookup_proves_it_absent(
    server: FakeKraken, tmp_path: Path, fault: tuple[object, ...]
) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    server.then("AddOrder", fault)
    try:
        info = await ex.place_order(order("cl-resend"))
    finally:
        await ex.close()
    assert info.exchange_order_id
    assert server.add_order_calls["cl-resend"] == 2
    assert len(server.orders) == 1
    assert ex.order_resends == 1
    methods = [m for m, _, _ in server.requests]
    first_add = methods.index("AddOrder")
    assert "OpenOrders" in methods[first_add:] and "ClosedOrders" in methods[first_add:]


async def test_outcome_unknown_when_lookup_fails(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path, breaker_min_calls=20, breaker_window=20)
    server.then("AddOrder", ("execute_then_drop",))
    server.then("OpenOrders", *[("status", 503, b"down")] * 3)
    try:
        with pytest.raises(OrderOutcomeUnknown) as info:
            await ex.place_order(order("cl-unknown"))
    finally:
        await ex.close()
    assert "cl-unknown" in str(info.value)
    assert server.add_order_calls["cl-unknown"] == 1  # nothing resent while undecidable


async def test_rejections_are_not_resent(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    server.then("AddOrder", ("json", {"error": ["EOrder:Insufficient funds"]}))
    try:
        with pytest.raises(InsufficientFunds, match="private/AddOrder"):
            await ex.place_order(order("cl-poor"))
        with pytest.raises(InvalidOrder, match="positive price"):
            await ex.place_order(order("cl-noprice", price=None))
    finally:
        await ex.close()
    assert server.add_order_calls["cl-poor"] == 1
    assert server.add_order_calls["cl-noprice"] == 0


async def test_explicit_transient_rejection_is_retried_safely(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    server.then(
        "AddOrder",
        ("json", {"error": ["EAPI:Invalid nonce"]}),
        ("json", {"error": ["EAPI:Rate limit exceeded"]}),
    )
    try:
        info = await ex.place_order(order("cl-nonce"))
    finally:
        await ex.close()
    assert info.exchange_order_id
    assert server.add_order_calls["cl-nonce"] == 3 and len(server.orders) == 1
    assert server.count("OpenOrders") == 0  # no lookup needed: Kraken said it did not place them


async def test_concurrent_orders_each_placed_once_with_unique_nonces(
    server: FakeKraken, tmp_path: Path
) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    try:
        infos = await asyncio.gather(*(ex.place_order(order(f"cl-{i}")) for i in range(20)))
    finally:
        await ex.close()
    assert len({i.exchange_order_id for i in infos}) == 20
    assert all(n == 1 for n in server.add_order_calls.values())
    assert len(set(server.nonces)) == len(server.nonces)


async def test_cancel_and_lookup_by_client_id(server: FakeKraken, tmp_path: Path) -> None:
    ex = make_exchange(server.base_url, tmp_path)
    try:
        await ex.place_order(order("cl-c"))
        found = await ex.order_by_client_id("cl-c")
        assert found is not None and found.status is OrderStatus.OPEN and found.pair == "BTC/USD"
        assert [o.client_order_id for o in await ex.open_orders()] == ["cl-c"]
        assert await ex.cancel_order("cl-c") is True
        assert await ex.cancel_order("cl-c") is False
        after = await ex.order_by_client_id("cl-c")
        assert after is not None and after.status is OrderStatus.CANCELED
        assert await ex.order_by_client_id("never-placed") is None
    finally:
        await ex.close()


async def test_order_rate_limit_backs_off_on_the_pairs_counter(server: FakeKraken, tmp_path: Path) -> None:
    from tradebot.resilience.ratelimit import RateTier, TradingRateLimiter

    ex = make_exchange(server.base_url, tmp_path)
    ex.trading_limiter = TradingRateLimiter(RateTier("test", 10, 50.0), margin=0)
    server.then("AddOrder", ("json", {"error": ["EOrder:Rate limit exceeded"]}))
    try:
        info = await ex.place_order(order("cl-rl", pair="XBT/USD"))
    finally:
        await ex.close()
    assert info.pair == "BTC/USD" and server.add_order_calls["cl-rl"] == 2
    counter = ex.trading_limiter.counter("BTC/USD")
    assert counter.waits == 1  # the resend waited for the penalised counter to drain
    assert (
        ex.rate_limiter.counter is not None and ex.rate_limiter.counter.waits == 0
    )  # REST counter untouched
