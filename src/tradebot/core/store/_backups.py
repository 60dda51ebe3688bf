"""Integrity checks, rotating online backups and restore of the state database.

Backups are taken with SQLite's online backup API from a separate read connection, so a
backup never blocks the writer for long (WAL readers do not block writers). Each backup is
written to a temporary file, synced, and renamed into place, so a crash mid-backup never
leaves a half-written file under a backup's name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from tradebot.core.errors import StateError
from tradebot.core.files import private_dir, private_files
from tradebot.core.store._records import RestoreReport

__all__ = [
    "backup_seq",
    "check_database",
    "list_backups",
    "prune_backups",
    "restore_newest_good",
    "write_backup",
]

log = logging.getLogger("tradebot.store")

_STAMP = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(r"^tradebot-(\d{8}T\d{6}\.\d{6}Z)(\.recent)?\.db$")
SEQ_COUNTER = "store.seq"
"""Counts committed transactions; a database behind its newest backup has lost some."""
KEEP_RECENT = 3
"""Backups taken right after a fill or HALT (``*.recent.db``) kept besides the periodic ones."""


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(_STAMP)


def backup_time(path: Path) -> datetime | None:
    """When a backup was taken, read from its name."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    return datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def check_database(path: Path) -> str | None:
    """None when ``path`` is a sound SQLite database; otherwise what is wrong with it."""
    if not path.exists():
        return "file does not exist"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            return "integrity check failed: " + "; ".join(str(r[0]) for r in rows[:3])
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return None
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()


def backup_seq(path: Path) -> int | None:
    """How many transactions the database at ``path`` had committed (None: unreadable)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (SEQ_COUNTER,)).fetchone()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def list_backups(backup_dir: Path, *, recent: bool | None = None) -> list[Path]:
    """Backup files, newest first (``recent``: only those taken after a fill/HALT, or only the others)."""
    if not backup_dir.is_dir():
        return []
    found = []
    for p in backup_dir.iterdir():
        m = _NAME.match(p.name)
        if m is not None and (recent is None or bool(m.group(2)) == recent):
            found.append((m.group(1), p))
    return [p for _, p in sorted(found, key=lambda item: item[0], reverse=True)]


def write_backup(db_path: Path, backup_dir: Path, now: datetime, *, recent: bool = False) -> Path:
    """Copy the live database into ``backup_dir`` atomically; return the new file."""
    private_dir(backup_dir)
    final = backup_dir / f"tradebot-{_stamp(now)}{'.recent' if recent else ''}.db"
    tmp = final.with_name(final.name + ".tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            # A backup must be one self-contained file, not a WAL database.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    private_files(tmp)
    _fsync_file(tmp)
    os.replace(tmp, final)
    _fsync_dir(backup_dir)
    return final


def prune_backups(backup_dir: Path, keep: int, *, keep_recent: int = KEEP_RECENT) -> list[Path]:
    """Delete all but the newest ``keep`` periodic and ``keep_recent`` recent backups (and
    stray temp files); return the deleted."""
    removed: list[Path] = []
    old_ones = (
        list_backups(backup_dir, recent=False)[keep:] + list_backups(backup_dir, recent=True)[keep_recent:]
    )
    for old in old_ones:
        old.unlink(missing_ok=True)
        removed.append(old)
    for stray in backup_dir.glob("tradebot-*.db.tmp"):
        stray.unlink(missing_ok=True)
    return removed


def _move_aside(db_path: Path, now: datetime) -> Path:
    """Rename the database and its WAL/SHM files to ``*.corrupt-<ts>``; return the new db name."""
    suffix = f".corrupt-{_stamp(now)}"
    target = db_path.with_name(db_path.name + suffix)
    for extra in ("", "-wal", "-shm"):
        p = db_path.with_name(db_path.name + extra)
        if p.exists():
            os.replace(p, p.with_name(db_path.name + suffix + extra))
    return target


def restore_newest_good(db_path: Path, backup_dir: Path, now: datetime, problem: str) -> RestoreReport:
    """Move the bad database aside and put the newest sound backup in its place.

    Raises :class:`StateError` naming every backup tried when none is sound.
    """
    corrupt = _move_aside(db_path, now) if db_path.exists() else db_path
    tried: list[str] = []
    for backup in list_backups(backup_dir):
        issue = check_database(backup)
        if issue is not None:
            tried.append(f"{backup.name}: {issue}")
            log.error("backup %s is not usable: %s", backup.name, issue)
            continue
        tmp = db_path.with_name(db_path.name + ".restore-tmp")
        shutil.copyfile(backup, tmp)
        _fsync_file(tmp)
        copied = check_database(tmp)  # the copy is verified, not only the original
        if copied is not None:
            tmp.unlink(missing_ok=True)
            tried.append(f"{backup.name}: its copy failed the check: {copied}")
            log.error("copy of backup %s is not usable: %s", backup.name, copied)
            continue
        os.replace(tmp, db_path)
        _fsync_dir(db_path.parent)
        taken = backup_time(backup) or now
        report = RestoreReport(
            corrupt_path=corrupt,
            backup_path=backup,
            backup_age_s=max(0.0, (now - taken).total_seconds()),
            problem=problem,
        )
        log.critical("%s", report.message)
        return report
    detail = "; ".join(tried) if tried else f"no backups in {backup_dir}"
    raise StateError(
        f"state database {db_path} is unusable ({problem}) and no good backup exists ({detail}). "
        f"The damaged file was kept as {corrupt.name}. To go on, put a good backup in its place, "
        "or start with an empty state: the bot then rebuilds its journal from the exchange and "
        "starts HALTED until you check it (`tradebot state check`) and `tradebot resume`.",
        path=str(db_path),
    )
