"""Private calls: API-Key/API-Sign verification and strictly increasing nonces."""

from __future__ import annotations

import json

import aiohttp

from tradebot.exchanges.kraken.auth import sign
from tradebot.simulator import Simulator, generate_credentials, run_simulator

from .conftest import KrakenTestClient


async def test_signed_request_is_accepted(kraken: KrakenTestClient) -> None:
    result = await kraken.private("Balance")
    assert result["error"] == []
    assert result["result"]["ZUSD"] == "100000.0000"
    assert result["result"]["XXBT"] == "1.0000000000"
    assert result["result"]["XETH"] == "10.0000000000"


async def test_wrong_key_and_wrong_signature(kraken: KrakenTestClient) -> None:
    other_key, other_secret = generate_credentials()
    assert (await kraken.private("Balance", key=other_key))["error"] == ["EAPI:Invalid key"]
    assert (await kraken.private("Balance", secret=other_secret))["error"] == ["EAPI:Invalid signature"]


async def test_signature_covers_the_body(
    kraken: KrakenTestClient, session: aiohttp.ClientSession, sim: Simulator
) -> None:
    path, body, headers = kraken.signed("Balance", {"asset": "XBT"})
    async with session.post(sim.base_url + path, data=body + "&extra=1", headers=headers) as resp:
        assert (await resp.json())["error"] == ["EAPI:Invalid signature"]


async def test_nonce_must_increase(kraken: KrakenTestClient) -> None:
    nonce = kraken.nonce() + 1000
    assert (await kraken.private("Balance", nonce=nonce))["error"] == []
    assert (await kraken.private("Balance", nonce=nonce))["error"] == ["EAPI:Invalid nonce"]
    assert (await kraken.private("Balance", nonce=nonce - 1))["error"] == ["EAPI:Invalid nonce"]
    assert (await kraken.private("Balance", nonce=nonce + 1))["error"] == []


async def test_missing_or_bad_nonce(
    kraken: KrakenTestClient, session: aiohttp.ClientSession, sim: Simulator
) -> None:
    for body in ("", "nonce=abc", "nonce=-5", "nonce=99999999999999999999999"):
        headers = {
            "API-Key": sim.api_key,
            "API-Sign": sign("/0/private/Balance", "", body, sim.api_secret),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        async with session.post(f"{sim.base_url}/0/private/Balance", data=body, headers=headers) as resp:
            assert (await resp.json())["error"] == ["EAPI:Invalid nonce"], body


async def test_malformed_bodies_are_kraken_errors(
    kraken: KrakenTestClient, session: aiohttp.ClientSession, sim: Simulator
) -> None:
    url = f"{sim.base_url}/0/private/Balance"
    for body, ctype in (
        (b"\xff\xfe\x00", "application/x-www-form-urlencoded"),
        (b"a=1&&&==", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b"[1,2]", "application/json"),
    ):
        async with session.post(
            url, data=body, headers={"Content-Type": ctype, "API-Key": sim.api_key, "API-Sign": "x"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["error"] == ["EGeneral:Invalid arguments"]
    # no headers at all
    async with session.post(url, data=b"nonce=1") as resp:
        assert (await resp.json())["error"] == ["EAPI:Invalid key"]


async def test_json_body_is_signed_as_sent(
    kraken: KrakenTestClient, session: aiohttp.ClientSession, sim: Simulator
) -> None:
    nonce = kraken.nonce()
    body = json.dumps({"nonce": nonce})
    headers = {
        "API-Key": sim.api_key,
        "API-Sign": sign("/0/private/Balance", nonce, body, sim.api_secret),
        "Content-Type": "application/json",
    }
    async with session.post(f"{sim.base_url}/0/private/Balance", data=body, headers=headers) as resp:
        assert (await resp.json())["error"] == []


async def test_given_credentials_are_used(session: aiohttp.ClientSession) -> None:
    key, secret = generate_credentials()
    async with run_simulator(api_key=key, api_secret=secret, tick_interval_s=0) as sim:
        assert sim.api_key == key and sim.api_secret == secret and not sim.credentials_generated
        client = KrakenTestClient(session, sim)
        assert (await client.private("Balance"))["error"] == []
