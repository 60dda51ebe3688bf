"""Order types, flags and time in force; partial fills; edits, amends, batches; the dead man's switch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tradebot.core.clock import FakeClock
from tradebot.simulator import Simulator, run_simulator

from .conftest import KrakenTestClient

PAIR = "XXBTZUSD"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # a still market (no noise, no trend) on a fake clock: prices move only when a test moves them
    async with run_simulator(
        tick_interval_s=0, heartbeat_s=0.2, volatility=0, trend=0, rate_tier="pro", clock=FakeClock(wall=None)
    ) as simulator:
        yield simulator


def move(sim: Simulator, pct: float, pair: str = PAIR) -> Decimal:
    """Move the pair's mid by ``pct`` percent and take one tick; returns the new last price."""
    pm = sim.market[pair]
    pm._mid *= 1 + pct / 100
    sim.step()
    return pm.last


async def add(kraken: KrakenTestClient, **params: Any) -> dict[str, Any]:
    base = {"pair": "XBTUSD", "type": "buy", "volume": "0.01"}
    return await kraken.private("AddOrder", **{**base, **params})


async def order(kraken: KrakenTestClient, txid: str) -> dict[str, Any]:
    result = await kraken.private("QueryOrders", txid=txid, trades="true")
    assert result["error"] == [], result
    return result["result"][txid]


