"""Risk gate: limits and the trading-state gate."""

from __future__ import annotations

import logging
from decimal import Decimal as D

import attrs
import pytest

from tradebot.core.clock import FakeClock
from tradebot.core.models import OrderType, Side, Signal, TradingState
from tradebot.core.risk import RejectReason, RiskGate, RiskLimits, RiskRejection
from tradebot.core.store import Position


@attrs.define
class State:
    state: TradingState = TradingState.ACTIVE


@attrs.define
class Book:
    volumes: dict[str, D] = attrs.field(factory=dict)
    marks: dict[str, D] = attrs.field(factory=dict)

    def position(self, pair: str) -> Position:
        return Position(pair, self.volumes.get(pair, D(0)), D(0))

    def mark_price(self, pair: str) -> D | None:
        return self.marks.get(pair)


def sig(side: Side, vol: str, pair: str = "BTC/USD", **kw: object) -> Signal:
    return Signal("s", pair, side, D(vol), **kw)  # type: ignore[arg-type]


def gate(limits: RiskLimits | None = None, **kw: object) -> tuple[RiskGate, State, Book]:
    """A gate without the spot rules (they have tests of their own below)."""
    st, book = State(), Book(marks={"BTC/USD": D(100)})
    return RiskGate(limits or RiskLimits(spot=False), st, book, **kw), st, book  # type: ignore[arg-type]


def reject(g: RiskGate, s: Signal) -> RejectReason:
    with pytest.raises(RiskRejection) as info:
        g.approve(s)
    return info.value.code


def test_active_approves_with_fresh_client_ids() -> None:
    g, _, _ = gate()
    a, b = g.approve(sig(Side.BUY, "1")), g.approve(sig(Side.BUY, "1"))
    assert a.client_order_id != b.client_order_id and len(a.client_order_id) == 36
    assert a.volume == D(1) and a.price is None
    lim = g.approve(sig(Side.SELL, "2", order_type=OrderType.LIMIT, limit_price=D(99)))
    assert lim.price == D(99) and lim.order_type is OrderType.LIMIT


def test_reducing_rejects_increasing_and_clips_reducing() -> None:
    g, st, book = gate()
    st.state = TradingState.REDUCING
    book.volumes["BTC/USD"] = D("0.5")
    assert reject(g, sig(Side.BUY, "0.1")) is RejectReason.NOT_REDUCING
    assert (
        reject(g, sig(Side.SELL, "1", pair="ETH/USD")) is RejectReason.NOT_REDUCING
    )  # flat: nothing to reduce
    order = g.approve(sig(Side.SELL, "2"))  # would flip the long: clipped to the position
    assert order.volume == D("0.5") and order.side is Side.SELL
    book.volumes["BTC/USD"] = D("-0.3")
    assert reject(g, sig(Side.SELL, "0.1")) is RejectReason.NOT_REDUCING
    assert g.approve(sig(Side.BUY, "1")).volume == D("0.3")


def test_reducing_counts_working_orders() -> None:
    pending = {"BTC/USD": D("-0.4")}
    g, st, book = gate(pending_exposure=lambda p: pending.get(p, D(0)))
    st.state = TradingState.REDUCING
    book.volumes["BTC/USD"] = D("0.5")
    assert g.approve(sig(Side.SELL, "1")).volume == D("0.1")
    pending["BTC/USD"] = D("-0.5")
    assert reject(g, sig(Side.SELL, "1")) is RejectReason.NOT_REDUCING


def test_halted_denies_everything_new() -> None:
    g, st, book = gate()
    st.state = TradingState.HALTED
    book.volumes["BTC/USD"] = D(1)
    assert reject(g, sig(Side.BUY, "1")) is RejectReason.HALTED
    assert reject(g, sig(Side.SELL, "1")) is RejectReason.HALTED


def test_max_position_allows_reducing_even_when_over() -> None:
    g, _, book = gate(RiskLimits(max_position=D(1), max_position_per_pair={"ETH/USD": D(10)}, spot=False))
    book.volumes["BTC/USD"] = D("0.8")
    assert reject(g, sig(Side.BUY, "0.3")) is RejectReason.MAX_POSITION
    assert g.approve(sig(Side.BUY, "0.2")).volume == D("0.2")
    book.volumes["BTC/USD"] = D(3)  # over the limit (e.g. the limit was lowered)
    assert g.approve(sig(Side.SELL, "1")).volume == D(1)
    assert reject(g, sig(Side.SELL, "7")) is RejectReason.MAX_POSITION  # flips to -4: over on the other side
    assert g.approve(sig(Side.BUY, "5", pair="ETH/USD")).volume == D(5)


