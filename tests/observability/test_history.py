"""``tradebot trades`` and ``tradebot report`` read the real state; their figures equal an
independent replay of the journal, and hand-computed figures for a known history."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions
from tradebot.app.config import settings_from_dict
from tradebot.cli.main import cli
from tradebot.core.models import Fill, OrderStatus, OrderType, Side
from tradebot.core.store import JournalEntry, StateStore

D = Decimal
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def write_history(state_dir: Path, fills: list[tuple[int, str, str, str, str, str, str]]) -> None:
    """(seconds after T0, strategy, pair, side, volume, price, fee) as journalled orders and fills."""
    store = StateStore(state_dir)
    try:
        for i, (at, strategy, pair, side, volume, price, fee) in enumerate(fills):
            cid = f"order-{i}"
            when = T0 + timedelta(seconds=at)
            store.journal_order(
                JournalEntry(
                    client_order_id=cid,
                    pair=pair,
                    side=Side(side),
                    order_type=OrderType.MARKET,
                    volume=D(volume),
                    status=OrderStatus.CLOSED,
                    created_at=when,
                    updated_at=when,
                    filled_volume=D(volume),
                    avg_fill_price=D(price),
                    fee=D(fee),
                    strategy=strategy,
                )
            )
            with store.transaction() as tx:
                tx.insert_fill(
                    Fill(f"{cid}:{volume}", cid, None, pair, Side(side), D(price), D(volume), D(fee), when)
                )
    finally:
        store.close()


def test_report_of_a_known_history_gives_the_hand_computed_figures(tmp_path: Path) -> None:
    write_history(
        tmp_path,
        [
            (0, "sma", "BTC/USD", "buy", "1", "100", "1"),
            (60, "sma", "BTC/USD", "sell", "1", "110", "1"),  # round trip +10 gross, +8 net: won
            (120, "sma", "BTC/USD", "buy", "2", "100", "2"),
            (150, "rsi", "BTC/USD", "sell", "1", "120", "1"),  # rsi's own book: a short, still open
            (180, "sma", "BTC/USD", "sell", "2", "95", "2"),  # round trip -10 gross, -14 net: lost
        ],
    )
    store = StateStore(tmp_path)  # two runs: the second starts at 150 s
    store.set_kv("run.1.started", T0.isoformat())
    store.set_kv("run.2.started", (T0 + timedelta(seconds=150)).isoformat())
    store.close()
    from tradebot.services import history

    now = T0 + timedelta(seconds=300)
    data = history.report(tmp_path, now=now)
    sma = next(b for b in data["lifetime"] if b["strategy"] == "sma")
    assert sma == {
        "strategy": "sma",
        "pair": "BTC/USD",
        "trades": 4,
        "round_trips": 2,
        "wins": 1,
        "win_rate": 0.5,
        "pnl_gross": "0",
        "pnl_net": "-6",
        "fees": "6",
        "max_drawdown": "14",
        "exposure_s": 120.0,
    }
    rsi = next(b for b in data["lifetime"] if b["strategy"] == "rsi")
    assert rsi["trades"] == 1 and rsi["round_trips"] == 0 and rsi["win_rate"] is None
    assert rsi["exposure_s"] == 150.0  # open from 150 s until now (300 s)
    run1, run2 = data["runs"]
    sma1 = next(b for b in run1["books"] if b["strategy"] == "sma")
    assert (sma1["trades"], sma1["round_trips"], sma1["pnl_gross"], sma1["fees"]) == (3, 1, "10", "4")
    assert sma1["exposure_s"] == 90.0  # 0..60 and 120..150
    sma2 = next(b for b in run2["books"] if b["strategy"] == "sma")
    assert (sma2["trades"], sma2["round_trips"], sma2["wins"], sma2["pnl_gross"]) == (1, 1, 0, "-10")
    assert sma2["exposure_s"] == 30.0

    trades = json.loads(invoke("trades", "--json", "--state-dir", str(tmp_path)).output)
    assert [t["realized_pnl"] for t in trades] == [None, "10", None, None, "-10"]
    assert [t["round_trip_pnl"] for t in trades] == [None, "8", None, None, "-14"]
    only = json.loads(invoke("trades", "--json", "--strategy", "rsi", "--state-dir", str(tmp_path)).output)
    assert [(t["side"], t["price"], t["fee"]) for t in only] == [("sell", "120", "1")]
    since = json.loads(
        invoke(
            "trades",
            "--json",
            "--since",
            (T0 + timedelta(seconds=100)).isoformat(),
            "--state-dir",
            str(tmp_path),
        ).output
    )
    assert len(since) == 3
    rows = list(
        csv.DictReader(
            io.StringIO(invoke("trades", "--csv", "--pair", "BTC/USD", "--state-dir", str(tmp_path)).output)
        )
    )
    assert len(rows) == 5 and rows[1]["strategy"] == "sma" and rows[1]["price"] == "110"
    text = invoke("report", "--state-dir", str(tmp_path)).output
    assert "since the state was created" in text and "run 2:" in text and "-6.00" in text


def independent_replay(state_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (strategy, pair): fills, gross PnL by cost basis, fees, closed round trips and wins."""
    store = StateStore(state_dir)
    try:
        strategy_of = {o.client_order_id: o.strategy or "-" for o in store.orders()}
        fills = store.fills()
    finally:
        store.close()
    books: dict[tuple[str, str], dict[str, Any]] = {}
    for f in fills:
        b = books.setdefault(
            (strategy_of.get(f.client_order_id or "", "-"), f.pair),
            {
                "qty": D(0),
                "cost": D(0),
                "gross": D(0),
                "fees": D(0),
                "trades": 0,
                "trips": 0,
                "wins": 0,
                "trip": D(0),
            },
        )
        signed = f.volume if f.side is Side.BUY else -f.volume
        b["trades"] += 1
        b["fees"] += f.fee
        b["trip"] -= f.fee
        if b["qty"] == 0 or (b["qty"] > 0) == (signed > 0):
            b["qty"] += signed
            b["cost"] += signed * f.price
            continue
        closing = min(abs(signed), abs(b["qty"]))
        unit_cost = b["cost"] / b["qty"]  # average entry price
        pnl = (f.price - unit_cost) * closing * (1 if b["qty"] > 0 else -1)
        b["gross"] += pnl
        b["trip"] += pnl
        b["cost"] -= unit_cost * closing * (1 if b["qty"] > 0 else -1)
        b["qty"] += signed
        rest = abs(signed) - closing
        if b["qty"] == 0 or rest > 0:
            share = f.fee * rest / f.volume
            b["trips"] += 1
            b["wins"] += (b["trip"] + share) > 0
            b["trip"] = -share
            b["cost"] = b["qty"] * f.price if rest > 0 else D(0)
    return books


