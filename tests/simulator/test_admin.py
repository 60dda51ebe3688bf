"""The /_sim admin API used by tests and chaos drills in other processes."""

from __future__ import annotations

import aiohttp

from tradebot.simulator import Simulator

from .conftest import KrakenTestClient


async def test_state(kraken: KrakenTestClient, sim: Simulator) -> None:
    await kraken.private(
        "AddOrder", pair="XBTUSD", type="buy", ordertype="market", volume="0.01", cl_ord_id="s1"
    )
    status, state = await kraken.admin("GET", "state")
    assert status == 200
    assert state["orders_created"] == {"s1": 1} and state["add_order_calls"] == {"s1": 1}
    assert state["closed_orders"][0]["cl_ord_id"] == "s1" and state["open_orders"] == []
    assert state["balances"]["BTC"] == "1.0100000000"
    assert state["requests"]["AddOrder"] == 1 and state["status"] == "online"
    assert sim.api_secret not in str(state) and sim.api_key not in str(state)


async def test_faults_crud(kraken: KrakenTestClient, sim: Simulator) -> None:
    status, added = await kraken.admin("POST", "faults", data="error=EService:Busy,on=Time")
    assert status == 200 and len(added["ids"]) == 1
    assert (await kraken.public("Time"))["error"] == ["EService:Busy"]
    status, added2 = await kraken.admin(
        "POST",
        "faults",
        json={
            "spec": "latency=0.01",
            "faults": [{"kind": "error", "value": "EService:Unavailable", "on": ["Ticker"], "n": 1}],
        },
    )
    assert status == 200 and len(added2["ids"]) == 2
    _, listed = await kraken.admin("GET", "faults")
    assert [f["kind"] for f in listed["faults"]] == ["error", "latency", "error"]
    status, _ = await kraken.admin("DELETE", f"faults/{added['ids'][0]}")
    assert status == 200
    assert (await kraken.public("Time"))["error"] == []
    assert (await kraken.admin("DELETE", "faults/999"))[0] == 404
    assert (await kraken.admin("DELETE", "faults"))[1] == {"faults": []}
    bad_status, bad = await kraken.admin("POST", "faults", data="explode=now")
    assert bad_status == 400 and "explode" in bad["error"]
    assert (await kraken.admin("POST", "faults", json=[1]))[0] == 400


async def test_step_and_ws_disconnect(
    kraken: KrakenTestClient, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    _, before = await kraken.admin("GET", "state")
    status, stepped = await kraken.admin("POST", "step", params={"n": "5"})
    assert status == 200 and stepped == {"ticks": 5}
    _, after = await kraken.admin("GET", "state")
    assert after["ticks"]["BTC/USD"] == before["ticks"]["BTC/USD"] + 5
    ws = await session.ws_connect(sim.ws_url)
    status, closed = await kraken.admin("POST", "ws/disconnect", params={"refuse": "0"})
    assert status == 200 and closed["closed"] == 1
    await ws.close()
    assert (await kraken.admin("POST", "step", params={"n": "x"}))[0] == 400
