"""Garbage in, Kraken errors out: no request makes the simulator answer with a traceback."""

from __future__ import annotations

import random

import aiohttp

from tradebot.exchanges.simulator import Simulator
from tradebot.exchanges.simulator._rest import ENDPOINTS

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
]


async def test_random_requests_get_kraken_shaped_answers(
    kraken: KrakenTestClient, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    rng = random.Random(5)
    for _ in range(250):
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
