"""Orders: placement, fills, balances, cl_ord_id rules, queries and cancels."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebot.simulator import DUPLICATE_ORDER, Simulator

from .conftest import KrakenTestClient


async def balances(kraken: KrakenTestClient) -> dict[str, Decimal]:
    result = await kraken.private("Balance")
    return {k: Decimal(v) for k, v in result["result"].items()}


async def test_market_buy_fills_at_ask_with_fee(kraken: KrakenTestClient, sim: Simulator) -> None:
    ask = Decimal((await kraken.public("Ticker", pair="XBTUSD"))["result"]["XXBTZUSD"]["a"][0])
    before = await balances(kraken)
    placed = await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.1", cl_ord_id="buy-1"
    )
    assert placed["error"] == []
    txid = placed["result"]["txid"][0]
    assert placed["result"]["descr"]["order"] == "buy 0.10000000 XBTUSD @ market"
    after = await balances(kraken)
    cost = ask * Decimal("0.1")
    assert after["XXBT"] == before["XXBT"] + Decimal("0.1")
    assert after["ZUSD"] == before["ZUSD"] - cost - (cost * Decimal("0.004")).quantize(Decimal("0.0001"))
    order = (await kraken.private("QueryOrders", txid=txid))["result"][txid]
    assert order["status"] == "closed" and order["cl_ord_id"] == "buy-1"
    assert Decimal(order["vol_exec"]) == Decimal("0.1") and Decimal(order["price"]) == ask
    trades = (await kraken.private("TradesHistory"))["result"]
    assert trades["count"] == 1
    (trade,) = trades["trades"].values()
    assert trade["ordertxid"] == txid and trade["pair"] == "XXBTZUSD" and trade["type"] == "buy"
    closed = (await kraken.private("ClosedOrders", cl_ord_id="buy-1"))["result"]
    assert closed["count"] == 1 and txid in closed["closed"]


async def test_market_sell(kraken: KrakenTestClient) -> None:
    before = await balances(kraken)
    placed = await kraken.private(
        "AddOrder", pair="ETH/USD", type="sell", ordertype="market", volume="1", oflags="fciq"
    )
    assert placed["error"] == []
    after = await balances(kraken)
    assert after["XETH"] == before["XETH"] - 1 and after["ZUSD"] > before["ZUSD"]


@pytest.mark.parametrize(
    ("side", "oflags", "in_base"),
    [("buy", "", False), ("sell", "", True), ("buy", "fcib", True), ("sell", "fciq", False)],
)
async def test_fee_is_charged_in_the_currency_the_flags_choose(
    kraken: KrakenTestClient, side: str, oflags: str, in_base: bool
) -> None:
    """``fciq``/``fcib`` choose the fee's currency; with neither, Kraken's documented default
    (quote when buying, base when selling). The balances, the ledger and the order's flags agree."""
    before = await balances(kraken)
    params = {"pair": "XBTUSD", "type": side, "ordertype": "market", "volume": "0.1"}
    if oflags:
        params["oflags"] = oflags
    placed = await kraken.private("AddOrder", **params)
    assert placed["error"] == [], placed
    txid = placed["result"]["txid"][0]
    after = await balances(kraken)
    order = (await kraken.private("QueryOrders", txid=txid))["result"][txid]
    cost = Decimal(order["cost"])
    sign = 1 if side == "buy" else -1
    base_fee = (Decimal("0.1") * Decimal("0.004")).quantize(Decimal("0.0000000001"))
    quote_fee = (cost * Decimal("0.004")).quantize(Decimal("0.0001"))
    if in_base:
        assert after["XXBT"] == before["XXBT"] + sign * Decimal("0.1") - base_fee
        assert after["ZUSD"] == before["ZUSD"] - sign * cost
        assert order["oflags"] == "fcib"
    else:
        assert after["XXBT"] == before["XXBT"] + sign * Decimal("0.1")
        assert after["ZUSD"] == before["ZUSD"] - sign * cost - quote_fee
        assert order["oflags"] == "fciq"
    ledger = (await kraken.private("Ledgers"))["result"]["ledger"].values()
    fees = {e["asset"]: Decimal(e["fee"]) for e in ledger if e["type"] == "trade"}
    assert fees == (
        {"XXBT": base_fee, "ZUSD": Decimal(0)} if in_base else {"XXBT": Decimal(0), "ZUSD": quote_fee}
    )


async def test_limit_rests_then_fills_when_price_crosses(kraken: KrakenTestClient, sim: Simulator) -> None:
    pm = sim.market["XXBTZUSD"]
    price = pm.bid - 200
    placed = await kraken.private(
        "AddOrder",
        pair="XBTUSD",
        type="buy",
        ordertype="limit",
        volume="0.01",
        price=str(price),
        cl_ord_id="limit-1",
    )
    txid = placed["result"]["txid"][0]
    open_orders = (await kraken.private("OpenOrders"))["result"]["open"]
    assert open_orders[txid]["cl_ord_id"] == "limit-1" and open_orders[txid]["status"] == "open"
    held = (await kraken.private("BalanceEx"))["result"]["ZUSD"]
    assert Decimal(held["hold_trade"]) > 0
    pm._mid = float(price) * 0.99  # push the market through the limit
    sim.step()
    order = (await kraken.private("QueryOrders", txid=txid))["result"][txid]
    assert order["status"] == "closed" and Decimal(order["price"]) == price
    trade = next(iter((await kraken.private("TradesHistory"))["result"]["trades"].values()))
    assert trade["maker"] is True
    assert (await kraken.private("OpenOrders"))["result"]["open"] == {}


