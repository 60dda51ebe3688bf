"""Trade history and performance from the state store, for ``tradebot trades`` and ``tradebot report``.

Everything is read from the bot's SQLite state (read-only; a running bot keeps it current):
the fills, the order journal (which strategy placed each order) and the start time of each
run. Fills are replayed per strategy and pair in the order they were recorded, each such
*book* with its own average entry price, so two strategies trading one pair each see their
own round trips:

- a fill that reduces the book's position realises ``closed volume * (price - average
  entry)`` (the opposite sign for a short): the *gross* PnL. Fees are kept apart; *net* PnL
  is gross PnL minus every fee paid in the book;
- a *round trip* runs from flat back to flat (or through it). It is *won* when its gross
  PnL minus the fees of all its fills is above zero; the win rate is won / closed round
  trips;
- *max drawdown* is the largest fall of the book's cumulative net PnL from an earlier peak;
- *exposure* is the time the book held a position.

A round trip that spans runs counts in the run where it closed; exposure is split by time.
Orders the bot places itself (HALT flattening) are the strategy ``flatten``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from tradebot.core.errors import StateError

__all__ = [
    "BookStats",
    "Run",
    "TradeRecord",
    "parse_since",
    "read_trades",
    "record_run_start",
    "report",
    "runs",
    "summarize",
]

ZERO = Decimal(0)
RUN_KEY = "run.{n}.started"
_RUN_RE = re.compile(r"^run\.(\d+)\.started$")


@attrs.frozen
class TradeRecord:
    """One fill with what it did to its strategy's book."""

    time: datetime
    pair: str
    side: str
    volume: Decimal
    price: Decimal
    fee: Decimal
    strategy: str
    client_order_id: str | None
    trade_id: str
    realized_pnl: Decimal | None
    """Gross PnL this fill realised by reducing the book's position (None: it only opened)."""
    round_trip_pnl: Decimal | None
    """Net PnL (gross minus every fee of its fills) of the round trip this fill closed, if any."""
    position_after: Decimal
    exposure_s: float
    """Seconds the book held a position between the previous fill of the book and this one."""

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "pair": self.pair,
            "side": self.side,
            "volume": str(self.volume),
            "price": str(self.price),
            "fee": str(self.fee),
            "strategy": self.strategy,
            "realized_pnl": None if self.realized_pnl is None else str(self.realized_pnl),
            "round_trip_pnl": None if self.round_trip_pnl is None else str(self.round_trip_pnl),
            "position_after": str(self.position_after),
            "client_order_id": self.client_order_id,
            "trade_id": self.trade_id,
        }


@attrs.frozen
class Run:
    """One start of the bot on this state: its number and when it started."""

    number: int
    started: datetime
    ended: datetime | None
    """When the next run started (None: the latest run)."""


@attrs.frozen
class BookStats:
    """Figures of one strategy on one pair over a stretch of time."""

    strategy: str
    pair: str
    trades: int
    round_trips: int
    wins: int
    pnl_gross: Decimal
    fees: Decimal
    max_drawdown: Decimal
    exposure_s: float

    @property
    def pnl_net(self) -> Decimal:
        return self.pnl_gross - self.fees

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.round_trips if self.round_trips else None

    def as_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "pair": self.pair,
            "trades": self.trades,
            "round_trips": self.round_trips,
            "wins": self.wins,
            "win_rate": self.win_rate,
            "pnl_gross": str(self.pnl_gross),
            "pnl_net": str(self.pnl_net),
            "fees": str(self.fees),
            "max_drawdown": str(self.max_drawdown),
            "exposure_s": round(self.exposure_s, 3),
        }


# --- reading the state -------------------------------------------------------------------


