"""Strictly increasing nonces per API key, across concurrent calls and restarts.

Each nonce is ``max(now in microseconds, previous + 1)``. To survive restarts without a
disk write per request, the source *reserves* a block: before handing out a nonce above
the persisted high-water mark it writes ``nonce + reserve`` to the state file (atomically:
temp file, fsync, rename). A restarted process starts above that mark, so it never
reuses a nonce even if the machine clock went backwards, and writes about once per
``reserve_us`` microseconds of nonces.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tradebot.api import StateError

__all__ = ["NonceSource"]


def _now_us() -> int:
    return time.time_ns() // 1000


class NonceSource:
    """Hands out nonces; thread- and task-safe. ``path`` None keeps no state on disk."""

    def __init__(
        self,
        path: Path | None,
        *,
        reserve_us: int = 10_000_000,
        time_us: Callable[[], int] = _now_us,
    ) -> None:
        if reserve_us <= 0:
            raise ValueError(f"reserve_us must be > 0 (got {reserve_us!r})")
        self.path = path
        self._reserve = reserve_us
        self._time_us = time_us
        self._lock = threading.Lock()
        self._persisted = self._load() if path is not None else 0
        self._last = self._persisted  # never hand out anything <= what a previous run might have used
        self.writes = 0

    def _load(self) -> int:
        assert self.path is not None
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StateError(
                f"cannot read the nonce file {self.path}: {exc.strerror}", path=str(self.path)
            ) from exc
        if not text.isdigit():
            raise StateError(
                f"the nonce file {self.path} is corrupt; delete it only if no other process uses this API key",
                path=str(self.path),
            )
        return int(text)

    def _persist(self, value: int) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
        self.writes += 1

    @property
    def last(self) -> int:
        """The last nonce handed out (or the restored high-water mark)."""
        return self._last

    def next(self) -> int:
        """The next nonce: above every earlier one, of this run and of earlier runs."""
        with self._lock:
            nonce = max(self._time_us(), self._last + 1)
            if self.path is not None and nonce > self._persisted:
                try:
                    self._persist(nonce + self._reserve)
                except OSError as exc:
                    raise StateError(
                        f"cannot write the nonce file {self.path}: {exc.strerror}", path=str(self.path)
                    ) from exc
                self._persisted = nonce + self._reserve
            self._last = nonce
            return nonce
