"""Garbage in, Kraken errors out: no request makes the simulator answer with a traceback."""

from __future__ import annotations

import random

import aiohttp

from tradebot.simulator import Simulator
from tradebot.simulator._rest import ENDPOINTS

from .conftest import KrakenTestClient

KEYS = [
    "pair",
    "type",
    "ordertype",
    "volume",
    "price",
    "cl_ord_id",
    "userref",
    "txid",
    "interval",
    "since",
    "count",
    "asset",
    "start",
    "end",
    "ofs",
    "validate",
    "trades",
    "nonce",
    "oflags",
    "timeinforce",
    "expiretm",
    "starttm",
    "price2",
    "trigger",
    "orders",
    "cl_ord_ids",
    "timeout",
    "order_qty",
    "limit_price",
    "trigger_price",
    "post_only",
    "id",
    "reduce_only",
    "deadline",
]
VALUES = [
    "",
    "0",
    "-1",
    "1e999",
    "NaN",
    "inf",
    "XBTUSD",
    "BTC/USD",
    "buy",
    "limit",
    "market",
    "0.01",
    "x" * 300,
    "9" * 5000,
    "1,2,3",
    "true",
    "%00",
    "\u00e9",
    "[]",
    "{}",
    "60000.05",
    "1.123456789",
    "+50",
    "-1.5%",
    "post",
    "post,fciq",
    "IOC",
    "GTD",
    "+5",
    "stop-loss",
    "trailing-stop",
    "take-profit-limit",
    "86401",
    "2030-01-01T00:00:00Z",
]


async def test_random_requests_get_kraken_shaped_answers(
    kraken: KrakenTestClient, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    rng = random.Random(5)
    for _ in range(600):
        name = rng.choice(sorted(ENDPOINTS))
        params = {rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randint(0, 5))}
        params.pop("nonce", None)
        if ENDPOINTS[name].private:
            response = await kraken.private(name, **params)
        else:
            async with session.post(f"{sim.base_url}/0/public/{name}", data=params) as resp:
                assert resp.status == 200
                response = await resp.json()
        assert isinstance(response["error"], list), (name, params, response)
        assert response["error"] or "result" in response
        assert "EGeneral:Internal error" not in response["error"], (name, params)
        sim.step()


async def test_random_parameters_reach_every_handler_and_get_kraken_errors(sim: Simulator) -> None:
    """Past auth and rate limits: every handler answers garbage with a Kraken error string only."""
    from tradebot.simulator._protocol import KrakenRejection
    from tradebot.simulator._rest import ParamDict

    rng = random.Random(11)
    seen: set[str] = set()
    for _ in range(4000):
        name = rng.choice(sorted(ENDPOINTS))
        params = ParamDict({rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randint(0, 6))})
        if rng.random() < 0.3:
            params.structured["orders"] = rng.choice(
                [
                    [{"type": "buy", "ordertype": "limit", "volume": "0.01", "price": "50000"}] * 2,
                    [
                        {
                            "type": rng.choice(VALUES),
                            "ordertype": rng.choice(VALUES),
                            "volume": rng.choice(VALUES),
                        }
                    ]
                    * 3,
                    ["x", None, 5],
                    {"a": 1},
                    [{"txid": None}],
                ]
            )
        try:
            ENDPOINTS[name].handler(sim, params)
        except KrakenRejection as rejection:
            assert rejection.error.startswith("E") and ":" in rejection.error, (name, params)
            seen.add(rejection.error.split(":")[0])
        if rng.random() < 0.2:
            sim.step()
        sim.housekeeping()
    assert {"EGeneral", "EOrder", "EQuery"} <= seen
