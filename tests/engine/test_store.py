"""State store: durability, restart, corruption recovery, backups, migrations."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tradebot.core.clock import FakeClock
from tradebot.core.errors import StateError
from tradebot.core.models import Fill, OrderStatus, OrderType, Side, TradingState
from tradebot.core.store import (
    SCHEMA_VERSION,
    EquitySnapshot,
    JournalEntry,
    Position,
    StateStore,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(cid: str, status: OrderStatus = OrderStatus.PENDING) -> JournalEntry:
    return JournalEntry(
        client_order_id=cid,
        pair="BTC/USD",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        volume=Decimal("0.5"),
        price=Decimal("30000.1"),
        status=status,
        created_at=T0,
        updated_at=T0,
        strategy="sma",
    )


def fill(tid: str) -> Fill:
    return Fill(tid, "c1", "O1", "BTC/USD", Side.BUY, Decimal("30000"), Decimal("0.1"), Decimal("0.5"), T0)


def test_journal_roundtrip_and_duplicate_client_id(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        assert store.journal_order(entry("c1"))
        assert not store.journal_order(entry("c1"))  # never two entries per client id
        store.update_order("c1", status=OrderStatus.OPEN, exchange_order_id="O1", attempts=1)
        got = store.get_order("c1")
        assert got is not None
        assert got.status is OrderStatus.OPEN and got.exchange_order_id == "O1" and got.attempts == 1
        assert got.price == Decimal("30000.1") and got.volume == Decimal("0.5")
        assert [e.client_order_id for e in store.non_final_orders()] == ["c1"]
        store.update_order("c1", status=OrderStatus.CLOSED)
        assert store.non_final_orders() == []
        with pytest.raises(StateError):
            store.update_order("nope", status=OrderStatus.CLOSED)
        with pytest.raises(ValueError, match="not updatable order fields"):
            store.update_order("c1", created_at=T0)


def test_fill_insert_is_idempotent(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        with store.transaction() as tx:
            assert tx.insert_fill(fill("t1"))
        with store.transaction() as tx:
            assert not tx.insert_fill(fill("t1"))
        assert [f.trade_id for f in store.fills()] == ["t1"]


def test_transaction_rolls_back_everything(tmp_path: Path) -> None:
    seen: list[str] = []
    with StateStore(tmp_path) as store:

        def fail_midway() -> None:
            with store.transaction() as tx:
                tx.insert_fill(fill("t1"))
                tx.set_position(Position("BTC/USD", Decimal("1"), Decimal("2")), T0)
                tx.on_commit(lambda: seen.append("committed"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_midway()
        assert store.fills() == [] and store.positions() == {} and seen == []


def test_restart_keeps_everything(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        store.journal_order(entry("c1"))
        with store.transaction() as tx:
            tx.insert_fill(fill("t1"))
            tx.set_position(Position("BTC/USD", Decimal("0.1"), Decimal("30005")), T0)
        store.save_trading_state(TradingState.HALTED, "drawdown 12%", "drawdown", T0)
        store.incr_counter("restarts")
        store.set_kv("k", "v")
        store.append_equity(EquitySnapshot(T0, Decimal("1000"), Decimal("1000"), Decimal(0)))
        store.append_equity(EquitySnapshot(T0, Decimal("900"), Decimal("900"), Decimal(0)))
    with StateStore(tmp_path) as store:
        assert store.get_order("c1") is not None
        assert store.positions()["BTC/USD"] == Position("BTC/USD", Decimal("0.1"), Decimal("30005"))
        rec = store.load_trading_state()
        assert rec is not None and rec.state is TradingState.HALTED and rec.reason == "drawdown 12%"
        assert rec.time == T0
        assert store.incr_counter("restarts") == 2 and store.get_counter("restarts") == 2
        assert store.get_counter("never") == 0
        assert store.get_kv("k") == "v"
        assert store.peak_equity() == Decimal("1000")
        assert [s.equity for s in store.recent_equity()] == [Decimal("1000"), Decimal("900")]
        assert store.schema_version == SCHEMA_VERSION


def test_committed_write_survives_without_close(tmp_path: Path) -> None:
    """What a kill -9 leaves: the WAL is not checkpointed, the connection never closed."""
    store = StateStore(tmp_path)
    store.journal_order(entry("c1"))
    # a second, independent connection (another process after a crash) sees the commit
    other = StateStore(tmp_path)
    assert other.get_order("c1") is not None
    other.close()
    store.close()


def test_health_history_is_bounded(tmp_path: Path) -> None:
    with StateStore(tmp_path, health_retention=5) as store:
        for i in range(12):
            store.append_health("staleness", "ok", f"m{i}", "{}", T0)
        recent = store.recent_health(100)
        assert [r.message for r in recent] == [f"m{i}" for i in range(11, 6, -1)]
        assert store.recent_health(2)[0].check == "staleness"


def test_invalid_trading_state_is_refused(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store, pytest.raises(ValueError, match="not a valid TradingState"):
        store.save_trading_state("sleepy", "r", "s", T0)


def _corrupt_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    for i in range(4096, len(data)):
        data[i] = 0xA5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["pages", "header", "text"])
def test_corrupt_database_is_restored_from_newest_good_backup(tmp_path: Path, damage: str) -> None:
    clock = FakeClock()
    with StateStore(tmp_path, clock=clock) as store:
        store.journal_order(entry("old"))
        store.backup_now()
        clock._t += 10
        store.journal_order(entry("newer"))
        newest = store.backup_now()
        clock._t += 10
        store.journal_order(entry("after-backup"))
    # damage the newest backup too: the restore must skip it and take the older one
    newest.write_bytes(b"this is not a database" * 100)
    db = tmp_path / "tradebot.db"
    if damage == "pages":
        _corrupt_middle(db)
    elif damage == "header":
        data = bytearray(db.read_bytes())
        data[0:100] = b"\x00" * 100
        db.write_bytes(bytes(data))
    else:
        db.write_text("hello")
    clock._t += 30
    store = StateStore(tmp_path, clock=clock)
    try:
        report = store.restored
        assert report is not None
        assert report.backup_path != newest
        assert report.backup_age_s == pytest.approx(50, abs=0.01)
        assert report.corrupt_path.name.startswith("tradebot.db.corrupt-") and report.corrupt_path.exists()
        assert "restored backup" in report.message and report.backup_path.name in report.message
        assert store.get_order("old") is not None
        assert store.get_order("newer") is None and store.get_order("after-backup") is None
        store.journal_order(entry("works"))
    finally:
        store.close()


def test_corrupt_database_without_good_backup_raises(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        store.journal_order(entry("c1"))
    (tmp_path / "tradebot.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError, match="no good backup"):
        StateStore(tmp_path)
    assert any(p.name.startswith("tradebot.db.corrupt-") for p in tmp_path.iterdir())


def test_missing_database_with_backups_is_restored(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        store.journal_order(entry("c1"))
        store.backup_now()
    (tmp_path / "tradebot.db").unlink()
    with StateStore(tmp_path) as store:
        assert store.restored is not None and store.get_order("c1") is not None


def test_backup_rotation_keeps_n_and_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    with StateStore(tmp_path, backup_count=3, backup_interval_s=3600, clock=clock) as store:
        assert store.backup_due()
        made = []
        for i in range(5):
            store.journal_order(entry(f"c{i}"))
            made.append(store.backup_now())
            clock._t += 1
        assert store.backups() == list(reversed(made[-3:]))
        assert not store.backup_due()
        clock._t += 3600
        assert store.backup_due()
        assert not list((tmp_path / "backups").glob("*.tmp"))
        # each backup is a standalone, sound database
        conn = sqlite3.connect(made[-1])
        assert conn.execute("select count(*) from orders").fetchone()[0] == 5
        conn.close()
    # the interval survives a restart through the backup's timestamp
    with StateStore(tmp_path, backup_count=3, backup_interval_s=3600, clock=clock) as store:
        assert store.backup_due()
        clock2 = FakeClock(wall=datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC))
    with StateStore(tmp_path, backup_count=3, backup_interval_s=3600, clock=clock2) as store:
        assert not store.backup_due()


async def test_backup_runs_off_the_event_loop(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        store.journal_order(entry("c1"))
        path = await store.backup_async()
        assert path.exists() and store.backups() == [path]


def test_migrations_apply_in_order_and_newer_schema_is_refused(tmp_path: Path) -> None:
    from tradebot.core.store import MIGRATIONS

    with StateStore(tmp_path) as store:
        store.journal_order(entry("c1"))
    extra = (
        "ALTER TABLE orders ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
    )
    with StateStore(tmp_path, migrations=[*MIGRATIONS, extra]) as store:
        assert store.schema_version == SCHEMA_VERSION + 1
        assert store.get_order("c1") is not None
        with store.transaction() as tx:
            tx.execute("INSERT INTO notes (body) VALUES ('x')")
    with pytest.raises(StateError, match="newer than this tradebot"):
        StateStore(tmp_path)


def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    from tradebot.core.store import MIGRATIONS

    StateStore(tmp_path).close()
    broken = ("CREATE TABLE ok_table (x)", "THIS IS NOT SQL")
    with pytest.raises(sqlite3.Error):
        StateStore(tmp_path, migrations=[*MIGRATIONS, broken])
    with StateStore(tmp_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert not store._query("SELECT name FROM sqlite_master WHERE name = 'ok_table'")
