"""The database schema as an ordered list of migrations.

``PRAGMA user_version`` holds how many migrations a database has had. Opening a store
applies the missing ones in order, each in its own transaction together with the version
bump, so a crash mid-migration leaves the previous version intact. Migrations are only
ever appended; an applied one is never edited.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration"]

Migration = tuple[str, ...]
"""The SQL statements of one migration, run in one transaction."""

_V1: Migration = (
    # The order journal: one row per client order id, written before anything is sent.
    """CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY,
        pair TEXT NOT NULL,
        side TEXT NOT NULL,
        order_type TEXT NOT NULL,
        volume TEXT NOT NULL,
        price TEXT,
        status TEXT NOT NULL,
        exchange_order_id TEXT,
        filled_volume TEXT NOT NULL DEFAULT '0',
        avg_fill_price TEXT,
        fee TEXT NOT NULL DEFAULT '0',
        strategy TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        sent_at TEXT
    )""",
    "CREATE INDEX orders_status ON orders(status)",
    # Fills are keyed by trade id so applying the same fill twice is a no-op.
    """CREATE TABLE fills (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_id TEXT NOT NULL UNIQUE,
        client_order_id TEXT,
        exchange_order_id TEXT,
        pair TEXT NOT NULL,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        volume TEXT NOT NULL,
        fee TEXT NOT NULL,
        time TEXT NOT NULL
    )""",
    """CREATE TABLE positions (
        pair TEXT PRIMARY KEY,
        volume TEXT NOT NULL,
        avg_price TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    # One row per exposure-reducing fill: what consecutive-loss checks read.
    """CREATE TABLE realized_pnl (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_id TEXT NOT NULL,
        pair TEXT NOT NULL,
        volume TEXT NOT NULL,
        entry_price TEXT NOT NULL,
        exit_price TEXT NOT NULL,
        pnl TEXT NOT NULL,
        fee TEXT NOT NULL,
        position_after TEXT NOT NULL,
        fully_closed INTEGER NOT NULL,
        time TEXT NOT NULL
    )""",
    """CREATE TABLE equity (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        equity TEXT NOT NULL,
        cash TEXT NOT NULL,
        positions_value TEXT NOT NULL
    )""",
    """CREATE TABLE trading_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        time TEXT NOT NULL
    )""",
    """CREATE TABLE health (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        check_name TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        time TEXT NOT NULL
    )""",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)",
)

MIGRATIONS: list[Migration] = [_V1]
"""Applied in order; migration ``i`` brings a database from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
