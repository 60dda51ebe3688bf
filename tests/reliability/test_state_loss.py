"""State loss: a damaged, restored or missing state store never trades on its own.

Each case runs a real bot process (``tradebot run``) against the simulator until it has
traded, kills it with SIGKILL, places a few more of this bot's orders (what it sent after
its last backup), damages the state, then starts the real bot again: it must start HALTED,
with its journal rebuilt to equal the simulator's orders and its positions and cash equal to
the simulator's balances; after a person's resume it trades on with no order placed twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions
from tradebot.app.config import settings_from_dict
from tradebot.core.models import OrderRequest, OrderStatus, OrderType, Side
from tradebot.core.order_ids import OrderIds
from tradebot.core.portfolio import Portfolio
from tradebot.core.store import StateStore
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.services.control import send_command
from tradebot.simulator import DEFAULT_BALANCES, Simulator, run_simulator

BOT_ID = "loss-drill"
IDS = OrderIds(BOT_ID)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(
        seed=7, tick_interval_s=0.02, heartbeat_s=0.2, volatility=0.002, rate_tier="pro"
    ) as simulator:
        yield simulator


def _config(sim: Simulator, tmp_path: Path) -> dict[str, Any]:
    return {
        "bot": {
            "id": BOT_ID,
            "state_dir": str(tmp_path / "state"),
            "exchange": "kraken",
            "pairs": ["BTC/USD"],
        },
        "http": {"enabled": False},
        "backup": {"min_spacing_s": 0.2},
        # few orders: each unfinished one costs look-ups at the next start, under Kraken's rate limit
        "risk": {"max_orders_per_minute": 6},
        # the simulator's fast, jumpy prices would trip the volatility HALT before any trading
        "checks": {"volatility": {"max_change_pct": 90.0}},
        "exchanges": {
            "kraken": {
                "base_url": sim.base_url,
                "ws_url": sim.ws_url,
                "min_spacing_s": 0.0,
                "request_timeout_s": 3.0,
                # the pro tier's counters: start-up look-ups do not wait on the starter tier's slow decay
                "rate_tier": "pro",
                # the API key's nonce is not bot state: kept apart, so a wiped folder costs no nonce errors
                "nonce_file": str(tmp_path / "kraken_nonce"),
            }
        },
        "strategies": {
            "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3, "volume": "0.001"}}
        },
    }


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """The little TOML these configs need (tables of strings, numbers, lists, inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"

    lines, tables = [], []
    for key, v in data.items():
        if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()) and not prefix:
            tables.append(_toml(v, prefix=f"{prefix}{key}."))
        elif isinstance(v, dict):
            tables.append(f"[{prefix}{key}]\n" + "".join(f"{k} = {value(x)}\n" for k, x in v.items()))
        else:
            lines.append(f"{key} = {value(v)}\n")
    return "".join(lines) + "\n".join(tables)


