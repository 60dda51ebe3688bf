"""The bot's event loop: uvloop where installed, asyncio's own on request, a bad choice named."""

from __future__ import annotations

import asyncio

import pytest

from tradebot.core import loop
from tradebot.core.errors import ConfigError


def test_default_is_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop.ENV_EVENT_LOOP, raising=False)
    uvloop = pytest.importorskip("uvloop")
    assert loop.loop_name() == "uvloop"
    assert loop.loop_factory() is uvloop.new_event_loop

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loop.run(which()).startswith("uvloop")


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV_EVENT_LOOP, " AsyncIO ")
    assert loop.loop_name() == "asyncio" and loop.loop_factory() is None

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loop.run(which()).startswith("asyncio")


def test_a_bad_choice_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV_EVENT_LOOP, "trio")
    with pytest.raises(ConfigError, match="TRADEBOT_EVENT_LOOP must be 'uvloop', 'asyncio' or empty"):
        loop.loop_name()

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    coro = never()
    with pytest.raises(ConfigError):
        loop.run(coro)
    assert coro.cr_frame is None  # closed, not left to warn that it was never awaited


def test_uvloop_asked_for_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV_EVENT_LOOP, "uvloop")
    monkeypatch.setattr(loop, "_uvloop", lambda: None)
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop.loop_name()
    monkeypatch.delenv(loop.ENV_EVENT_LOOP)
    assert loop.loop_name() == "asyncio"  # by default it falls back quietly


@pytest.mark.parametrize("args", [["sim"], ["drill", "--scenario", "dns"], ["run", "--paper", "--dry-run"]])
def test_commands_name_a_bad_choice_and_exit_2(args: list[str]) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, loop.ENV_EVENT_LOOP: "trio"}
    proc = subprocess.run(
        [sys.executable, "-m", "tradebot", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "TRADEBOT_EVENT_LOOP must be" in proc.stderr and "Traceback" not in proc.stderr
