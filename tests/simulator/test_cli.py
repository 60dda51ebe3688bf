"""``tradebot sim`` prints where it listens and the credentials, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
from click.testing import CliRunner

from tradebot.cli.sim import sim

SCRIPT = "from tradebot.cli.sim import sim; sim()"


async def read_banner(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    lines = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=10)).decode()
        assert line, "the simulator exited early"
        lines.append(line)
        if line.startswith("Press Ctrl+C"):
            return "".join(lines)


async def test_sim_command_serves_and_stops() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        "--port",
        "0",
        "--seed",
        "3",
        "--tick-interval",
        "0.05",
        "--faults",
        "error=EService:Busy,on=Time,n=1",
        "--balance",
        "USD=500",
        "--balance",
        "XBT=2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner = await read_banner(proc)
        url = re.search(r"REST\s+(http://127\.0\.0\.1:\d+)", banner)
        assert url and "ws://127.0.0.1:" in banner and "API secret" in banner
        assert "fault #1: error=EService:Busy,on=Time,n=1" in banner
        async with aiohttp.ClientSession() as session:
            async with session.get(url.group(1) + "/0/public/Time") as resp:
                assert (await resp.json())["error"] == ["EService:Busy"]
            async with session.get(url.group(1) + "/0/public/Time") as resp:
                assert (await resp.json())["error"] == []
            async with session.get(url.group(1) + "/_sim/state") as resp:
                state = await resp.json()
            assert state["balances"]["USD"] == "500.0000" and state["balances"]["BTC"] == "2.0000000000"
            assert state["seed"] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0 and b"simulator stopped" in out


async def test_given_secret_is_not_echoed() -> None:
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        "--api-key",
        "my-test-key",
        "--api-secret",
        secret,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner = await read_banner(proc)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert "as given" in banner
    assert secret not in banner + out.decode() + err.decode()
    assert "my-tes" not in banner + out.decode() + err.decode()  # not even the key's first letters


def test_bad_input_is_refused() -> None:
    runner = CliRunner()
    result = runner.invoke(sim, ["--api-key", "k"])
    assert result.exit_code != 0 and "both" in result.output
    result = runner.invoke(sim, ["--faults", "explode"])
    assert result.exit_code != 0 and "explode" in result.output
    assert "--rate-tier" in runner.invoke(sim, ["--help"]).output
    result = runner.invoke(sim, ["--balance", "NOPE=5"])
    assert result.exit_code != 0 and "NOPE" in result.output
    result = runner.invoke(sim, ["--balance", "USD=lots"])
    assert result.exit_code != 0 and "ASSET=AMOUNT" in result.output
