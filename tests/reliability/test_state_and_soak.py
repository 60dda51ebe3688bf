"""State that survives: a corrupted database restored through a real ``tradebot run``; kill -9
of a live-style bot at random points; memory soak of the engine."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.reliability.conftest import long_only
from tradebot.drill import DrillSettings, render_reports, run_scenario

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "tradebot", "run", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.timeout(90)
def test_corrupted_state_database_is_restored_from_backup_by_a_real_run(tmp_path: Path) -> None:
    config = tmp_path / "tradebot.toml"
    config.write_text(
        '[bot]\nstate_dir = "state"\npairs = ["BTC/USD"]\n'
        "[http]\nenabled = false\n"
        '[strategies.fast]\nplugin = "sma-crossover"\nparams = { fast = 2, slow = 3 }\n'
    )
    first = _run(config, "--paper", "--duration", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    state = tmp_path / "state"
    db = state / "tradebot.db"
    assert db.exists() and list((state / "backups").iterdir()), "the first run took no backup"
    for extra in (state / "tradebot.db-wal", state / "tradebot.db-shm"):
        extra.unlink(missing_ok=True)
    with open(db, "r+b") as fh:  # wreck the header and the first pages
        fh.write(b"\x00garbage, not a database\x00" * 200)
    second = _run(config, "--paper", "--duration", "1.5")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "restored" in (second.stdout + second.stderr).lower()
    assert list(state.glob("tradebot.db.corrupt-*")), "the broken file was not kept aside"
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    finally:
        conn.close()


@pytest.mark.timeout(60)
async def test_short_soak_keeps_memory_flat(tmp_path: Path) -> None:
    result = await _bench("bench_soak").soak(60_000, 20_000, tmp_path)
    assert result["strategy_calls"] >= 2 * 60_000
    assert result["growth_pct"] < 5.0, result


@pytest.mark.slow
@long_only
@pytest.mark.timeout(600)
async def test_long_soak_one_million_ticks_rss_growth_under_5_percent(tmp_path: Path) -> None:
    result = await _bench("bench_soak").soak(1_000_000, 100_000, tmp_path)
    assert result["growth_pct"] < 5.0, result


@pytest.mark.slow
@long_only
@pytest.mark.timeout(900)
async def test_long_kill9_fifty_times_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    settings = DrillSettings(kill_rounds=50, kill_after_min_s=0.0, kill_after_max_s=1.5, seed=23)
    report = await run_scenario("process-kill", settings, workdir=tmp_path)
    assert report.passed, render_reports([report])
    assert report.duplicates == 0 and report.lost == 0