def test_notional_min_size_invalid_and_no_price() -> None:
    g, _, _ = gate(RiskLimits(max_notional_per_order=D(500), min_order_size=D("0.01"), spot=False))
    assert reject(g, sig(Side.BUY, "6")) is RejectReason.MAX_NOTIONAL  # 6 x 100 mark
    assert g.approve(sig(Side.BUY, "5")).volume == D(5)
    assert (
        reject(g, sig(Side.BUY, "10", order_type=OrderType.LIMIT, limit_price=D(60)))
        is RejectReason.MAX_NOTIONAL
    )
    assert reject(g, sig(Side.BUY, "0.001")) is RejectReason.MIN_SIZE
    assert reject(g, sig(Side.BUY, "1", pair="ETH/USD")) is RejectReason.NO_PRICE
    assert reject(g, sig(Side.BUY, "0")) is RejectReason.INVALID
    assert reject(g, sig(Side.BUY, "1", order_type=OrderType.LIMIT)) is RejectReason.INVALID


async def test_orders_per_minute_sliding_window() -> None:
    clock = FakeClock()
    g, _, _ = gate(RiskLimits(max_orders_per_minute=3, spot=False), clock=clock)
    for _ in range(3):
        g.approve(sig(Side.BUY, "1"))
        await clock.advance(10)
    assert reject(g, sig(Side.BUY, "1")) is RejectReason.RATE_LIMIT
    await clock.advance(30)  # the first approval (t=0) is now 60 s old
    g.approve(sig(Side.BUY, "1"))
    assert reject(g, sig(Side.BUY, "1")) is RejectReason.RATE_LIMIT


def test_rejections_are_counted_and_logged_once_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    g, st, _ = gate()
    st.state = TradingState.HALTED
    with caplog.at_level(logging.WARNING, logger="tradebot.risk"):
        for _ in range(5):
            reject(g, sig(Side.BUY, "1"))
        reject(g, sig(Side.BUY, "-1"))
    assert g.rejections[RejectReason.HALTED] == 5 and g.rejections[RejectReason.INVALID] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2


def test_limits_validate_and_convert() -> None:
    lim = RiskLimits(max_position="2", max_position_per_pair={"BTC/USD": 0.5})  # type: ignore[arg-type]
    assert lim.position_limit("BTC/USD") == D("0.5") and lim.position_limit("X") == D(2)
    with pytest.raises(ValueError, match="max_orders_per_minute must be > 0"):
        RiskLimits(max_orders_per_minute=0)


def test_limits_from_a_settings_object() -> None:
    @attrs.frozen
    class Settings:
        max_position: D = D(1)
        max_notional_per_order: D = D(5000)
        max_orders_per_minute: int = 30
        min_order_volume: D = D("0.0001")

    g, _, _ = gate(Settings())  # type: ignore[arg-type]
    assert g.limits == RiskLimits(D(1), {}, D(5000), 30, D("0.0001"))
    assert reject(g, sig(Side.BUY, "0.00001")) is RejectReason.MIN_SIZE
    assert reject(g, sig(Side.BUY, "2")) is RejectReason.MAX_POSITION


@attrs.define
class Working:
    pair: str
    side: Side
    remaining: D
    price: D | None = None
    strategy: str = "s"


@attrs.define
class SpotBook(Book):
    cash: D = D(1000)
    own: dict[tuple[str, str], D] = attrs.field(factory=dict)

    def strategy_position(self, strategy: str, pair: str) -> Position:
        return Position(pair, self.own.get((strategy, pair), D(0)), D(0))


def spot_gate(limits: RiskLimits | None = None) -> tuple[RiskGate, SpotBook, list[Working]]:
    book, working = SpotBook(marks={"BTC/USD": D(100)}), []
    g = RiskGate(limits or RiskLimits(), State(), book, working_orders=lambda: working)  # type: ignore[arg-type]
    return g, book, working


