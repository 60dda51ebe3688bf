"""systemd readiness/watchdog notifications and the heartbeat of a bot process.

:func:`notify` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace), with no extra dependency. Outside systemd it does nothing.

:class:`Heartbeat` is what a running bot calls periodically: it touches the heartbeat
file named by ``$TRADEBOT_HEARTBEAT_FILE`` (set by the ``--auto-restart`` parent, which
kills and restarts a child that stops beating) and sends ``WATCHDOG=1`` to systemd, only
while its ``alive`` check holds: from the moment a bot's stop or escalation began it sends
nothing, so a process that cannot stop itself is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "ENV_HEARTBEAT",
    "Heartbeat",
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval_s",
]

log = logging.getLogger("tradebot.sdnotify")

ENV_HEARTBEAT = "TRADEBOT_HEARTBEAT_FILE"


def _address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()  # abstract namespace socket
    return raw


def notify(message: str, *, socket_path: str | None = None) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1`` ...) to systemd. True if sent."""
    raw = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", raw, exc)
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up is complete (``Type=notify``)."""
    return notify("READY=1")


def watchdog() -> bool:
    """Keep systemd's watchdog (``WatchdogSec=``) from firing."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd a clean shutdown has begun."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + text.replace("\n", " ")[:200])


def watchdog_interval_s() -> float | None:
    """Half of systemd's watchdog timeout for this process (``$WATCHDOG_USEC``), if any."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(0.05, int(usec) / 1e6 / 2)
    except ValueError:
        return None


class Heartbeat:
    """Proof of life of a bot process: heartbeat file plus systemd watchdog.

    ``path`` defaults to ``$TRADEBOT_HEARTBEAT_FILE``; ``interval_s`` defaults to the
    smaller of 5 s and half the systemd watchdog timeout.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        interval_s: float | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        env = os.environ.get(ENV_HEARTBEAT)
        self.alive = alive
        """Beats are sent only while this holds (unset: always): a stopping bot proves nothing."""
        self._silent = False
        self.path: Path | None = Path(path) if path is not None else (Path(env) if env else None)
        wd = watchdog_interval_s()
        self.interval_s = interval_s if interval_s is not None else min(5.0, wd) if wd else 5.0
        self.beats = 0

    @property
    def active(self) -> bool:
        """Whether anyone listens (a heartbeat file or systemd)."""
        return self.path is not None or bool(os.environ.get("NOTIFY_SOCKET"))

    def beat(self) -> bool:
        """One heartbeat (cheap: touches a small file, sends one datagram); False when not alive."""
        if self.alive is not None and not self.alive():
            if not self._silent:
                self._silent = True
                log.warning("heartbeat stopped: the bot is stopping (no more proof of life to the watchdog)")
            return False
        if self.path is not None:
            try:  # replaced whole: a reader never sees the file half written
                part = self.path.with_name(self.path.name + ".part")
                part.write_text(str(os.getpid()))
                os.replace(part, self.path)
            except OSError as exc:
                log.warning("could not write the heartbeat file %s: %s", self.path, exc)
        watchdog()
        self.beats += 1
        return True

    async def run(self) -> None:
        """Beat every ``interval_s`` until cancelled; READY=1 after the first beat."""
        if await asyncio.to_thread(self.beat):
            ready()
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.beat)
