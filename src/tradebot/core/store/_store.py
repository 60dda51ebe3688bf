"""The durable state of one bot: a SQLite database in the state directory.

Writes are small and synchronous: with ``synchronous=FULL`` in WAL mode each commit is
on disk before the call returns, so a kill -9 loses nothing that a caller saw succeed.
Such writes take a few milliseconds and are made straight from the event loop. Long
operations (:meth:`StateStore.backup_now`) must run in a thread: use
:meth:`StateStore.backup_async` or ``asyncio.to_thread``.

One connection, guarded by a lock, is the only writer; the lock makes the store safe
to share between the event loop and worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.errors import StateError
from tradebot.core.files import private_dir, private_files
from tradebot.core.models import Fill, OrderStatus, OrderType, Side, TradingState
from tradebot.core.secrets import redact
from tradebot.core.store import _backups
from tradebot.core.store._records import (
    EquitySnapshot,
    HealthRecord,
    JournalEntry,
    Position,
    PositionClosed,
    RestoreReport,
    TradingStateRecord,
)
from tradebot.core.store._schema import MIGRATIONS, Migration

__all__ = ["DB_NAME", "MANUAL_RESUME_KEY", "StateStore", "StoreTx"]

MANUAL_RESUME_KEY = "trading.manual_resume_at"
BOT_ID_KEY = "bot.id"

# SQLite errors that say the disk or folder cannot take writes, not that the file is damaged
_DISK_PROBLEMS = (
    "readonly",
    "read-only",
    "disk is full",
    "disk i/o error",
    "unable to open",
    "out of memory",
)


def _disk_problem(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(p in text for p in _DISK_PROBLEMS)


def _disk_error(path: Path, exc: BaseException) -> StateError:
    return StateError(
        f"cannot write the state database {path}: {exc}; make sure the disk has free space and the "
        "state directory is writable, then start again",
        path=str(path),
    )


log = logging.getLogger("tradebot.store")

DB_NAME = "tradebot.db"
BACKUP_DIR = "backups"


def _ts(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return t.isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _dec(s: str | None) -> Decimal | None:
    return None if s is None else Decimal(s)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _text(v: str | None) -> str | None:
    """Free text on its way into the database (an error, a reason, a message): a secret it
    quotes (an exchange's error may echo what it was sent) is never written, nor backed up."""
    return None if v is None else redact(v)


_ORDER_COLUMNS = [
    "client_order_id",
    "pair",
    "side",
    "order_type",
    "volume",
    "price",
    "status",
    "exchange_order_id",
    "filled_volume",
    "avg_fill_price",
    "fee",
    "strategy",
    "reason",
    "attempts",
    "last_error",
    "created_at",
    "updated_at",
    "sent_at",
]
_ORDER_UPDATABLE = frozenset(_ORDER_COLUMNS) - {"client_order_id", "created_at"}


def _order_row_values(entry: JournalEntry) -> list[Any]:
    return [
        entry.client_order_id,
        entry.pair,
        entry.side.value,
        entry.order_type.value,
        str(entry.volume),
        _opt_str(entry.price),
        entry.status.value,
        entry.exchange_order_id,
        str(entry.filled_volume),
        _opt_str(entry.avg_fill_price),
        str(entry.fee),
        entry.strategy,
        _text(entry.reason),
        entry.attempts,
        _text(entry.last_error),
        _ts(entry.created_at),
        _ts(entry.updated_at),
        None if entry.sent_at is None else _ts(entry.sent_at),
    ]


def _entry(row: sqlite3.Row) -> JournalEntry:
    return JournalEntry(
        client_order_id=row["client_order_id"],
        pair=row["pair"],
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        volume=Decimal(row["volume"]),
        price=_dec(row["price"]),
        status=OrderStatus(row["status"]),
        exchange_order_id=row["exchange_order_id"],
        filled_volume=Decimal(row["filled_volume"]),
        avg_fill_price=_dec(row["avg_fill_price"]),
        fee=Decimal(row["fee"]),
        strategy=row["strategy"],
        reason=row["reason"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        sent_at=_dt(row["sent_at"]),
    )


def _db_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _ts(value)
    if isinstance(value, (Side, OrderType, OrderStatus)):
        return value.value
    if isinstance(value, str):
        return _text(value)
    return value


class StoreTx:
    """Writes made inside one :meth:`StateStore.transaction`; all commit or none do.

    ``on_commit`` callbacks run after the commit succeeded, which is where callers
    update in-memory copies of what they wrote.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._after: list[Callable[[], None]] = []
        self.wants_backup = False
        """A change that matters (a fill) was written: a backup should follow soon."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Run one statement inside the transaction."""
        return self._conn.execute(sql, tuple(params))

    def insert_order(self, entry: JournalEntry) -> bool:
        """Add a journal entry; False (and nothing written) when its client id exists."""
        placeholders = ",".join("?" * len(_ORDER_COLUMNS))
        cur = self._conn.execute(
            f"INSERT OR IGNORE INTO orders ({','.join(_ORDER_COLUMNS)}) VALUES ({placeholders})",
            _order_row_values(entry),
        )
        return cur.rowcount == 1

    def update_order(self, client_order_id: str, **fields: Any) -> None:
        """Change columns of a journal entry (``updated_at`` must be among them)."""
        unknown = set(fields) - _ORDER_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable order fields: {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        cur = self._conn.execute(
            f"UPDATE orders SET {assignments} WHERE client_order_id = ?",
            [_db_value(v) for v in fields.values()] + [client_order_id],
        )
        if cur.rowcount != 1:
            raise StateError("no journal entry for that client order id", client_order_id=client_order_id)

    def insert_fill(self, fill: Fill) -> bool:
        """Record a fill; False (and nothing written) when its trade id was recorded before."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO fills (trade_id, client_order_id, exchange_order_id, pair, side, "
            "price, volume, fee, time) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                fill.trade_id,
                fill.client_order_id,
                fill.exchange_order_id,
                fill.pair,
                fill.side.value,
                str(fill.price),
                str(fill.volume),
                str(fill.fee),
                _ts(fill.time),
            ),
        )
        if cur.rowcount == 1:
            self.wants_backup = True
        return cur.rowcount == 1

    def set_position(self, position: Position, time: datetime) -> None:
        self._conn.execute(
            "INSERT INTO positions (pair, volume, avg_price, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(pair) DO UPDATE SET volume=excluded.volume, avg_price=excluded.avg_price, "
            "updated_at=excluded.updated_at",
            (position.pair, str(position.volume), str(position.avg_price), _ts(time)),
        )

    def add_realized(self, record: PositionClosed) -> None:
        self._conn.execute(
            "INSERT INTO realized_pnl (trade_id, pair, volume, entry_price, exit_price, pnl, fee, "
            "position_after, fully_closed, time) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                record.trade_id,
                record.pair,
                str(record.volume),
                str(record.entry_price),
                str(record.exit_price),
                str(record.pnl),
                str(record.fee),
                str(record.position_after),
                int(record.fully_closed),
                _ts(record.time),
            ),
        )

    def set_kv(self, key: str, value: str, time: datetime) -> None:
        self._conn.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, _text(value), _ts(time)),
        )

    def incr_counter(self, name: str, by: int = 1) -> int:
        row = self._conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value RETURNING value",
            (name, by),
        ).fetchone()
        return int(row[0])


class StateStore:
    """The bot's SQLite state: journal, fills, positions, PnL, trading state, health, counters.

    Opening checks the database (``PRAGMA integrity_check`` and a read). A corrupt file,
    or one that is not a database, is moved aside as ``tradebot.db.corrupt-<ts>`` and the
    newest sound backup is restored; :attr:`restored` then says which backup and how old.
    :class:`StateError` is raised when no backup is sound. A missing database with
    backups present is restored the same way, since state is never silently dropped.

    Backups (``backup_count`` kept, one at most every ``backup_interval_s``; defaults 24
    and one hour) live in ``<state_dir>/backups``. Besides those, a backup follows every
    change that matters (a fill, a HALT) at most once per ``min_backup_spacing_s``, so a
    restore loses at most seconds. A database that has committed fewer transactions than
    its newest backup lost some (a deleted or damaged WAL, an older copy put in its place)
    and is treated like a damaged one.

    :attr:`created` says the database was created empty by this open. ``bot_id`` (when
    given) is stamped into a new database; a database stamped with another bot's id is
    refused. A disk that is full or read-only is reported as :class:`StateError` at open;
    a write failing that way later calls :attr:`write_failure_listeners` first.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        backup_count: int = 24,
        backup_interval_s: float = 3600.0,
        health_retention: int = 10_000,
        equity_retention: int = 100_000,
        clock: Clock | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
        bot_id: str | None = None,
        min_backup_spacing_s: float = 2.0,
    ) -> None:
        if backup_count < 1:
            raise ValueError(f"backup_count must be >= 1 (got {backup_count})")
        self.state_dir = Path(state_dir)
        try:
            private_dir(self.state_dir)
        except OSError as exc:
            raise StateError(
                f"cannot create the state directory {self.state_dir}: {exc.strerror or exc}",
                path=str(self.state_dir),
            ) from None
        self.path = self.state_dir / DB_NAME
        self.backup_dir = self.state_dir / BACKUP_DIR
        self.backup_count = backup_count
        self.backup_interval_s = backup_interval_s
        self.health_retention = health_retention
        self.equity_retention = equity_retention
        self._clock: Clock = clock or SystemClock()
        self._migrations = list(migrations)
        self._lock = threading.RLock()
        self._last_backup_mono: float | None = None
        self.min_backup_spacing_s = min_backup_spacing_s
        self._backup_wanted = False
        self._last_recent_mono: float | None = None
        self.restored: RestoreReport | None = None
        self.created = False
        self.bot_id = bot_id
        self.write_failure_listeners: list[Callable[[StateError], None]] = []
        try:
            self._conn = self._open()
        except sqlite3.Error as exc:
            if _disk_problem(exc):  # a full or read-only disk: one clear line, never a traceback
                raise _disk_error(self.path, exc) from None
            raise
        except OSError as exc:
            raise _disk_error(self.path, exc) from None
        self._check_bot_id()
        private_files(self.path, *(self.path.with_name(self.path.name + x) for x in ("-wal", "-shm")))

    # --- opening ---------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        existed = self.path.exists()
        if not existed and _backups.list_backups(self.backup_dir):
            self.restored = _backups.restore_newest_good(
                self.path, self.backup_dir, self._clock.now(), "database file is missing"
            )
        self.created = not existed and self.restored is None
        try:
            conn = self._connect_checked()
            if self.restored is None:
                self._check_not_behind_backups(conn)
        except _Unsound as bad:
            self.restored = _backups.restore_newest_good(
                self.path, self.backup_dir, self._clock.now(), bad.problem
            )
            try:
                conn = self._connect_checked()
            except _Unsound as still_bad:  # the backup passed its check moments ago
                raise StateError(
                    f"restored backup is unusable too: {still_bad.problem}", path=str(self.path)
                ) from None
        self._migrate(conn)
        return conn

    def _check_not_behind_backups(self, conn: sqlite3.Connection) -> None:
        """Raise :class:`_Unsound` when the newest sound backup holds more than the database."""
        row = (
            conn.execute("SELECT value FROM counters WHERE name = ?", (_backups.SEQ_COUNTER,)).fetchone()
            if _has_table(conn, "counters")
            else None
        )
        live = int(row[0]) if row else 0
        for backup in _backups.list_backups(self.backup_dir)[:2]:
            if _backups.check_database(backup) is not None:
                continue
            seq = _backups.backup_seq(backup)
            if seq is not None and seq > live:
                conn.close()
                raise _Unsound(
                    f"it holds {seq - live} fewer changes than backup {backup.name}: its write-ahead log "
                    "was lost or damaged, or an older copy was put in its place"
                )
            return

    def _connect_checked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=FULL")
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            if [tuple(r) for r in rows] != [("ok",)]:
                raise _Unsound("integrity check failed: " + "; ".join(str(r[0]) for r in rows[:3]))
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _disk_problem(exc):
                raise _disk_error(self.path, exc) from None
            raise _Unsound(str(exc)) from None
        except _Unsound:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        migrations = self._migrations
        if version > len(migrations):
            conn.close()
            raise StateError(
                f"state database {self.path} has schema version {version}, newer than this tradebot "
                f"understands ({len(migrations)}); upgrade tradebot, or use another state directory",
                path=str(self.path),
            )
        for index in range(version, len(migrations)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in migrations[index]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {index + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("state database migrated to schema version %d", index + 1)

    def _check_bot_id(self) -> None:
        """Stamp a new database with the bot id; refuse one stamped with another bot's."""
        saved = self.get_kv(BOT_ID_KEY)
        if self.bot_id is None:
            return
        if saved is None:
            self.set_kv(BOT_ID_KEY, self.bot_id)
        elif saved != self.bot_id:
            self.close()
            raise StateError(
                f"state database {self.path} belongs to bot {saved!r}, not to this config's bot "
                f"{self.bot_id!r}; point state_dir at this bot's own folder, or set [bot] id = {saved!r} "
                "if this config really is that bot's",
                path=str(self.path),
            )

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database (checkpointing the WAL). Safe to call more than once."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[StoreTx]:
        """Group writes: all become durable together when the block ends, or none do."""
        with self._lock:
            if self._conn is None:
                raise StateError("state store is closed", path=str(self.path))
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                tx = StoreTx(self._conn)
                try:
                    yield tx
                    tx.incr_counter(_backups.SEQ_COUNTER)
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if not _disk_problem(exc):
                    raise
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                error = _disk_error(self.path, exc)
                for listener in list(self.write_failure_listeners):
                    try:
                        listener(error)
                    except Exception:  # the write failure itself is raised below
                        log.exception("state write-failure listener failed")
                raise error from None
        if tx.wants_backup:
            self._backup_wanted = True
        for callback in tx._after:
            callback()

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            if self._conn is None:
                raise StateError("state store is closed", path=str(self.path))
            return self._conn.execute(sql, tuple(params)).fetchall()

    def now(self) -> datetime:
        return self._clock.now()

    # --- order journal ---------------------------------------------------------

    def journal_order(self, entry: JournalEntry) -> bool:
        """Durably add a journal entry; False when the client order id is already journalled."""
        with self.transaction() as tx:
            return tx.insert_order(entry)

    def update_order(self, client_order_id: str, **fields: Any) -> None:
        """Durably change columns of a journal entry; ``updated_at`` is set to now if not given."""
        fields.setdefault("updated_at", self._clock.now())
        with self.transaction() as tx:
            tx.update_order(client_order_id, **fields)

    def get_order(self, client_order_id: str) -> JournalEntry | None:
        rows = self._query("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return _entry(rows[0]) if rows else None

    def orders(self, statuses: Iterable[OrderStatus] | None = None) -> list[JournalEntry]:
        """Journal entries (optionally only those in ``statuses``), oldest first."""
        if statuses is None:
            rows = self._query("SELECT * FROM orders ORDER BY created_at, rowid")
        else:
            values = [s.value for s in statuses]
            marks = ",".join("?" * len(values))
            rows = self._query(
                f"SELECT * FROM orders WHERE status IN ({marks}) ORDER BY created_at, rowid", values
            )
        return [_entry(r) for r in rows]

    def newest_order_time(self) -> datetime | None:
        """When the newest journal entry was created (None: the journal is empty)."""
        rows = self._query("SELECT created_at FROM orders ORDER BY created_at DESC LIMIT 1")
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def restored_backup_time(self) -> datetime | None:
        """When the backup restored at open was taken (None: nothing was restored)."""
        if self.restored is None:
            return None
        return _backups.backup_time(self.restored.backup_path)

    def non_final_orders(self) -> list[JournalEntry]:
        """Entries that are not final yet: what reconcile and order tracking work on."""
        return self.orders([s for s in OrderStatus if not s.is_final])

    # --- fills, positions, PnL -------------------------------------------------

    def fills(self, pair: str | None = None) -> list[Fill]:
        """Recorded fills in the order they were applied."""
        if pair is None:
            rows = self._query("SELECT * FROM fills ORDER BY seq")
        else:
            rows = self._query("SELECT * FROM fills WHERE pair = ? ORDER BY seq", (pair,))
        return [
            Fill(
                trade_id=r["trade_id"],
                client_order_id=r["client_order_id"],
                exchange_order_id=r["exchange_order_id"],
                pair=r["pair"],
                side=Side(r["side"]),
                price=Decimal(r["price"]),
                volume=Decimal(r["volume"]),
                fee=Decimal(r["fee"]),
                time=datetime.fromisoformat(r["time"]),
            )
            for r in rows
        ]

    def positions(self) -> dict[str, Position]:
        rows = self._query("SELECT pair, volume, avg_price FROM positions ORDER BY pair")
        return {r["pair"]: Position(r["pair"], Decimal(r["volume"]), Decimal(r["avg_price"])) for r in rows}

    def realized_pnl(self, limit: int | None = None) -> list[PositionClosed]:
        """Realised-PnL records, oldest first (the newest ``limit`` when given)."""
        sql = "SELECT * FROM realized_pnl ORDER BY seq DESC"
        rows = self._query(
            sql + (" LIMIT ?" if limit is not None else ""), (limit,) if limit is not None else ()
        )
        return [
            PositionClosed(
                trade_id=r["trade_id"],
                pair=r["pair"],
                volume=Decimal(r["volume"]),
                entry_price=Decimal(r["entry_price"]),
                exit_price=Decimal(r["exit_price"]),
                pnl=Decimal(r["pnl"]),
                fee=Decimal(r["fee"]),
                position_after=Decimal(r["position_after"]),
                fully_closed=bool(r["fully_closed"]),
                time=datetime.fromisoformat(r["time"]),
            )
            for r in reversed(rows)
        ]

    def total_realized_pnl(self) -> Decimal:
        rows = self._query("SELECT pnl FROM realized_pnl")
        return sum((Decimal(r[0]) for r in rows), Decimal(0))

    # --- equity ------------------------------------------------------------------

    def append_equity(self, snapshot: EquitySnapshot) -> None:
        """Record an equity snapshot and keep the all-time peak (for drawdown)."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO equity (time, equity, cash, positions_value) VALUES (?,?,?,?)",
                (_ts(snapshot.time), str(snapshot.equity), str(snapshot.cash), str(snapshot.positions_value)),
            )
            peak = self._peak_in(tx)
            if peak is None or snapshot.equity > peak:
                tx.set_kv("equity.peak", str(snapshot.equity), snapshot.time)
            tx.execute(
                "DELETE FROM equity WHERE seq <= (SELECT max(seq) FROM equity) - ?", (self.equity_retention,)
            )

    @staticmethod
    def _peak_in(conn: sqlite3.Connection | StoreTx) -> Decimal | None:
        row = conn.execute("SELECT value FROM kv WHERE key = 'equity.peak'").fetchone()
        return None if row is None else Decimal(row[0])

    def peak_equity(self) -> Decimal | None:
        """The highest equity ever recorded (kept even when old snapshots are pruned)."""
        with self._lock:
            return self._peak_in(self._conn)

    def recent_equity(self, limit: int = 100) -> list[EquitySnapshot]:
        """The newest ``limit`` snapshots, oldest first."""
        rows = self._query("SELECT * FROM equity ORDER BY seq DESC LIMIT ?", (limit,))
        return [
            EquitySnapshot(
                time=datetime.fromisoformat(r["time"]),
                equity=Decimal(r["equity"]),
                cash=Decimal(r["cash"]),
                positions_value=Decimal(r["positions_value"]),
            )
            for r in reversed(rows)
        ]

    # --- trading state -----------------------------------------------------------

    def load_trading_state(self) -> TradingStateRecord | None:
        rows = self._query("SELECT state, reason, source, time FROM trading_state WHERE id = 1")
        if not rows:
            return None
        r = rows[0]
        return TradingStateRecord(
            TradingState(r["state"]), r["reason"], r["source"], datetime.fromisoformat(r["time"])
        )

    def save_trading_state(
        self,
        state: str | TradingState,
        reason: str,
        source: str,
        time: datetime,
        *,
        manual_resume: bool = False,
    ) -> None:
        """Durably record the trading state (validated against :class:`TradingState`).

        ``manual_resume``: a person returned trading to ACTIVE; the time is kept as well (in
        the same transaction), see :meth:`last_manual_resume`.
        """
        value = TradingState(state).value
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO trading_state (id, state, reason, source, time) VALUES (1,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, reason=excluded.reason, "
                "source=excluded.source, time=excluded.time",
                (value, _text(reason), source, _ts(time)),
            )
            if manual_resume:
                tx.set_kv(MANUAL_RESUME_KEY, _ts(time), time)
            tx.wants_backup = True  # a HALT (or a resume) must survive a restore

    def last_manual_resume(self) -> datetime | None:
        """When a person last resumed trading, whether a bot was running or not.

        Latched triggers (drawdown, consecutive losses) count only what happened after it
        when they rebuild their state at start, so a resume is never undone by a restart.
        """
        saved = self.get_kv(MANUAL_RESUME_KEY)
        return datetime.fromisoformat(saved) if saved else None

    def kv_updated_at(self, key: str) -> datetime | None:
        """When ``key`` was last written (None when it never was)."""
        rows = self._query("SELECT updated_at FROM kv WHERE key = ?", (key,))
        return datetime.fromisoformat(rows[0][0]) if rows else None

    # --- health history ------------------------------------------------------------

    def append_health(self, check: str, status: str, message: str, metrics_json: str, time: datetime) -> None:
        """Add one check result; only the newest ``health_retention`` results are kept."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO health (check_name, status, message, metrics_json, time) VALUES (?,?,?,?,?)",
                (check, status, _text(message), _text(metrics_json), _ts(time)),
            )
            tx.execute(
                "DELETE FROM health WHERE seq <= (SELECT max(seq) FROM health) - ?", (self.health_retention,)
            )

    def recent_health(self, limit: int = 100) -> list[HealthRecord]:
        """The newest ``limit`` results, newest first."""
        rows = self._query("SELECT * FROM health ORDER BY seq DESC LIMIT ?", (limit,))
        return [
            HealthRecord(
                r["check_name"],
                r["status"],
                r["message"],
                r["metrics_json"],
                datetime.fromisoformat(r["time"]),
            )
            for r in rows
        ]

    # --- counters and key/value ----------------------------------------------------

    def incr_counter(self, name: str, by: int = 1) -> int:
        """Add ``by`` to a counter (created at 0); return the new value."""
        with self.transaction() as tx:
            return tx.incr_counter(name, by)

    def get_counter(self, name: str) -> int:
        rows = self._query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def counters(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._query("SELECT name, value FROM counters ORDER BY name")}

    def get_kv(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_kv(self, key: str, value: str) -> None:
        with self.transaction() as tx:
            tx.set_kv(key, value, self._clock.now())

    # --- backups -------------------------------------------------------------------

    def backups(self) -> list[Path]:
        """Backup files, newest first."""
        return _backups.list_backups(self.backup_dir)

    def backup_now(self, *, recent: bool = False) -> Path:
        """Take a backup now and prune to ``backup_count``. Blocking: run it in a thread.

        ``recent``: one taken because of a change that matters (kept apart from the periodic
        ones, the newest few only)."""
        if self._conn is None:
            raise StateError("state store is closed", path=str(self.path))
        self._backup_wanted = False
        try:
            path = _backups.write_backup(self.path, self.backup_dir, self._clock.now(), recent=recent)
        except BaseException:
            self._backup_wanted = self._backup_wanted or recent
            raise
        removed = _backups.prune_backups(self.backup_dir, self.backup_count)
        mono = self._clock.monotonic()
        self._last_recent_mono = mono
        if not recent:
            self._last_backup_mono = mono
        log.log(
            logging.DEBUG if recent else logging.INFO,
            "state backup written: %s (%d pruned)",
            path.name,
            len(removed),
        )
        return path

    def recent_backup_due(self) -> bool:
        """A change that matters waits for its backup and the minimum spacing has passed."""
        if not self._backup_wanted:
            return False
        last = self._last_recent_mono
        return last is None or self._clock.monotonic() - last >= self.min_backup_spacing_s

    def backup_due(self) -> bool:
        """True when no backup was taken in the last ``backup_interval_s`` seconds."""
        if self._last_backup_mono is None:
            newest = next(iter(_backups.list_backups(self.backup_dir, recent=False)), None)
            taken = _backups.backup_time(newest) if newest is not None else None
            if taken is None:
                return True
            return (self._clock.now() - taken).total_seconds() >= self.backup_interval_s
        return self._clock.monotonic() - self._last_backup_mono >= self.backup_interval_s

    async def backup_async(self, *, recent: bool = False) -> Path:
        """:meth:`backup_now` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.backup_now, recent=recent)

    async def run_backups(self, *, check_every_s: float = 60.0) -> None:
        """Take a backup whenever one is due, until cancelled. A failed backup is logged and retried.

        Looks every ``min_backup_spacing_s / 2`` (at most ``check_every_s``) for a change
        that matters waiting for its backup."""
        step = max(0.05, min(check_every_s, self.min_backup_spacing_s / 2))
        waited = check_every_s  # check the periodic backup at once
        while True:
            periodic = waited >= check_every_s and self.backup_due()
            if periodic or self.recent_backup_due():
                if waited >= check_every_s:
                    waited = 0.0
                try:
                    await self.backup_async(recent=not periodic)
                except (OSError, sqlite3.Error, StateError):
                    # still due, so the next round retries
                    log.exception("state backup failed; will retry in %.0f s", check_every_s)
            elif waited >= check_every_s:
                waited = 0.0
            await self._clock.sleep(step)
            waited += step


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        is not None
    )


class _Unsound(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
