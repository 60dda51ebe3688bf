"""Private files: the bot's state, backups and logs are readable by its user only.

The state folder is made ``0700`` and every file the bot keeps there (database, WAL,
backups, logs) ``0600``, whatever the process's umask: they hold balances, orders and
positions. ``tradebot run`` also sets the umask to ``077`` so that nothing it creates is
readable by others.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_files", "restrict_umask"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def _owner_only(path: Path, most: int) -> None:
    """Take the group's and others' permissions away (the owner's are left as they are)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~most:
        os.chmod(path, mode & most)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; it is ``0700`` at most."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _owner_only(path, DIR_MODE)
    return path


def private_files(*paths: Path) -> None:
    """Make each existing file ``0600`` at most (a missing one is skipped)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            _owner_only(path, FILE_MODE)


def restrict_umask() -> int:
    """Files and folders this process creates from now on are its user's only; returns the old umask."""
    return os.umask(0o077)


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard limit, so that no burst of connections
    (to the HTTP server, say) leaves trading without file descriptors; returns
    (before, after), or None where the limit cannot be read or changed."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    target = hard
    if target == resource.RLIM_INFINITY:
        target = 1 << 20  # the kernel's usual ceiling for one process
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft, soft
    for value in (target, 1 << 16):
        if soft != resource.RLIM_INFINITY and value <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
        except (OSError, ValueError):
            continue
        return soft, value
    return None
