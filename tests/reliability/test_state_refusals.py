"""Bad state input refuses to start with one clear line naming the file and what to do; a
full or read-only state disk too. Backups follow every fill, at a bounded rate."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tradebot.core.store import StateStore


def _run(
    tmp_path: Path, state: Path, *args: str, bot_id: str = "one", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "tradebot.toml"
    config.write_text(
        f'[bot]\nid = "{bot_id}"\nstate_dir = "{state}"\npairs = ["BTC/USD"]\n[http]\nenabled = false\n'
        '[strategies.fast]\nplugin = "sma-crossover"\nparams = { fast = 2, slow = 3 }\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "tradebot", "run", "--config", str(config), "--paper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, out[-2000:]


@pytest.mark.timeout(90)
def test_a_file_that_is_not_sqlite_without_backups_is_refused_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "tradebot.db").write_text("these are my notes, not a database\n" * 50)
    result = _run(tmp_path, state, "--duration", "1")
    _refused(result, str(state / "tradebot.db"), "no good backup", "tradebot resume")


@pytest.mark.timeout(90)
def test_a_newer_schema_is_refused_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    StateStore(state).close()
    conn = sqlite3.connect(state / "tradebot.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = _run(tmp_path, state, "--duration", "1")
    _refused(result, str(state / "tradebot.db"), "schema version 99", "upgrade tradebot")


@pytest.mark.timeout(90)
def test_another_bots_state_is_refused_naming_both_ids(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _run(tmp_path, state, "--duration", "1", bot_id="alpha")
    assert first.returncode == 0, first.stderr[-2000:]
    result = _run(tmp_path, state, "--duration", "1", bot_id="beta")
    _refused(result, str(state / "tradebot.db"), "belongs to bot 'alpha'", "'beta'")


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip("needs a small file system of its own (mount tmpfs): not permitted here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.timeout(90)
def test_a_full_state_disk_at_start_gives_one_clear_line(tmp_path: Path, small_disk: Path) -> None:
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    result = _run(tmp_path, small_disk / "state", "--duration", "1")
    _refused(result, "free space")


@pytest.mark.timeout(90)
def test_a_read_only_state_disk_at_start_gives_one_clear_line(tmp_path: Path, small_disk: Path) -> None:
    state = small_disk / "state"
    StateStore(state).close()
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if remount.returncode != 0:
        pytest.skip("cannot remount read-only here")
    result = _run(tmp_path, state, "--duration", "1")
    _refused(result, "writable")


async def test_a_fill_or_a_halt_is_backed_up_within_the_minimum_spacing(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal as D

    from tradebot.core.clock import FakeClock
    from tradebot.core.models import Fill, Side

    clock = FakeClock()
    store = StateStore(tmp_path, clock=clock, min_backup_spacing_s=2.0)
    try:
        store.backup_now()  # the periodic one
        assert not store.recent_backup_due()
        await clock.advance(2.0)
        assert not store.recent_backup_due(), "nothing changed: no backup wanted"
        with store.transaction() as tx:
            tx.insert_fill(
                Fill(str(uuid.uuid4()), "c", "o", "BTC/USD", Side.BUY, D(1), D(1), D(0), datetime.now(UTC))
            )
        assert store.recent_backup_due()
        first = store.backup_now(recent=True)
        store.save_trading_state("halted", "test", "operator", datetime.now(UTC))
        assert not store.recent_backup_due(), "backups after changes are rate-bounded"
        await clock.advance(2.0)
        assert store.recent_backup_due()
        second = store.backup_now(recent=True)
        assert first != second and second.name.endswith(".recent.db")
        conn = sqlite3.connect(second)
        try:
            assert conn.execute("SELECT state FROM trading_state").fetchone()[0] == "halted"
        finally:
            conn.close()
    finally:
        store.close()


@pytest.fixture
def disk_2m(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("needs a small file system of its own (mount tmpfs): not permitted here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.timeout(90)
async def test_a_state_disk_that_fills_up_during_a_run_escalates(tmp_path: Path, disk_2m: Path) -> None:
    import asyncio

    from tradebot.app.bootstrap import prepare
    from tradebot.app.bot import Bot, RunOptions
    from tradebot.app.config import settings_from_dict

    settings = settings_from_dict(
        {
            "bot": {"state_dir": str(disk_2m / "state"), "pairs": ["BTC/USD"]},
            "http": {"enabled": False},
            "strategies": {"fast": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3}}},
        },
        source=str(tmp_path / "tradebot.toml"),
    )
    bot = Bot(prepare(settings=settings), RunOptions(paper=True, duration_s=30))
    run = asyncio.ensure_future(bot.run())
    await asyncio.sleep(2.0)
    assert not run.done(), run.result().render() if run.done() else ""

    def fill() -> None:
        fd = os.open(disk_2m / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)

    await asyncio.to_thread(fill)
    summary = await asyncio.wait_for(run, 20)
    assert summary.exit_code != 0 and "state cannot be saved" in summary.stop_reason, summary.stop_reason
    assert "free space" in summary.stop_reason
