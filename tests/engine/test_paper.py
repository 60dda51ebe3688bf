"""Paper exchange: fills, fees, slippage, limits, funds, persistence, market data, plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import attrs
import pytest

from tradebot.core.errors import InsufficientFunds, InvalidOrder, MarketClosed, OrderNotFound, UnknownPair
from tradebot.core.exchange import Exchange, MarketEvent
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side, Ticker
from tradebot.exchanges import paper
from tradebot.exchanges.paper import PaperConfig, PaperExchange

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tick(bid: str, ask: str, pair: str = "BTC/USD") -> Ticker:
    return Ticker(pair, D(bid), D(ask), D(bid), D(1), T0)


def order(cid: str, side: Side, vol: str, price: str | None = None, pair: str = "BTC/USD") -> OrderRequest:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderRequest(pair, side, kind, D(vol), cid, None if price is None else D(price))


def make(tmp_path: Path | None = None, **cfg: object) -> PaperExchange:
    config = PaperConfig(starting_balances={"USD": D(10000)}, fee_pct=D("0.1"), slippage_bps=D(10), **cfg)  # type: ignore[arg-type]
    ex = PaperExchange(config, state_path=None if tmp_path is None else tmp_path / "paper.json")
    return ex


async def test_market_orders_fill_at_touch_with_slippage_and_fee() -> None:
    ex = make()
    assert isinstance(ex, Exchange)
    with pytest.raises(MarketClosed):
        await ex.place_order(order("a", Side.BUY, "1"))
    ex.on_ticker(tick("1000", "1010"))
    buy = await ex.place_order(order("b", Side.BUY, "2"))
    assert buy.status is OrderStatus.CLOSED and buy.avg_fill_price == D("1011.01")  # ask + 10 bps
    assert buy.fee == D("2022.02") * D("0.001")
    bal = await ex.balances()
    assert bal.get("BTC") == D(2) and bal.get("USD") == D(10000) - D("2022.02") - D("2.02202")
    sell = await ex.place_order(order("c", Side.SELL, "1"))
    assert sell.avg_fill_price == D("999.0")  # bid - 10 bps
    assert (await ex.order_by_client_id("b")) == buy


async def test_limit_orders_rest_then_fill_when_crossed() -> None:
    ex = make(maker_fee_pct=D("0.05"))
    ex.on_ticker(tick("1000", "1010"))
    rest = await ex.place_order(order("l1", Side.BUY, "1", price="990"))
    assert rest.status is OrderStatus.OPEN and [o.client_order_id for o in await ex.open_orders()] == ["l1"]
    assert ex.on_ticker(tick("995", "1000")) == []
    [filled] = ex.on_ticker(tick("985", "989"))
    assert (
        filled.status is OrderStatus.CLOSED and filled.avg_fill_price == D(990) and filled.fee == D("0.495")
    )
    # a limit that crosses on arrival takes the touch price, never worse than its limit
    taker = await ex.place_order(order("l2", Side.BUY, "1", price="1200"))
    assert taker.status is OrderStatus.CLOSED and taker.avg_fill_price == D("989.989")


async def test_funds_uniqueness_and_cancel() -> None:
    ex = make()
    ex.on_ticker(tick("1000", "1000"))
    with pytest.raises(InsufficientFunds):
        await ex.place_order(order("big", Side.BUY, "20"))
    with pytest.raises(InsufficientFunds):
        await ex.place_order(order("short", Side.SELL, "1"))
    await ex.place_order(order("r1", Side.BUY, "6", price="900"))
    with pytest.raises(InsufficientFunds):  # the first order holds 5400+ USD
        await ex.place_order(order("r2", Side.BUY, "6", price="900"))
    with pytest.raises(InvalidOrder):
        await ex.place_order(order("r1", Side.BUY, "1", price="900"))
    with pytest.raises(UnknownPair):
        await ex.place_order(order("x", Side.BUY, "1", pair="BTCUSD"))
    assert await ex.cancel_order("r1") and not await ex.cancel_order("r1")
    with pytest.raises(OrderNotFound):
        await ex.cancel_order("nope")
    assert (await ex.order_by_client_id("r1")).status is OrderStatus.CANCELED  # type: ignore[union-attr]
    await ex.place_order(order("r2", Side.BUY, "6", price="900"))


async def test_account_survives_restart(tmp_path: Path) -> None:
    ex = make(tmp_path)
    await ex.start()
    ex.on_ticker(tick("1000", "1000"))
    await ex.place_order(order("a", Side.BUY, "1"))
    await ex.place_order(order("b", Side.SELL, "0.5", price="2000"))
    again = make(tmp_path)
    await again.start()
    assert (await again.balances()).totals == (await ex.balances()).totals
    assert [o.client_order_id for o in await again.open_orders()] == ["b"]
    with pytest.raises(InvalidOrder):  # client ids stay unique across restarts
        await again.place_order(order("a", Side.BUY, "1"))


@attrs.define
class Source:
    events: list[MarketEvent]
    asked: list[tuple[list[str], int | None]] = attrs.field(factory=list)

    async def market_data(
        self, pairs: Sequence[str], *, ohlc_interval: int | None = None
    ) -> AsyncIterator[MarketEvent]:
        self.asked.append((list(pairs), ohlc_interval))
        for e in self.events:
            yield e


async def test_market_data_is_delegated_and_drives_fills() -> None:
    src = Source([tick("1000", "1001"), tick("900", "901")])
    ex = PaperExchange(PaperConfig(), market_source=src)
    ex.on_ticker(tick("1000", "1001"))
    await ex.place_order(order("l", Side.BUY, "1", price="950"))
    seen = [e async for e in ex.market_data(["BTC/USD"], ohlc_interval=5)]
    assert seen == src.events and src.asked == [(["BTC/USD"], 5)]
    assert (await ex.order_by_client_id("l")).status is OrderStatus.CLOSED  # type: ignore[union-attr]


def test_plugin_registration_and_factory(tmp_path: Path) -> None:
    [spec] = paper.tradebot_register_exchanges()
    assert spec.name == "paper" and spec.config_cls is PaperConfig

    @attrs.define
    class Ctx:
        state_dir: Path
        clock: object = None
        extras: dict[str, object] = attrs.field(factory=dict)

    src = Source([])
    ctx = Ctx(tmp_path, extras={"market_data_source": src})
    ex = spec.factory(PaperConfig(), ctx)
    assert isinstance(ex, PaperExchange) and ex.market_source is src
    assert ex.state_path == tmp_path / "paper-exchange.json"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="fee_pct must be between"):
        PaperConfig(fee_pct=D(20))
    with pytest.raises(ValueError, match=r"starting_balances\.USD must be >= 0"):
        PaperConfig(starting_balances={"USD": D(-1)})
    assert PaperConfig(fee_pct="0.2").fee_pct == D("0.2")  # type: ignore[arg-type]
