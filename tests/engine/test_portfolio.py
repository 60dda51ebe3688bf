"""Portfolio: average-cost PnL with fees, persistence, rebuild, equity."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

from tradebot.core.models import Balances, Fill, Side, Ticker
from tradebot.core.portfolio import Portfolio, Position, PositionClosed, apply_fill_to_position
from tradebot.core.store import StateStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_n = 0


def f(
    side: Side, vol: str, price: str, fee: str = "0", pair: str = "BTC/USD", tid: str | None = None
) -> Fill:
    global _n
    _n += 1
    return Fill(tid or f"t{_n}", "c", "o", pair, side, D(price), D(vol), D(fee), T0)


def test_average_cost_long_round_trip_with_fees() -> None:
    pos = Position("BTC/USD")
    pos, c = apply_fill_to_position(pos, f(Side.BUY, "1", "100", fee="1"))
    assert c is None and pos == Position("BTC/USD", D(1), D(101))
    pos, c = apply_fill_to_position(pos, f(Side.BUY, "1", "110", fee="1"))
    assert pos.volume == D(2) and pos.avg_price == D("106")
    pos, c = apply_fill_to_position(pos, f(Side.SELL, "0.5", "120", fee="0.5"))
    assert c is not None and c.pnl == D("0.5") * 14 - D("0.5") and not c.fully_closed
    assert pos.volume == D("1.5") and pos.avg_price == D("106")
    pos, c = apply_fill_to_position(pos, f(Side.SELL, "1.5", "100", fee="1"))
    assert c is not None and c.pnl == D("1.5") * -6 - 1 and c.fully_closed
    assert pos.volume == 0 and pos.avg_price == 0


def test_short_and_flip_through_flat() -> None:
    pos, _ = apply_fill_to_position(Position("X/USD"), f(Side.SELL, "2", "50", fee="1"))
    assert pos.volume == D(-2) and pos.avg_price == D("49.5")
    pos, c = apply_fill_to_position(pos, f(Side.BUY, "3", "40", fee="3"))
    assert c is not None
    # closes 2 at 40 (gain 9.5 each) minus 2/3 of the fee; opens 1 long at 40 + 1 fee
    assert c.volume == 2 and c.pnl == D(2) * D("9.5") - D(2) and c.fully_closed
    assert c.position_after == 1
    assert pos == Position("X/USD", D(1), D(41))


def test_persisted_and_rebuilt_state_agree(tmp_path: Path) -> None:
    closed: list[PositionClosed] = []
    with StateStore(tmp_path) as store:
        pf = Portfolio(store, starting_cash=D(1000))
        pf.listeners.append(closed.append)
        fills = [
            f(Side.BUY, "2", "100", "0.2"),
            f(Side.BUY, "1", "10", "0.01", pair="ETH/USD"),
            f(Side.SELL, "1", "120", "0.12"),
            f(Side.SELL, "3", "90", "0.3"),
            f(Side.BUY, "1", "12", "0.01", pair="ETH/USD"),
        ]
        for fl in fills:
            assert pf.apply_fill(fl) is not None
        assert pf.apply_fill(fills[0]) is None  # same trade id: no double count
        assert len(closed) == 2 and closed[1].position_after == D(-2)
        positions, cash, realized = pf.positions(), pf.cash, pf.realized_pnl
        assert cash == D(1000) - D("200.2") - D("10.01") + D("119.88") + D("269.7") - D("12.01")
    with StateStore(tmp_path) as store:
        pf = Portfolio(store, starting_cash=D(5))  # persisted cash wins over config
        assert pf.positions() == positions and pf.cash == cash and pf.realized_pnl == realized
        assert [r.trade_id for r in store.realized_pnl()] == [c.trade_id for c in closed]
        with store.transaction() as tx:
            tx.execute("UPDATE positions SET volume = '999'")
        rebuilt = Portfolio(store).rebuild_from_fills()
        assert {k: v for k, v in rebuilt.items() if v.volume} == positions
        pf2 = Portfolio(store)
        assert pf2.positions() == positions and pf2.cash == cash and pf2.realized_pnl == realized


def test_equity_needs_marks_and_snapshots_feed_peak(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        pf = Portfolio(store, starting_cash=D(1000))
        pf.apply_fill(f(Side.BUY, "1", "100"))
        assert pf.equity() is None and pf.snapshot_equity() is None
        pf.mark(Ticker("BTC/USD", D(109), D(111), D(110), D(1), T0))
        assert pf.equity() == D(1010) and pf.unrealized_pnl() == D(10)
        assert pf.snapshot_equity() is not None
        pf.set_mark("BTC/USD", D(50))
        pf.snapshot_equity()
        assert store.peak_equity() == D(1010)
        assert [s.equity for s in store.recent_equity()] == [D(1010), D(950)]


def test_cash_is_never_copied_from_the_exchange_only_compared(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        pf = Portfolio(store, starting_cash=D(1000), quote="USD")
        pf.apply_fill(f(Side.BUY, "1", "100", fee="1"))
        assert pf.cash == D(899)
        same = pf.verify_balances(Balances({"USD": D("899.5"), "BTC": D(1)}, T0), pairs=["BTC/USD"])
        assert same.ok and not same.unexplained
        # a shared account: more than the bot's is reported, never adopted
        more = pf.verify_balances(Balances({"USD": D(5000), "BTC": D(3)}, T0), pairs=["BTC/USD"])
        assert (
            more.ok
            and len(more.unexplained) == 2
            and "2 more than the bot's position 1" in more.unexplained[1]
        )
        assert pf.cash == D(899) and pf.position("BTC/USD").volume == 1
        # less than the bot's: a problem naming both figures
        less = pf.verify_balances(Balances({"USD": D(700), "BTC": D("0.5")}, T0), pairs=["BTC/USD"])
        assert not less.ok
        assert "cash is 899 by its journal but the exchange holds 700" in less.message
        assert "BTC: the bot holds 1 by its journal but the exchange holds 0.5" in less.message


def test_starting_cash_stored_and_rebuild_reproduces_exactly(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        pf = Portfolio(store, starting_cash=D(10000))
        for fill in (
            f(Side.BUY, "0.5", "100", "0.13"),
            f(Side.BUY, "0.25", "90", "0.05"),
            f(Side.SELL, "0.6", "120", "0.2"),
        ):
            pf.apply_fill(fill)
        before = (pf.cash, pf.positions(), pf.realized_pnl, pf.fees_paid)
        assert pf.starting_cash == D(10000)
        pf.rebuild_from_fills()
        assert (pf.cash, pf.positions(), pf.realized_pnl, pf.fees_paid) == before
        again = Portfolio(store)
        assert (again.cash, again.positions(), again.realized_pnl, again.fees_paid) == before


def test_positions_attributed_per_strategy_and_flatten_takes_from_holders(tmp_path: Path) -> None:
    from tradebot.core.models import OrderStatus, OrderType
    from tradebot.core.store import JournalEntry

    with StateStore(tmp_path) as store:
        for cid, strategy, side in (
            ("a1", "a", Side.BUY),
            ("b1", "b", Side.BUY),
            ("fl", "flatten", Side.SELL),
        ):
            store.journal_order(
                JournalEntry(
                    cid, "BTC/USD", side, OrderType.MARKET, D(1), OrderStatus.OPEN, T0, T0, strategy=strategy
                )
            )
        pf = Portfolio(store, starting_cash=D(1000))
        pf.apply_fill(Fill("t-a1", "a1", "o", "BTC/USD", Side.BUY, D(10), D(1), D(0), T0))
        pf.apply_fill(Fill("t-b1", "b1", "o", "BTC/USD", Side.BUY, D(10), D(2), D(0), T0))
        assert pf.strategy_position("a", "BTC/USD").volume == 1
        assert pf.strategy_position("b", "BTC/USD").volume == 2
        pf.apply_fill(Fill("t-fl", "fl", "o", "BTC/USD", Side.SELL, D(10), D("1.5"), D(0), T0))
        assert pf.strategy_position("a", "BTC/USD").volume == 0
        assert pf.strategy_position("b", "BTC/USD").volume == D("1.5")
        reloaded = Portfolio(store)
        assert reloaded.strategy_positions() == pf.strategy_positions()
