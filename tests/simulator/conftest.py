"""Fixtures: a simulator on 127.0.0.1 and a minimal signed Kraken client built on aiohttp."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tradebot.exchanges.kraken.auth import sign
from tradebot.simulator import Simulator, run_simulator


class KrakenTestClient:
    """Just enough of a Kraken REST client to exercise the simulator over real HTTP."""

    def __init__(self, session: aiohttp.ClientSession, sim: Simulator) -> None:
        self.session = session
        self.sim = sim
        self._nonces = itertools.count(int(time.time() * 1000))

    def nonce(self) -> int:
        return next(self._nonces)

    async def public(self, method: str, **params: Any) -> dict[str, Any]:
        async with self.session.get(f"{self.sim.base_url}/0/public/{method}", params=params) as resp:
            return await resp.json(content_type=None)

    def signed(
        self,
        method: str,
        params: dict[str, Any],
        *,
        nonce: int | None = None,
        key: str | None = None,
        secret: str | None = None,
    ) -> tuple[str, str, dict[str, str]]:
        nonce = self.nonce() if nonce is None else nonce
        body = urlencode({"nonce": nonce, **params})
        path = f"/0/private/{method}"
        headers = {
            "API-Key": key if key is not None else self.sim.api_key,
            "API-Sign": sign(path, nonce, body, secret if secret is not None else self.sim.api_secret),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return path, body, headers

    async def private_response(self, method: str, **params: Any) -> aiohttp.ClientResponse:
        path, body, headers = self.signed(method, params)
        return await self.session.post(f"{self.sim.base_url}{path}", data=body, headers=headers)

    async def private(
        self,
        method: str,
        *,
        nonce: int | None = None,
        key: str | None = None,
        secret: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        path, body, headers = self.signed(method, params, nonce=nonce, key=key, secret=secret)
        async with self.session.post(f"{self.sim.base_url}{path}", data=body, headers=headers) as resp:
            return await resp.json(content_type=None)

    async def private_json(self, method: str, **params: Any) -> dict[str, Any]:
        """A private call with a JSON body (as AddOrderBatch / CancelOrderBatch clients send)."""
        nonce = self.nonce()
        body = json.dumps({"nonce": nonce, **params})
        path = f"/0/private/{method}"
        headers = {
            "API-Key": self.sim.api_key,
            "API-Sign": sign(path, nonce, body, self.sim.api_secret),
            "Content-Type": "application/json",
        }
        async with self.session.post(f"{self.sim.base_url}{path}", data=body, headers=headers) as resp:
            return await resp.json(content_type=None)

    async def admin(self, verb: str, path: str, **kwargs: Any) -> Any:
        async with self.session.request(verb, f"{self.sim.base_url}/_sim/{path}", **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(tick_interval_s=0, heartbeat_s=0.2) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client_session:
        yield client_session


@pytest.fixture
async def kraken(session: aiohttp.ClientSession, sim: Simulator) -> KrakenTestClient:
    return KrakenTestClient(session, sim)
