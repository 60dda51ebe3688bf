"""Durable bot state in SQLite: order journal, fills, positions, PnL, trading state, health.

See :class:`StateStore`. Values read and written are in :mod:`._records`.
"""

from tradebot.core.store._records import (
    EquitySnapshot,
    HealthRecord,
    JournalEntry,
    Position,
    PositionClosed,
    RestoreReport,
    TradingStateRecord,
)
from tradebot.core.store._schema import MIGRATIONS, SCHEMA_VERSION
from tradebot.core.store._store import DB_NAME, StateStore, StoreTx

__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "EquitySnapshot",
    "HealthRecord",
    "JournalEntry",
    "Position",
    "PositionClosed",
    "RestoreReport",
    "StateStore",
    "StoreTx",
    "TradingStateRecord",
]