@pytest.mark.timeout(120)
async def test_trades_and_report_of_two_paper_runs_equal_a_replay_of_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="tradebot.trades")
    config = {
        "bot": {"state_dir": str(tmp_path / "state"), "pairs": ["BTC/USD", "ETH/USD"]},
        "http": {"enabled": False},
        "strategies": {
            "sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 4}},
            "rsi": {"plugin": "rsi-reversion"},
        },
        "checks": {"staleness": {"threshold_s": 5.0}, "consecutive-losses": {"limit": 1000}},
    }
    for _ in range(2):
        settings = settings_from_dict(config, source=str(tmp_path / "tradebot.toml"))
        summary = await Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=4)).run()
        assert summary.exit_code == 0, summary.stop_reason
    state = tmp_path / "state"
    expected = independent_replay(state)
    assert sum(b["trades"] for b in expected.values()) > 2

    data = json.loads(invoke("report", "--json", "--state-dir", str(state)).output)
    got = {(b["strategy"], b["pair"]): b for b in data["lifetime"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        b = got[key]
        assert b["trades"] == want["trades"], key
        assert D(b["fees"]) == want["fees"], key
        assert D(b["pnl_gross"]) == pytest.approx(want["gross"], abs=D("1e-12")), key
        assert D(b["pnl_net"]) == pytest.approx(want["gross"] - want["fees"], abs=D("1e-12")), key
        assert (b["round_trips"], b["wins"]) == (want["trips"], want["wins"]), key
    assert [r["run"] for r in data["runs"]] == [1, 2]
    # each run's trades add up to the lifetime's
    for key, want in expected.items():
        per_run = sum(
            b["trades"] for r in data["runs"] for b in r["books"] if (b["strategy"], b["pair"]) == key
        )
        assert per_run == want["trades"], key

    trades = json.loads(invoke("trades", "--json", "--state-dir", str(state)).output)
    assert len(trades) == sum(b["trades"] for b in expected.values())
    assert all(t["strategy"] in ("sma", "rsi") and D(t["price"]) > 0 and D(t["fee"]) >= 0 for t in trades)
    # one trade log line per execution, with its price, fee and strategy
    lines = [r for r in caplog.records if r.name == "tradebot.trades"]
    assert [(r.trade_id, r.price, r.fee, r.strategy) for r in lines] == [  # type: ignore[attr-defined]
        (t["trade_id"], t["price"], t["fee"], t["strategy"]) for t in trades
    ]
    assert all(f"@ {r.price}, fee {r.fee}, strategy {r.strategy}" in r.getMessage() for r in lines)  # type: ignore[attr-defined]
    gross = sum((D(t["realized_pnl"]) for t in trades if t["realized_pnl"] is not None), D(0))
    assert gross == pytest.approx(sum((b["gross"] for b in expected.values()), D(0)), abs=D("1e-12"))


def test_trades_on_a_state_dir_without_state_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["trades", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no bot state" in result.output
    bad = CliRunner().invoke(cli, ["trades", "--since", "yesterday", "--state-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--since" in bad.output