async def test_post_only_that_would_take_is_cancelled_and_a_resting_one_reads_post(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    pm = sim.market[PAIR]
    above = str(pm.ask + 100)
    taken = await add(kraken, ordertype="limit", price=above, oflags="post")
    assert taken["error"] == []
    txid = taken["result"]["txid"][0]
    info = await order(kraken, txid)
    assert info["status"] == "canceled" and info["reason"] == "Post only order"
    assert Decimal(info["vol_exec"]) == 0 and "trades" not in info
    resting = await add(kraken, ordertype="limit", price=str(pm.bid - 100), oflags="post")
    info = await order(kraken, resting["result"]["txid"][0])
    assert info["status"] == "open" and info["oflags"].split(",") == ["post", "fciq"]
    # post-only is for limit orders only
    assert (await add(kraken, ordertype="market", oflags="post"))["error"] == [
        "EGeneral:Invalid arguments:oflags"
    ]


async def test_ioc_takes_what_it_can_and_never_rests(kraken: KrakenTestClient, sim: Simulator) -> None:
    pm = sim.market[PAIR]
    asks, _ = pm.depth(3)
    # a limit at the second level with more volume than the two levels hold
    volume = asks[0][1] + asks[1][1] + Decimal("0.2")
    placed = await add(
        kraken, ordertype="limit", price=str(asks[1][0]), volume=str(volume), timeinforce="IOC"
    )
    info = await order(kraken, placed["result"]["txid"][0])
    assert info["status"] == "canceled" and info["reason"] == "Immediate or cancel"
    assert Decimal(info["vol_exec"]) == asks[0][1] + asks[1][1]
    assert len(info["trades"]) == 2
    fills = (await kraken.private("QueryTrades", txid=",".join(info["trades"])))["result"]
    prices = sorted(Decimal(t["price"]) for t in fills.values())
    assert prices == [asks[0][0], asks[1][0]]
    below = await add(kraken, ordertype="limit", price=str(pm.bid - 100), timeinforce="IOC")
    info = await order(kraken, below["result"]["txid"][0])
    assert info["status"] == "canceled" and Decimal(info["vol_exec"]) == 0
    assert (await kraken.private("OpenOrders"))["result"]["open"] == {}


async def test_gtd_order_expires_at_its_time(kraken: KrakenTestClient, sim: Simulator) -> None:
    assert isinstance(sim.clock, FakeClock)
    pm = sim.market[PAIR]
    placed = await add(kraken, ordertype="limit", price=str(pm.bid - 100), timeinforce="GTD", expiretm="+30")
    txid = placed["result"]["txid"][0]
    info = await order(kraken, txid)
    assert info["status"] == "open" and info["expiretm"] == pytest.approx(info["opentm"] + 30)
    await sim.clock.advance(29)
    assert (await order(kraken, txid))["status"] == "open"
    await sim.clock.advance(2)
    assert (await order(kraken, txid))["status"] == "expired"
    # GTD needs an expiry in the future; an expiry needs GTD
    assert (await add(kraken, ordertype="limit", price="1000", timeinforce="GTD"))["error"] == [
        "EGeneral:Invalid arguments:expiretm"
    ]
    assert (await add(kraken, ordertype="limit", price="1000", expiretm="+5"))["error"] == [
        "EGeneral:Invalid arguments:expiretm"
    ]


async def test_stop_loss_triggers_on_the_last_trade_and_fills_as_market(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    last = move(sim, 0)
    trigger = last * Decimal("0.99")
    placed = await add(
        kraken, type="sell", ordertype="stop-loss", price=str(trigger.quantize(Decimal("0.1")))
    )
    txid = placed["result"]["txid"][0]
    assert placed["result"]["descr"]["order"].endswith(f"@ stop-loss {trigger.quantize(Decimal('0.1'))}")
    move(sim, -0.5)
    assert (await order(kraken, txid))["status"] == "open"
    move(sim, -1.0)
    info = await order(kraken, txid)
    assert info["status"] == "closed" and Decimal(info["vol_exec"]) == Decimal("0.01")
    trade = (await kraken.private("QueryTrades", txid=info["trades"][0]))["result"][info["trades"][0]]
    assert trade["maker"] is False and trade["ordertype"] == "stop-loss"
    assert Decimal(info["stopprice"]) == trigger.quantize(Decimal("0.1"))


async def test_take_profit_and_stop_loss_limit(kraken: KrakenTestClient, sim: Simulator) -> None:
    last = move(sim, 0)
    tp = await add(
        kraken,
        type="sell",
        ordertype="take-profit",
        price=str((last * Decimal("1.01")).quantize(Decimal("0.1"))),
    )
    sll_trigger = (last * Decimal("1.02")).quantize(Decimal("0.1"))
    sll_limit = (last * Decimal("1.03")).quantize(Decimal("0.1"))
    # a buy stop-loss-limit: triggers when the price rises through 2%, then rests as a limit at 3%... above
    # the market, so it takes at once
    sll = await add(kraken, ordertype="stop-loss-limit", price=str(sll_trigger), price2=str(sll_limit))
    assert sll["error"] == [], sll
    move(sim, 1.5)
    assert (await order(kraken, tp["result"]["txid"][0]))["status"] == "closed"
    assert (await order(kraken, sll["result"]["txid"][0]))["status"] == "open"
    move(sim, 1.0)
    info = await order(kraken, sll["result"]["txid"][0])
    assert info["status"] == "closed" and Decimal(info["limitprice"]) == sll_limit
    assert Decimal(info["price"]) <= sll_limit


async def test_trailing_stop_follows_the_high_then_triggers(kraken: KrakenTestClient, sim: Simulator) -> None:
    move(sim, 0)
    placed = await add(kraken, type="sell", ordertype="trailing-stop", price="+1%")
    assert placed["error"] == [], placed
    txid = placed["result"]["txid"][0]
    assert placed["result"]["descr"]["order"].endswith("@ trailing-stop +1%")
    first_stop = Decimal((await order(kraken, txid))["stopprice"])
    high = move(sim, 3)
    raised = Decimal((await order(kraken, txid))["stopprice"])
    assert raised > first_stop and raised == (high * Decimal("0.99")).quantize(Decimal("0.1"))
    move(sim, -0.5)
    assert (await order(kraken, txid))["status"] == "open"
    move(sim, -1.0)
    assert (await order(kraken, txid))["status"] == "closed"
    # a trailing offset must carry Kraken's '+' prefix
    assert (await add(kraken, type="sell", ordertype="trailing-stop", price="50"))["error"] == [
        "EGeneral:Invalid arguments:price"
    ]


async def test_limit_order_fills_partly_against_depth_then_rests(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    pm = sim.market[PAIR]
    asks, _ = pm.depth(2)
    volume = asks[0][1] + Decimal("0.5")
    placed = await add(kraken, ordertype="limit", price=str(asks[0][0]), volume=str(volume))
    txid = placed["result"]["txid"][0]
    info = await order(kraken, txid)
    assert info["status"] == "open" and Decimal(info["vol_exec"]) == asks[0][1]
    # the rest is held at the limit price and fills as the market comes to it, a part per tick
    sim.step()
    partly = Decimal((await order(kraken, txid))["vol_exec"])
    assert asks[0][1] <= partly <= volume
    for _ in range(20):
        sim.step()
    info = await order(kraken, txid)
    assert info["status"] == "closed" and Decimal(info["vol_exec"]) == volume
    assert len(info["trades"]) >= 2
    trades = (await kraken.private("QueryTrades", txid=",".join(info["trades"])))["result"]
    assert sum(Decimal(t["vol"]) for t in trades.values()) == volume
    assert {t["maker"] for t in trades.values()} == {True, False}


async def test_amend_keeps_the_order_and_costs_less_than_cancel_and_add(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    pm = sim.market[PAIR]
    limiter_level = lambda: sim._order_limiters[PAIR].level  # noqa: E731
    first = await add(kraken, ordertype="limit", price=str(pm.bid - 100), cl_ord_id="amend-me")
    txid = first["result"]["txid"][0]
    before = limiter_level()
    amended = await kraken.private("AmendOrder", txid=txid, limit_price=str(pm.bid - 50), order_qty="0.02")
    assert amended["error"] == [] and amended["result"]["amend_id"]
    amend_cost = limiter_level() - before
    info = await order(kraken, txid)
    assert info["status"] == "open" and Decimal(info["vol"]) == Decimal("0.02")
    assert Decimal(info["descr"]["price"]) == pm.bid - 50 and info.get("amended") is True
    amends = (await kraken.private("OrderAmends", order_id=txid))["result"]
    assert amends["count"] == 2 and [a["amend_type"] for a in amends["amends"]] == ["original", "user"]
    second = await add(kraken, ordertype="limit", price=str(pm.bid - 100))
    before = limiter_level()
    await kraken.private("CancelOrder", txid=second["result"]["txid"][0])
    await add(kraken, ordertype="limit", price=str(pm.bid - 50))
    replace_cost = limiter_level() - before
    assert amend_cost == pytest.approx(4, abs=0.01)  # +1 and +3 for an order younger than 5 s
    assert replace_cost == pytest.approx(1 + 8 + 1, abs=0.01)
    assert amend_cost < replace_cost
    # amending by cl_ord_id, and what cannot be amended
    assert (await kraken.private("AmendOrder", cl_ord_id="amend-me", order_qty="0.03"))["error"] == []
    assert (await kraken.private("AmendOrder", txid=txid, order_qty="0.03", limit_price="abc"))["error"] == [
        "EGeneral:Invalid arguments:limit_price"
    ]
    assert (await kraken.private("AmendOrder", txid="OAAAAA-BBBBB-CCCCCC", order_qty="1"))["error"] == [
        "EOrder:Unknown order"
    ]
    crossing = str(pm.ask + 10)
    assert (await kraken.private("AmendOrder", txid=txid, limit_price=crossing, post_only="true"))[
        "error"
    ] == ["EOrder:Post only order"]


async def test_edit_order_replaces_the_order(kraken: KrakenTestClient, sim: Simulator) -> None:
    pm = sim.market[PAIR]
    first = await add(kraken, ordertype="limit", price=str(pm.bid - 100), userref="7")
    txid = first["result"]["txid"][0]
    edited = await kraken.private(
        "EditOrder", txid=txid, pair="XBTUSD", volume="0.02", price=str(pm.bid - 80)
    )
    assert edited["error"] == [], edited
    result = edited["result"]
    assert result["status"] == "ok" and result["originaltxid"] == txid and result["txid"] != txid
    assert result["volume"] == "0.02000000" and result["orders_cancelled"] == 1
    old = await order(kraken, txid)
    assert old["status"] == "canceled" and old["reason"] == "Order replaced"
    new = await order(kraken, result["txid"])
    assert new["status"] == "open" and new["userref"] == 7 and Decimal(new["vol"]) == Decimal("0.02")
    assert (await kraken.private("EditOrder", txid=txid, pair="XBTUSD", volume="0.03"))["error"] == [
        "EOrder:Unknown order"
    ]
    assert (await kraken.private("EditOrder", txid=result["txid"], pair="NOPE", volume="0.03"))["error"] == [
        "EQuery:Unknown asset pair"
    ]


async def test_batches(kraken: KrakenTestClient, sim: Simulator) -> None:
    pm = sim.market[PAIR]
    low = str(pm.bid - 100)
    orders = [
        {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": low, "cl_ord_id": "b-1"},
        {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": low, "cl_ord_id": "b-2"},
        {"type": "buy", "ordertype": "limit", "volume": "500", "price": low},
    ]
    result = await kraken.private_json("AddOrderBatch", pair="XBTUSD", orders=orders)
    assert result["error"] == [], result
    entries = result["result"]["orders"]
    assert [e.get("cl_ord_id") for e in entries[:2]] == ["b-1", "b-2"]
    assert entries[2] == {"error": "EOrder:Insufficient funds"}
    assert len((await kraken.private("OpenOrders"))["result"]["open"]) == 2
    # one malformed order refuses the whole batch
    bad = [orders[0], {"type": "buy", "ordertype": "limit", "volume": "x", "price": low}]
    assert (await kraken.private_json("AddOrderBatch", pair="XBTUSD", orders=bad))["error"] == [
        "EGeneral:Invalid arguments:volume"
    ]
    assert (await kraken.private_json("AddOrderBatch", pair="XBTUSD", orders=orders[:1]))["error"] == [
        "EGeneral:Invalid arguments:orders"
    ]
    cancelled = await kraken.private_json(
        "CancelOrderBatch", orders=[{"txid": entries[0]["txid"]}], cl_ord_ids=["b-2"]
    )
    assert cancelled["result"] == {"count": 2}
    assert (await kraken.private("OpenOrders"))["result"]["open"] == {}


async def test_dead_mans_switch_cancels_everything_when_not_refreshed(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    assert isinstance(sim.clock, FakeClock)
    pm = sim.market[PAIR]
    for _ in range(3):
        await add(kraken, ordertype="limit", price=str(pm.bid - 100))
    armed = await kraken.private("CancelAllOrdersAfter", timeout="60")
    assert armed["error"] == []
    assert armed["result"]["triggerTime"] != "0" and armed["result"]["currentTime"].endswith("Z")
    await sim.clock.advance(50)
    sim.housekeeping()
    assert len((await kraken.private("OpenOrders"))["result"]["open"]) == 3
    await kraken.private("CancelAllOrdersAfter", timeout="60")  # refreshed: counts from now again
    await sim.clock.advance(50)
    sim.housekeeping()
    assert len((await kraken.private("OpenOrders"))["result"]["open"]) == 3
    await sim.clock.advance(11)
    sim.housekeeping()
    assert (await kraken.private("OpenOrders"))["result"]["open"] == {}
    assert sim.state()["dead_mans_switch"] == {"trigger_at": None, "fired": 1}
    # disarmed with 0: nothing happens however long the wait
    await add(kraken, ordertype="limit", price=str(pm.bid - 100))
    await kraken.private("CancelAllOrdersAfter", timeout="30")
    disarmed = await kraken.private("CancelAllOrdersAfter", timeout="0")
    assert disarmed["result"]["triggerTime"] == "0"
    await sim.clock.advance(100)
    sim.housekeeping()
    assert len((await kraken.private("OpenOrders"))["result"]["open"]) == 1
    for bad in ("-1", "abc", "86401", ""):
        assert (await kraken.private("CancelAllOrdersAfter", timeout=bad))["error"] == [
            "EGeneral:Invalid arguments:timeout"
        ]


async def test_ledger_trade_balance_volume_and_public_tapes(kraken: KrakenTestClient, sim: Simulator) -> None:
    for _ in range(5):
        move(sim, 0.1)
    await add(kraken, ordertype="market", volume="0.1")
    await add(kraken, type="sell", ordertype="market", volume="0.05", pair="ETHUSD")
    ledger = (await kraken.private("Ledgers"))["result"]
    balances = (await kraken.private("Balance"))["result"]
    # every balance is the sum of its ledger entries (amount less fee), and each entry's balance
    # is the running total
    for code, amount in balances.items():
        entries = sorted(
            (e for e in ledger["ledger"].values() if e["asset"] == code), key=lambda e: e["time"]
        )
        total = sum((Decimal(e["amount"]) - Decimal(e["fee"]) for e in entries), Decimal(0))
        assert total == Decimal(amount), code
        if entries:
            assert Decimal(entries[-1]["balance"]) == Decimal(amount)
    trades = (await kraken.private("TradesHistory"))["result"]["trades"]
    assert {e["refid"] for e in ledger["ledger"].values() if e["type"] == "trade"} == set(trades)
    only_btc = (await kraken.private("Ledgers", asset="XBT", type="trade"))["result"]["ledger"]
    assert {e["asset"] for e in only_btc.values()} == {"XXBT"} and len(only_btc) == 1
    some_id = next(iter(only_btc))
    assert (await kraken.private("QueryLedgers", id=some_id))["result"][some_id] == only_btc[some_id]
    tb = (await kraken.private("TradeBalance"))["result"]
    assert set(tb) >= {"eb", "tb", "m", "n", "c", "v", "e", "mf"} and Decimal(tb["eb"]) > 100000
    assert all(isinstance(v, str) for v in tb.values())
    tv = (await kraken.private("TradeVolume", pair="XBTUSD"))["result"]
    assert tv["currency"] == "ZUSD" and Decimal(tv["volume"]) > 0
    assert tv["fees"]["XXBTZUSD"]["fee"] == "0.4000" and tv["fees_maker"]["XXBTZUSD"]["fee"] == "0.2500"
    public = (await kraken.public("Trades", pair="XBTUSD"))["result"]
    rows = public["XXBTZUSD"]
    assert len(rows) == 5 + 1 and all(isinstance(r[0], str) and r[3] in "bs" and r[4] in "ml" for r in rows)
    assert (await kraken.public("Trades", pair="XBTUSD", since=public["last"]))["result"]["XXBTZUSD"] == []
    spread = (await kraken.public("Spread", pair="XBTUSD"))["result"]
    assert len(spread["XXBTZUSD"]) == 5 and all(Decimal(b) < Decimal(a) for _, b, a in spread["XXBTZUSD"])
    assets = (await kraken.public("Assets"))["result"]
    assert assets["ZUSD"]["altname"] == "USD" and assets["ZEUR"]["altname"] == "EUR"
    assert assets["XXBT"]["altname"] == "XBT"


async def test_viqc_market_order_spends_a_quote_amount(kraken: KrakenTestClient, sim: Simulator) -> None:
    placed = await add(kraken, ordertype="market", volume="1000", oflags="viqc")
    assert placed["error"] == [], placed
    info = await order(kraken, placed["result"]["txid"][0])
    assert info["status"] == "closed" and "viqc" in info["oflags"]
    assert Decimal("999") <= Decimal(info["cost"]) <= Decimal("1000")
    assert (await add(kraken, ordertype="limit", price="1000", oflags="viqc"))["error"] == [
        "EGeneral:Invalid arguments:oflags"
    ]


async def test_trailing_stop_limit_and_delayed_start(kraken: KrakenTestClient, sim: Simulator) -> None:
    assert isinstance(sim.clock, FakeClock)
    last = move(sim, 0)
    placed = await add(kraken, type="sell", ordertype="trailing-stop-limit", price="+100", price2="-50")
    assert placed["error"] == [], placed
    txid = placed["result"]["txid"][0]
    info = await order(kraken, txid)
    assert info["descr"]["price"] == "+100" and info["descr"]["price2"] == "-50"
    assert Decimal(info["stopprice"]) == last - 100
    drop = move(sim, -0.5)  # through the trigger: now a sell limit 50 below the trigger level,
    info = await order(kraken, txid)  # above the market, so it rests
    assert Decimal(info["limitprice"]) == last - 100 - 50 and drop < last - 100
    assert info["status"] == "open" and Decimal(info["vol_exec"]) == 0
    move(sim, 0.45)  # the market comes back to the limit: it fills
    assert (await order(kraken, txid))["status"] == "closed"
    # an order with a start time waits, pending, until then
    later = await add(kraken, ordertype="limit", price=str(sim.market[PAIR].bid - 100), starttm="+10")
    txid = later["result"]["txid"][0]
    assert (await order(kraken, txid))["status"] == "pending"
    await sim.clock.advance(11)
    sim.step()
    assert (await order(kraken, txid))["status"] == "open"


async def test_edit_costs_more_than_amend_on_the_order_counter(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    pm = sim.market[PAIR]
    level = lambda: sim._order_limiters[PAIR].level  # noqa: E731
    first = await add(kraken, ordertype="limit", price=str(pm.bid - 100))
    before = level()
    await kraken.private("EditOrder", txid=first["result"]["txid"][0], pair="XBTUSD", volume="0.02")
    assert level() - before == pytest.approx(1 + 6, abs=0.01)  # edit of an order younger than 5 s