async def test_cl_ord_id_unique_among_open_orders(kraken: KrakenTestClient, sim: Simulator) -> None:
    low = str(sim.market["XXBTZUSD"].bid - 1000)
    args = dict(pair="XBTUSD", type="buy", ordertype="limit", volume="0.01", price=low, cl_ord_id="dup")
    first = await kraken.private("AddOrder", **args)
    assert first["error"] == []
    assert (await kraken.private("AddOrder", **args))["error"] == [DUPLICATE_ORDER]
    assert (await kraken.private("CancelOrder", cl_ord_id="dup"))["result"] == {"count": 1}
    # once the first one is closed the id is free again, as on Kraken
    assert (await kraken.private("AddOrder", **args))["error"] == []
    state = sim.state()
    assert state["add_order_calls"]["dup"] == 3 and state["orders_created"]["dup"] == 2


async def test_argument_errors(kraken: KrakenTestClient) -> None:
    base = dict(pair="XBTUSD", type="buy", ordertype="market", volume="0.01")
    cases = [
        ({"cl_ord_id": "a", "userref": "5"}, "EGeneral:Invalid arguments:cl_ord_id"),
        ({"type": "hold"}, "EGeneral:Invalid arguments:type"),
        ({"ordertype": "iceberg"}, "EGeneral:Invalid arguments:ordertype"),
        ({"volume": "abc"}, "EGeneral:Invalid arguments:volume"),
        ({"volume": "-1"}, "EGeneral:Invalid arguments:volume"),
        ({"volume": "NaN"}, "EGeneral:Invalid arguments:volume"),
        ({"volume": "0.000000001"}, "EGeneral:Invalid arguments:volume"),
        ({"ordertype": "limit"}, "EGeneral:Invalid arguments:price"),
        ({"ordertype": "limit", "price": "100.123"}, "EOrder:Invalid price"),
        ({"pair": "DOGEXYZ"}, "EQuery:Unknown asset pair"),
        ({"volume": "0.00001"}, "EOrder:Order minimum not met"),
        ({"volume": "50"}, "EOrder:Insufficient funds"),
        ({"userref": "99999999999"}, "EGeneral:Invalid arguments:userref"),
    ]
    for change, error in cases:
        assert (await kraken.private("AddOrder", **{**base, **change}))["error"] == [error], change
    sell_too_much = {**base, "type": "sell", "volume": "2"}
    assert (await kraken.private("AddOrder", **sell_too_much))["error"] == ["EOrder:Insufficient funds"]
    assert (await kraken.private("OpenOrders"))["result"]["open"] == {}
    assert (await kraken.private("TradesHistory"))["result"]["count"] == 0


async def test_validate_only(kraken: KrakenTestClient, sim: Simulator) -> None:
    result = await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.01", validate="true"
    )
    assert result["error"] == [] and "txid" not in result["result"]
    assert result["result"]["descr"]["order"].startswith("buy 0.01000000 XBTUSD")
    assert sim.account.orders == {}


async def test_cancel_by_txid_userref_and_unknown(kraken: KrakenTestClient, sim: Simulator) -> None:
    low = str(sim.market["XXBTZUSD"].bid - 1000)
    a = await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="limit", volume="0.01", price=low
    )
    b = await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="limit", volume="0.01", price=low, userref="42"
    )
    assert (await kraken.private("CancelOrder", txid=a["result"]["txid"][0]))["result"] == {"count": 1}
    assert (await kraken.private("CancelOrder", txid="42"))["result"] == {"count": 1}
    assert (await kraken.private("CancelOrder", txid="OAAAAA-BBBBB-CCCCCC"))["error"] == [
        "EOrder:Unknown order"
    ]
    assert (await kraken.private("CancelOrder", cl_ord_id="never"))["error"] == ["EOrder:Unknown order"]
    closed = (await kraken.private("ClosedOrders"))["result"]
    assert closed["count"] == 2
    txid_b = b["result"]["txid"][0]
    assert closed["closed"][txid_b]["status"] == "canceled" and closed["closed"][txid_b]["userref"] == 42


async def test_query_orders_by_cl_ord_id(kraken: KrakenTestClient) -> None:
    placed = await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.01", cl_ord_id="find-me"
    )
    txid = placed["result"]["txid"][0]
    found = (await kraken.private("QueryOrders", cl_ord_id="find-me"))["result"]
    assert list(found) == [txid]
    assert (await kraken.private("QueryOrders", cl_ord_id="nobody"))["result"] == {}
    assert (await kraken.private("QueryOrders", txid="OAAAAA-BBBBB-CCCCCC"))["error"] == [
        "EOrder:Invalid order"
    ]
    assert (await kraken.private("QueryOrders"))["error"] == ["EGeneral:Invalid arguments"]
    assert (await kraken.private("OpenOrders", cl_ord_id="find-me"))["result"]["open"] == {}
