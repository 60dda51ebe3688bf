"""Every fault kind, the spec format, scenarios, and determinism under a seed."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal as D
from pathlib import Path

import aiohttp
import pytest

from tradebot.simulator import (
    FaultRule,
    FaultSpecError,
    Simulator,
    load_scenario,
    parse_faults,
    run_simulator,
)

from .conftest import KrakenTestClient


def test_spec_round_trip() -> None:
    spec = (
        "latency=0.2; http5xx=503,on=AddOrder|Balance,p=0.3; error=EService:Unavailable,on=AddOrder,n=2;"
        "drop_response,on=AddOrder,n=1; stale,at=5,for=10; status=maintenance; ratelimit=3/0.1"
    )
    rules = parse_faults(spec)
    assert [r.kind for r in rules] == [
        "latency",
        "http5xx",
        "error",
        "drop_response",
        "stale",
        "status",
        "ratelimit",
    ]
    assert rules[1].targets == frozenset({"AddOrder", "Balance"}) and rules[1].probability == 0.3
    assert rules[2].value == "EService:Unavailable" and rules[2].count == 2
    assert rules[4].at_s == 5 and rules[4].for_s == 10
    assert parse_faults(";".join(r.to_spec() for r in rules)) == rules
    assert parse_faults("timeout")[0].value == "60"


@pytest.mark.parametrize(
    "spec",
    [
        "nonsense",
        "latency",
        "latency=-1",
        "http5xx=200",
        "error=oops",
        "status=closed",
        "stale=3",
        "drop,p=2",
        "drop,n=0",
        "drop,bogus=1",
        "drop,on=",
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_faults(spec)


async def test_unknown_endpoint_target_is_rejected(sim: Simulator) -> None:
    with pytest.raises(FaultSpecError, match="AddOrdr"):
        sim.faults.add("drop,on=AddOrdr")


def test_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "drill.toml"
    path.write_text(
        'faults = "latency=0.1"\n\n[[fault]]\nkind = "error"\nvalue = "EService:Busy"\n'
        'on = ["AddOrder"]\np = 0.5\nn = 3\nat = 1\nfor = 2\n'
    )
    rules = load_scenario(path)
    assert rules[0] == FaultRule("latency", "0.1")
    assert rules[1] == FaultRule("error", "EService:Busy", frozenset({"AddOrder"}), 0.5, 3, 1.0, 2.0)
    path.write_text('[[fault]]\nkind = "error"\nwhat = 1\n')
    with pytest.raises(FaultSpecError, match="what"):
        load_scenario(path)


async def test_latency(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("latency=0.3,on=Time")
    started = time.monotonic()
    assert (await kraken.public("Time"))["error"] == []
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await kraken.public("SystemStatus")
    assert time.monotonic() - started < 0.3


async def test_timeout_hangs_past_the_client_timeout(session: aiohttp.ClientSession) -> None:
    async with run_simulator(tick_interval_s=0, faults="timeout=30,on=Balance") as sim:
        kraken = KrakenTestClient(session, sim)
        path, body, headers = kraken.signed("Balance", {})
        with pytest.raises(asyncio.TimeoutError):
            await session.post(
                sim.base_url + path, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=0.3)
            )
        started = time.monotonic()
    assert time.monotonic() - started < 3  # a hanging request does not hold up shutdown


async def test_http5xx_is_a_cloudflare_page(
    kraken: KrakenTestClient, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.faults.add("http5xx=503,on=Ticker")
    async with session.get(f"{sim.base_url}/0/public/Ticker?pair=XBTUSD") as resp:
        assert resp.status == 503
        assert resp.content_type == "text/html"
        assert "cloudflare" in (await resp.text()).lower()
    assert (await kraken.public("Time"))["error"] == []


async def test_error_on_chosen_endpoint_for_n_calls(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("error=EService:Unavailable,on=AddOrder,n=2")
    args = dict(pair="XBTUSD", type="buy", ordertype="market", volume="0.01", cl_ord_id="x")
    assert (await kraken.private("Balance"))["error"] == []
    assert (await kraken.private("AddOrder", **args))["error"] == ["EService:Unavailable"]
    assert (await kraken.private("AddOrder", **args))["error"] == ["EService:Unavailable"]
    assert sim.account.orders == {}
    assert (await kraken.private("AddOrder", **args))["error"] == []
    assert sim.faults.describe() == []
    assert sim.state()["add_order_calls"]["x"] == 3 and sim.state()["orders_created"]["x"] == 1


async def test_probability_is_deterministic_under_the_seed(session: aiohttp.ClientSession) -> None:
    patterns = []
    for _ in range(2):
        async with run_simulator(
            seed=42, tick_interval_s=0, faults="error=EService:Busy,on=Time,p=0.5"
        ) as sim:
            kraken = KrakenTestClient(session, sim)
            patterns.append([bool((await kraken.public("Time"))["error"]) for _ in range(20)])
    assert patterns[0] == patterns[1]
    assert 0 < sum(patterns[0]) < 20


async def test_malformed_and_truncated_json(sim: Simulator, session: aiohttp.ClientSession) -> None:
    url = f"{sim.base_url}/0/public/Time"
    for kind in ("malformed", "truncated"):
        sim.faults.add(f"{kind},on=Time,n=1")
        async with session.get(url) as resp:
            assert resp.status == 200
            text = await resp.text()
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    async with session.get(url) as resp:
        assert (await resp.json())["error"] == []


async def test_drop_closes_without_executing(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("drop,on=AddOrder,n=1")
    with pytest.raises(aiohttp.ClientError):
        await kraken.private(
            "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.01", cl_ord_id="dropped"
        )
    assert sim.account.orders == {}
    assert sim.state()["add_order_calls"] == {"dropped": 1}


async def test_drop_response_executes_the_order(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("drop_response,on=AddOrder,n=1")
    with pytest.raises(aiohttp.ClientError):
        await kraken.private(
            "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.01", cl_ord_id="lost-ack"
        )
    # the order exists: a careful client finds it by its client id instead of resending
    found = (await kraken.private("QueryOrders", cl_ord_id="lost-ack"))["result"]
    assert len(found) == 1
    state = sim.state()
    assert state["orders_created"] == {"lost-ack": 1} and state["add_order_calls"] == {"lost-ack": 1}


async def test_stale_freezes_prices(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("stale")
    before = (await kraken.public("Ticker", pair="XBTUSD"))["result"]
    assert sim.step(5) == 0
    assert (await kraken.public("Ticker", pair="XBTUSD"))["result"] == before
    sim.faults.clear()
    assert sim.step(5) == 5
    assert (await kraken.public("Ticker", pair="XBTUSD"))["result"] != before


async def test_maintenance_and_cancel_only(kraken: KrakenTestClient, sim: Simulator) -> None:
    low = str(sim.market["XXBTZUSD"].bid - 1000)
    resting = await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="limit", volume="0.01", price=low, cl_ord_id="rest"
    )
    assert resting["error"] == []
    market = dict(pair="XBTUSD", type="buy", ordertype="market", volume="0.01")

    ids = sim.faults.add("status=maintenance")
    assert (await kraken.public("SystemStatus"))["result"]["status"] == "maintenance"
    assert (await kraken.private("AddOrder", **market))["error"] == ["EService:Unavailable"]
    assert (await kraken.private("CancelOrder", cl_ord_id="rest"))["error"] == ["EService:Unavailable"]
    sim.faults.remove(ids[0])

    sim.faults.add("status=cancel_only")
    assert (await kraken.public("SystemStatus"))["result"]["status"] == "cancel_only"
    assert (await kraken.private("AddOrder", **market))["error"] == ["EService:Market in cancel_only mode"]
    assert (await kraken.private("CancelOrder", cl_ord_id="rest"))["result"] == {"count": 1}
    sim.faults.clear()

    sim.faults.add("status=post_only")
    assert (await kraken.private("AddOrder", **market))["error"] == ["EService:Market in post_only mode"]
    passive = dict(pair="XBTUSD", type="buy", ordertype="limit", volume="0.01", price=low)
    assert (await kraken.private("AddOrder", **passive))["error"] == []
    sim.faults.clear()
    assert (await kraken.public("SystemStatus"))["result"]["status"] == "online"


async def test_tighter_rate_limit(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("ratelimit=2/0.01")
    errors = [(await kraken.private("Balance"))["error"] for _ in range(3)]
    assert errors == [[], [], ["EAPI:Rate limit exceeded"]]


async def test_at_and_for_windows(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("error=EService:Busy,on=Time,at=0.2,for=0.3")
    assert (await kraken.public("Time"))["error"] == []
    await asyncio.sleep(0.25)
    assert (await kraken.public("Time"))["error"] == ["EService:Busy"]
    await asyncio.sleep(0.35)
    assert (await kraken.public("Time"))["error"] == []
    assert sim.faults.describe() == []


async def test_group_targets(kraken: KrakenTestClient, sim: Simulator) -> None:
    sim.faults.add("error=EGeneral:Internal error,on=private")
    assert (await kraken.public("Time"))["error"] == []
    assert (await kraken.private("Balance"))["error"] == ["EGeneral:Internal error"]


async def test_a_pairs_status_refuses_addorder_as_kraken_does(
    kraken: KrakenTestClient, sim: Simulator
) -> None:
    """A pair's own ``AssetPairs`` status (set over the admin API) refuses what it forbids;
    the other pairs trade on, and cancels still go."""
    eth = sim.market["XETHZUSD"]
    low, high = str((eth.bid * D("0.9")).quantize(D("0.01"))), str((eth.ask * D("1.1")).quantize(D("0.01")))

    def order(side: str, ordertype: str = "market", volume: str = "0.01", **extra: str) -> dict[str, str]:
        price = {"price": low if side == "buy" else high} if ordertype == "limit" else {}
        return dict(pair="ETHUSD", type=side, ordertype=ordertype, volume=volume, **price, **extra)

    async def add(fields: dict[str, str]) -> list[str]:
        return list((await kraken.private("AddOrder", **fields))["error"])

    async def set_status(status: str) -> None:
        code, body = await kraken.admin("POST", f"pair_status?pair=ETH/USD&status={status}")
        assert code == 200, body

    resting = await kraken.private("AddOrder", **order("buy", "limit"), cl_ord_id="resting")
    assert resting["error"] == []
    await set_status("cancel_only")
    pairs = (await kraken.public("AssetPairs", pair="ETHUSD"))["result"]
    assert pairs["XETHZUSD"]["status"] == "cancel_only"
    assert await add(order("buy", "limit")) == ["EService:Market in cancel_only mode"]
    assert await add(order("sell", validate="true")) == [
        "EService:Market in cancel_only mode"
    ]  # validate too
    assert (await kraken.private("CancelOrder", cl_ord_id="resting"))["result"] == {"count": 1}
    assert (
        await add(dict(pair="XBTUSD", type="buy", ordertype="market", volume="0.001")) == []
    )  # other pairs trade

    await set_status("post_only")
    assert await add(order("buy")) == ["EService:Market in post_only mode"]
    assert await add(order("buy", "limit")) == []  # rests on the book
    await set_status("limit_only")
    assert await add(order("buy")) == ["EService:Market in limit_only mode"]
    assert await add(order("buy", "limit")) == []
    await set_status("reduce_only")
    held = sim.account.balances["ETH"]
    assert held > 0
    assert await add(order("buy", "limit")) == ["EGeneral:Invalid arguments:reduce_only"]
    assert await add(order("sell", volume=str(held + 1))) == ["EGeneral:Invalid arguments:reduce_only"]
    assert await add(order("sell", volume="0.01")) == []  # reduces what the account holds
    await set_status("delisted")
    assert "XETHZUSD" not in (await kraken.public("AssetPairs"))["result"]
    assert (await kraken.public("AssetPairs", pair="ETHUSD"))["error"] == ["EQuery:Unknown asset pair"]
    assert await add(order("sell")) == ["EQuery:Unknown asset pair"]
    await set_status("online")
    assert await add(order("buy")) == []
    code, body = await kraken.admin("POST", "pair_status?pair=ETH/USD&status=sleeping")
    assert code == 400 and "unknown pair status" in body["error"]
