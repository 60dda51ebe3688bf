"""An exchange error that quotes the API key never reaches the state store, its backups or the log.

A real ``tradebot run`` process trades on the simulator while two AddOrder calls in a row are
answered with Kraken errors whose text carries the API key (an invalid order, insufficient
funds); the executor records each order REJECTED with the exchange's error as its
``last_error``; the database, its WAL, every backup, the log file and the
process's output must hold the key in no form, while the errors themselves are recorded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.observability.test_secrets_everywhere import forms
from tradebot.simulator import run_simulator
from tradebot.simulator._faults import FaultRule


@pytest.mark.timeout(60)
async def test_an_order_error_quoting_the_api_key_is_stored_and_logged_redacted(tmp_path: Path) -> None:
    async with run_simulator(host="127.0.0.1", port=0, seed=5, tick_interval_s=0.02, rate_tier="pro") as sim:
        key = sim.api_key
        faults = [
            FaultRule(
                kind="error",
                value=f"EOrder:Invalid order:key {key}",
                targets=frozenset({"AddOrder"}),
                count=1,
            ),
            FaultRule(
                kind="error",
                value=f"EOrder:Insufficient funds:{key}",
                targets=frozenset({"AddOrder"}),
                count=1,
            ),
        ]
        sim.faults.add([faults.pop(0)])
        (tmp_path / "tradebot.toml").write_text(
            f"""
[bot]
exchange = "kraken"
state_dir = "state"
pairs = ["BTC/USD"]

[http]
enabled = false

[risk]
max_orders_per_minute = 1000

[checks.volatility]
max_change_pct = 90.0

[backup]
min_spacing_s = 0.1

[logging]
file = "bot.log"
level = "DEBUG"

[exchanges.kraken]
base_url = "{sim.base_url}"
ws_url = "{sim.ws_url}"
min_spacing_s = 0.0
rate_tier = "pro"

[strategies.sma]
plugin = "sma-crossover"
params = {{ fast = 2, slow = 3, volume = "0.001" }}
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
        env.update(TRADEBOT_KRAKEN_API_KEY=key, TRADEBOT_KRAKEN_API_SECRET=sim.api_secret)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tradebot",
            "run",
            "--duration",
            "30",
            "--config",
            "tradebot.toml",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        comm = asyncio.ensure_future(proc.communicate())
        try:
            async with asyncio.timeout(40):
                # one AddOrder after the other refused quoting the key, then an order placed
                while faults or sim.faults.describe() or not sim.account.orders:
                    assert not comm.done(), "the bot stopped early"
                    if faults and not sim.faults.describe():
                        sim.faults.add([faults.pop(0)])
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.5)  # the journal writes and a backup after them
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            stdout, stderr = await comm
    state = tmp_path / "state"
    with sqlite3.connect(state / "tradebot.db") as db:
        errors = [row[0] for row in db.execute("SELECT last_error FROM orders WHERE last_error IS NOT NULL")]
    # the errors were recorded (so the check below is not vacuous), with the key masked
    assert any("Invalid order:key ***" in e for e in errors), errors
    assert any("Insufficient funds:***" in e for e in errors), errors
    files = [state / "bot.log", *state.glob("tradebot.db*"), *(state / "backups").glob("*")]
    assert any(p.parent.name == "backups" for p in files), files
    places = {str(p.relative_to(tmp_path)): p.read_bytes().decode("latin-1") for p in files}
    places["stdout (summary)"] = stdout.decode()
    places["stderr (logs)"] = stderr.decode()
    assert "Invalid order:key ***" in places["state/bot.log"]
    found = [
        f"{form[:6]}... in {where}" for form in forms(key) for where, text in places.items() if form in text
    ]
    assert not found, found