def _connect(state_dir: Path) -> sqlite3.Connection:
    from tradebot.core.store import DB_NAME

    path = state_dir / DB_NAME
    if not path.is_file():
        raise StateError(
            f"no bot state at {path} (has the bot run with this state directory?)", path=str(path)
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT 1 FROM fills LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the bot state at {path}: {exc}", path=str(path)) from None
    return conn


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def record_run_start(store: Any, time: datetime) -> None:
    """Remember when this run started (``store`` is the bot's :class:`StateStore`)."""
    n = store.get_counter("starts")
    store.set_kv(RUN_KEY.format(n=n), time.isoformat())


def runs(state_dir: Path) -> list[Run]:
    """Every recorded run, oldest first."""
    conn = _connect(state_dir)
    try:
        rows = conn.execute("SELECT key, value FROM kv WHERE key LIKE 'run.%.started'").fetchall()
    finally:
        conn.close()
    starts = sorted(
        (int(m.group(1)), _time(row["value"])) for row in rows if (m := _RUN_RE.match(row["key"])) is not None
    )
    return [
        Run(n, started, starts[i + 1][1] if i + 1 < len(starts) else None)
        for i, (n, started) in enumerate(starts)
    ]


def read_trades(state_dir: Path) -> list[TradeRecord]:
    """Every fill, oldest first, replayed into its strategy's book."""
    conn = _connect(state_dir)
    try:
        rows = conn.execute(
            "SELECT f.trade_id, f.client_order_id, f.pair, f.side, f.price, f.volume, f.fee, f.time,"
            " COALESCE(o.strategy, '') AS strategy FROM fills f"
            " LEFT JOIN orders o ON o.client_order_id = f.client_order_id ORDER BY f.seq"
        ).fetchall()
    finally:
        conn.close()
    return replay(
        (
            _time(r["time"]),
            r["pair"],
            r["side"],
            Decimal(r["volume"]),
            Decimal(r["price"]),
            Decimal(r["fee"]),
            r["strategy"] or "-",
            r["client_order_id"],
            r["trade_id"],
        )
        for r in rows
    )


@attrs.define
class _Book:
    volume: Decimal = ZERO
    avg: Decimal = ZERO
    trip_pnl: Decimal = ZERO  # gross PnL minus fees of the round trip under way
    last_time: datetime | None = None


def replay(
    fills: Iterable[tuple[datetime, str, str, Decimal, Decimal, Decimal, str, str | None, str]],
) -> list[TradeRecord]:
    """(time, pair, side, volume, price, fee, strategy, client order id, trade id) in order -> records."""
    books: dict[tuple[str, str], _Book] = {}
    out: list[TradeRecord] = []
    for time, pair, side, volume, price, fee, strategy, cid, trade_id in fills:
        book = books.setdefault((strategy, pair), _Book())
        exposure = (time - book.last_time).total_seconds() if book.volume != 0 and book.last_time else 0.0
        direction = 1 if side == "buy" else -1
        v = book.volume
        realized: Decimal | None = None
        closed_trip: Decimal | None = None
        book.trip_pnl -= fee
        if v == 0 or (v > 0) == (direction > 0):
            new_abs = abs(v) + volume
            book.avg = (abs(v) * book.avg + volume * price) / new_abs
            book.volume = v + direction * volume
        else:
            close_q = min(volume, abs(v))
            realized = close_q * (price - book.avg) * (1 if v > 0 else -1)
            book.trip_pnl += realized
            rest = volume - close_q
            book.volume = v + direction * volume
            if rest > 0 or book.volume == 0:
                closed_trip = book.trip_pnl
                book.trip_pnl = ZERO
                if rest > 0:  # through flat: the rest opens the next round trip, its fee share with it
                    share = fee * rest / volume
                    closed_trip += share
                    book.trip_pnl = -share
                    book.avg = price
                else:
                    book.avg = ZERO
        book.last_time = time
        out.append(
            TradeRecord(
                time=time,
                pair=pair,
                side=side,
                volume=volume,
                price=price,
                fee=fee,
                strategy=strategy,
                client_order_id=cid,
                trade_id=trade_id,
                realized_pnl=realized,
                round_trip_pnl=closed_trip,
                position_after=book.volume,
                exposure_s=max(0.0, exposure),
            )
        )
    return out


# --- figures -----------------------------------------------------------------------------------


def summarize(
    records: Sequence[TradeRecord],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> list[BookStats]:
    """Figures per (strategy, pair) of the fills between ``start`` (inclusive) and ``end``.

    ``records`` is the whole replay (:func:`read_trades`), so books carry over from before
    ``start``. Exposure of a position still open at the end counts until ``end`` (or ``now``).
    """
    now = now or datetime.now(UTC)
    horizon = end or now
    per_book: dict[tuple[str, str], list[TradeRecord]] = {}
    for rec in records:
        per_book.setdefault((rec.strategy, rec.pair), []).append(rec)
    stats: list[BookStats] = []
    for (strategy, pair), recs in sorted(per_book.items()):
        trades = wins = trips = 0
        gross = fees = ZERO
        exposure = 0.0
        cumulative = peak = ZERO
        drawdown = ZERO
        previous: TradeRecord | None = None
        for rec in recs:
            if previous is not None and previous.position_after != 0:
                exposure += _overlap(previous.time, rec.time, start, horizon)
            previous = rec
            if (start is not None and rec.time < start) or (rec.time >= horizon and end is not None):
                continue
            trades += 1
            fees += rec.fee
            gross += rec.realized_pnl or ZERO
            cumulative += (rec.realized_pnl or ZERO) - rec.fee
            peak = max(peak, cumulative)
            drawdown = max(drawdown, peak - cumulative)
            if rec.round_trip_pnl is not None:
                trips += 1
                wins += rec.round_trip_pnl > 0
        if previous is not None and previous.position_after != 0:
            exposure += _overlap(previous.time, horizon, start, horizon)
        if trades or exposure > 0:
            stats.append(BookStats(strategy, pair, trades, trips, wins, gross, fees, drawdown, exposure))
    return stats


def _overlap(a: datetime, b: datetime, start: datetime | None, end: datetime) -> float:
    lo = max(a, start) if start is not None else a
    hi = min(b, end)
    return max(0.0, (hi - lo).total_seconds())


def report(state_dir: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Figures since the state was created and per run, as JSON-ready data."""
    now = now or datetime.now(UTC)
    records = read_trades(state_dir)
    out: dict[str, Any] = {
        "state_dir": str(state_dir),
        "lifetime": [s.as_json() for s in summarize(records, now=now)],
        "runs": [],
    }
    for run in runs(state_dir):
        rows = summarize(records, start=run.started, end=run.ended, now=now)
        out["runs"].append(
            {
                "run": run.number,
                "started": run.started.isoformat(),
                "ended": run.ended.isoformat() if run.ended else None,
                "books": [s.as_json() for s in rows],
            }
        )
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or date-time (UTC unless it says otherwise), or an age (``90m``, ``24h``, ``7d``)."""
    match = _DURATION.match(text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        return _time(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an ISO date or date-time (2026-01-31, 2026-01-31T12:00) or an age (90m, 24h, 7d)"
        ) from None
