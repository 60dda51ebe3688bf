"""sd_notify datagrams (path and abstract sockets) and the heartbeat."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tradebot.core import sdnotify


def test_notify_to_abstract_and_path_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"tradebot-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(b"\0" + name.encode())
        srv.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert srv.recv(100) == b"READY=1"
        assert sdnotify.stopping()
        assert srv.recv(100) == b"STOPPING=1"
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(str(path))
        srv.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.watchdog()
        assert srv.recv(100) == b"WATCHDOG=1"


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready()
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    assert not sdnotify.watchdog()  # a broken socket is logged, never raised


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval_s() is None


async def test_heartbeat_touches_file_and_pings_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    name = f"tradebot-hb-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(b"\0" + name.encode())
        srv.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.setenv(sdnotify.ENV_HEARTBEAT, str(tmp_path / "hb"))
        beat = sdnotify.Heartbeat(interval_s=0.02)
        assert beat.active
        task = asyncio.create_task(beat.run())
        await asyncio.sleep(0.15)
        task.cancel()
        messages = []
        while True:
            try:
                messages.append(srv.recv(100))
            except BlockingIOError:
                break
    assert (tmp_path / "hb").read_text() == str(os.getpid())
    assert beat.beats >= 3
    assert b"READY=1" in messages and messages.count(b"WATCHDOG=1") >= 3