def test_spot_sell_without_holdings_is_refused_naming_rule_and_figures() -> None:
    g, book, working = spot_gate()
    with pytest.raises(RiskRejection) as info:
        g.approve(sig(Side.SELL, "0.5"))
    assert info.value.code is RejectReason.NO_SHORT
    assert "the bot holds 0" in str(info.value) and "cannot go short" in str(info.value)
    book.volumes["BTC/USD"] = D(1)
    book.own[("s", "BTC/USD")] = D(1)
    working.append(Working("BTC/USD", Side.SELL, D("0.75"), strategy="other"))
    with pytest.raises(RiskRejection) as info:
        g.approve(sig(Side.SELL, "0.5"))
    assert info.value.code is RejectReason.SPOT_HOLDINGS
    assert "position 1, working sells 0.75, available 0.25" in str(info.value)
    assert g.approve(sig(Side.SELL, "0.25")).volume == D("0.25")


def test_a_strategy_sells_only_its_own_share() -> None:
    g, book, working = spot_gate()
    book.volumes["BTC/USD"] = D(3)
    book.own.update({("s", "BTC/USD"): D(1), ("other", "BTC/USD"): D(2)})
    working.append(Working("BTC/USD", Side.SELL, D("0.5"), strategy="s"))
    with pytest.raises(RiskRejection) as info:
        g.approve(sig(Side.SELL, "1"))
    assert info.value.code is RejectReason.STRATEGY_HOLDINGS
    assert "holds 1 of it with 0.5 already being sold (available 0.5)" in str(info.value)
    assert g.approve(sig(Side.SELL, "0.5")).volume == D("0.5")


def test_spot_buy_needs_the_cash_net_of_working_buys() -> None:
    g, _, working = spot_gate()
    working.append(Working("BTC/USD", Side.BUY, D(4), price=D(100)))  # 400 committed
    with pytest.raises(RiskRejection) as info:
        g.approve(sig(Side.BUY, "7"))  # 700 at the mark 100
    assert info.value.code is RejectReason.INSUFFICIENT_QUOTE
    assert "costs 700 but the bot's cash is 1000 with 400 committed" in str(info.value)
    assert g.approve(sig(Side.BUY, "6")).volume == D(6)


def test_spot_buy_needs_the_cash_for_its_fee_too() -> None:
    from tradebot.core.markets import MarketBook, MarketRules

    g, _, _ = spot_gate()
    g.markets = MarketBook(
        {"BTC/USD": MarketRules("BTC/USD", 1, 8, D("0.1"), D("0.00005"), D("0.5"), D("0.4"), D("0.25"))}
    )
    with pytest.raises(RiskRejection) as info:
        g.approve(sig(Side.BUY, "10"))  # 1000 at the mark 100: all the cash, and the fee on top
    assert info.value.code is RejectReason.INSUFFICIENT_QUOTE
    assert "costs 1004 (with the fee 4) but the bot's cash is 1000" in str(info.value)
    assert g.approve(sig(Side.BUY, "9.9")).volume == D("9.9")  # 990 + 3.96 fits


def test_low_priced_limit_sell_is_valued_at_the_mark_for_the_notional_cap() -> None:
    g, book, _ = spot_gate(RiskLimits(max_notional_per_order=D(5000)))
    book.marks["BTC/USD"] = D(60000)
    book.volumes["BTC/USD"] = D(1)
    book.own[("s", "BTC/USD")] = D(1)
    with pytest.raises(RiskRejection) as info:
        g.approve(sig(Side.SELL, "1", order_type=OrderType.LIMIT, limit_price=D(1)))
    assert info.value.code is RejectReason.MAX_NOTIONAL
    text = str(info.value)
    assert "order notional 60000" in text and "limit price 1 is below the mark" in text and "5000" in text
    assert g.approve(sig(Side.SELL, "0.05", order_type=OrderType.LIMIT, limit_price=D(1))).volume == D("0.05")


def test_reducing_clips_a_spot_sell_to_what_is_held_not_to_exposure_with_working_buys() -> None:
    g, book, working = spot_gate()
    g.trading.state = TradingState.REDUCING  # type: ignore[attr-defined]
    book.volumes["BTC/USD"] = D("0.5")
    book.own[("s", "BTC/USD")] = D("0.5")
    working.append(Working("BTC/USD", Side.BUY, D("0.2"), price=D(100)))  # exposure 0.7
    g.pending_exposure = lambda p: D("0.2")
    assert g.approve(sig(Side.SELL, "1")).volume == D("0.5")