def _env(sim: Simulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    env["TRADEBOT_KRAKEN_API_KEY"] = sim.api_key
    env["TRADEBOT_KRAKEN_API_SECRET"] = sim.api_secret
    return env


async def _trade_then_kill(sim: Simulator, tmp_path: Path, *, orders: int = 4) -> None:
    """A real bot process trades until ``orders`` orders are on the simulator, then SIGKILL."""
    config = tmp_path / "tradebot.toml"
    config.write_text(_toml(_config(sim, tmp_path)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tradebot",
        "run",
        "--config",
        str(config),
        env=_env(sim),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(40):
            while len(sim.account.orders) < orders:
                assert proc.returncode is None, "the bot stopped before trading"
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a backup after the last fill, and more writes after it
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()


async def _orders_after_the_backup(sim: Simulator, tmp_path: Path) -> list[str]:
    """Orders of this bot the exchange has but no backup can: sent 'after the last backup'."""
    ex = KrakenExchange(
        KrakenConfig(base_url=sim.base_url, ws_url=sim.ws_url, min_spacing_s=0.0),
        api_key=sim.api_key,
        api_secret=sim.api_secret,
        state_dir=tmp_path,
    )
    await ex.start()
    try:
        cids = [IDS.new() for _ in range(2)]
        await ex.place_order(OrderRequest("BTC/USD", Side.BUY, OrderType.MARKET, D("0.002"), cids[0]))
        (ticker,) = await ex.ticker(["BTC/USD"])
        limit = (ticker.bid * D("0.5")).quantize(D("0.1"))  # rests on the book
        await ex.place_order(
            OrderRequest("BTC/USD", Side.BUY, OrderType.LIMIT, D("0.001"), cids[1], price=limit)
        )
        return cids
    finally:
        await ex.close()


def _damage(state: Path, how: str) -> None:
    db = state / "tradebot.db"
    wal = state / "tradebot.db-wal"
    if how == "truncated":
        size = db.stat().st_size
        with open(db, "r+b") as fh:
            fh.truncate(max(1024, size // 3))
        wal.unlink(missing_ok=True)
    elif how == "garbled":
        with open(db, "r+b") as fh:
            fh.seek(0)
            fh.write(b"\x13garbage garbage garbage\x00" * 400)
    elif how == "deleted":
        for p in (db, wal, state / "tradebot.db-shm"):
            p.unlink(missing_ok=True)
    elif how == "wal-deleted":
        assert wal.exists() and wal.stat().st_size > 0, "the killed bot left no WAL to lose"
        wal.unlink()
        (state / "tradebot.db-shm").unlink(missing_ok=True)
    elif how == "wal-garbled":
        assert wal.exists() and wal.stat().st_size > 0, "the killed bot left no WAL to damage"
        size = wal.stat().st_size
        with open(wal, "r+b") as fh:
            fh.seek(min(64, size // 2))
            fh.write(os.urandom(min(4096, size - 64)))
    elif how == "folder-wiped":
        shutil.rmtree(state)
    else:
        raise AssertionError(how)


async def _run_bot(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float) -> Any:
    monkeypatch.setenv("TRADEBOT_KRAKEN_API_KEY", sim.api_key)
    monkeypatch.setenv("TRADEBOT_KRAKEN_API_SECRET", sim.api_secret)
    settings = settings_from_dict(_config(sim, tmp_path), source=str(tmp_path / "tradebot.toml"))
    bot = Bot(prepare(settings=settings), RunOptions(duration_s=seconds))
    summary = await bot.run()
    return bot, summary


def _assert_journal_equals_exchange(sim: Simulator, state: Path, *, cash: bool = True) -> None:
    ours = {o.cl_ord_id: o for o in sim.account.orders.values() if IDS.is_ours(o.cl_ord_id)}
    store = StateStore(state)
    try:
        journal = {e.client_order_id: e for e in store.orders() if e.status is not OrderStatus.REJECTED}
        assert set(journal) == set(ours), set(journal) ^ set(ours)
        for cid, order in ours.items():
            entry = journal[cid]
            assert entry.filled_volume == order.vol_exec, cid
            assert entry.status.value == ("open" if order.status == "open" else order.status), cid
            assert entry.exchange_order_id == order.txid
        base_delta = sim.account.balances["BTC"] - DEFAULT_BALANCES["BTC"]
        portfolio = Portfolio(store)
        assert portfolio.position("BTC/USD").volume == base_delta
        if cash:  # (after trading on, cash follows fills until the next sync with the exchange)
            assert portfolio.cash == sim.account.balances["USD"]
    finally:
        store.close()


DAMAGE = ["truncated", "garbled", "deleted", "wal-deleted", "wal-garbled", "folder-wiped"]
# the resume, trading on and a plain restart are the same after every kind of damage: two kinds
# (one with the old file still there, one with nothing left) go through them, to keep the suite short
TRADE_ON = {"garbled", "folder-wiped"}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", DAMAGE)
async def test_damaged_state_starts_halted_rebuilt_from_the_exchange_and_trades_on_after_resume(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    await _trade_then_kill(sim, tmp_path)
    state = tmp_path / "state"
    if how.startswith("wal"):
        assert (state / "tradebot.db-wal").exists()
    late = await _orders_after_the_backup(sim, tmp_path)
    _damage(state, how)
    placed_before = sim.stats.requests["AddOrder"]

    _, summary = await _run_bot(sim, tmp_path, monkeypatch, 1.5)
    assert summary.started, summary.stop_reason
    assert summary.trading_state == "halted", summary.render()
    assert "(by state)" in summary.trading_reason and "tradebot resume" in summary.trading_reason
    assert sim.stats.requests["AddOrder"] == placed_before, "a damaged state traded on its own"
    _assert_journal_equals_exchange(sim, state)
    assert all(cid in set(_journal_ids(state)) for cid in late)

    if how not in TRADE_ON:
        return
    result = await asyncio.to_thread(send_command, state, "resume", "checked with tradebot state check")
    assert result.ok and result.state == "active", result
    _, again = await _run_bot(sim, tmp_path, monkeypatch, 3.0)
    assert again.trading_state == "active", again.render()
    assert sim.stats.requests["AddOrder"] > placed_before, "no trading after the resume"
    assert all(n == 1 for n in sim.account.orders_created.values()), "an order was placed twice"
    # a plain restart is no state loss: it reconciles what the last run left open, nothing more
    await asyncio.to_thread(send_command, state, "halt", "end of the test")
    _, last = await _run_bot(sim, tmp_path, monkeypatch, 0.5)
    assert "(by operator" in last.trading_reason, last.trading_reason
    # (cash is not compared here: fills the restart reconciles are applied on top of the balance read before)
    _assert_journal_equals_exchange(sim, state, cash=False)


def _journal_ids(state: Path) -> list[str]:
    conn = sqlite3.connect(state / "tradebot.db")
    try:
        return [r[0] for r in conn.execute("SELECT client_order_id FROM orders")]
    finally:
        conn.close()


def _cli(sim: Simulator, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args, "--config", str(tmp_path / "tradebot.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(sim),
    )


@pytest.mark.timeout(120)
async def test_state_check_reports_the_difference_and_state_rebuild_repairs_it(
    sim: Simulator, tmp_path: Path
) -> None:
    await _trade_then_kill(sim, tmp_path, orders=3)
    await _orders_after_the_backup(sim, tmp_path)
    state = tmp_path / "state"
    for p in state.glob("tradebot.db*"):
        p.unlink()
    shutil.rmtree(state / "backups")

    check = await asyncio.to_thread(_cli, sim, tmp_path, "state", "check")
    assert check.returncode == 1, check.stdout + check.stderr
    ours = [o for o in sim.account.orders.values() if IDS.is_ours(o.cl_ord_id)]
    assert check.stdout.count("missing from the journal") == len(ours), check.stdout
    assert "journal does NOT match the exchange" in check.stdout

    rebuild = await asyncio.to_thread(_cli, sim, tmp_path, "state", "rebuild")
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    assert f"{len(ours)} orders added" in rebuild.stdout and "trading state HALTED" in rebuild.stdout
    _assert_journal_equals_exchange(sim, state)

    again = await asyncio.to_thread(_cli, sim, tmp_path, "state", "check")
    assert again.returncode == 0 and "journal matches the exchange" in again.stdout, (
        again.stdout + again.stderr
    )
