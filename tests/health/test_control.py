"""`tradebot halt` / `resume` / `health` against a running bot process and with none running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tradebot.core.errors import StateError
from tradebot.core.models import TradingState
from tradebot.core.store import StateStore
from tradebot.core.trading_state import TradingStateMachine
from tradebot.services.control import ControlWatcher, apply_command, bot_running, send_command

# A bot process reduced to what these commands talk to: the store, the trading state,
# the health monitor with a real check, and the control watcher.
BOT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tradebot.checks.api_error_rate import ApiErrorRateCheck, ApiErrorRateConfig
    from tradebot.services.control import ControlWatcher
    from tradebot.core.health import HealthMonitor, MonitoringSettings
    from tradebot.core.store import StateStore
    from tradebot.core.trading_state import TradingStateMachine

    async def main() -> None:
        state_dir = Path(sys.argv[1])
        store = StateStore(state_dir)
        trading = TradingStateMachine(store=store)
        trading.restore()
        watcher = ControlWatcher(state_dir, trading, poll_s=0.2)
        watcher.acquire()
        check = ApiErrorRateCheck("api-error-rate", ApiErrorRateConfig(interval_s=0.1))
        monitor = HealthMonitor([check], trading=trading, store=store, settings=MonitoringSettings(round_interval_s=0.1))
        print("ready", trading.state.value, flush=True)
        await asyncio.gather(watcher.run(), monitor.run())

    asyncio.run(main())
    """
)


def tradebot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args], capture_output=True, text=True, timeout=30
    )


def start_bot(tmp_path: Path, state_dir: Path) -> subprocess.Popen[str]:
    script = tmp_path / "bot.py"
    script.write_text(BOT)
    proc = subprocess.Popen([sys.executable, str(script), str(state_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)


def saved_state(state_dir: Path) -> str:
    store = StateStore(state_dir)
    try:
        rec = store.load_trading_state()
        return rec.state.value if rec is not None else "active"
    finally:
        store.close()


def test_halt_and_resume_reach_a_running_bot_within_a_second(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    bot = start_bot(tmp_path, state_dir)
    try:
        assert bot_running(state_dir)
        started = time.monotonic()
        out = tradebot("halt", "--reason", "manual check of the exchange", "--state-dir", str(state_dir))
        halt_s = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        assert "trading HALTED: active -> halted: manual check of the exchange" in out.stdout
        assert saved_state(state_dir) == "halted"

        health = tradebot("health", "--json", "--state-dir", str(state_dir))
        assert health.returncode == 2, health.stderr  # HALTED
        data = json.loads(health.stdout)
        assert data["running"] is True and data["pid"] == bot.pid
        assert data["trading"]["state"] == "halted" and data["trading"]["source"] == "operator:cli"
        assert data["checks"]["api-error-rate"]["status"] == "ok"
        table = tradebot("health", "--state-dir", str(state_dir)).stdout
        assert "HALTED (manual check of the exchange; by operator:cli" in table and "api-error-rate" in table

        out = tradebot("resume", "--state-dir", str(state_dir))
        assert out.returncode == 0 and "halted -> active" in out.stdout
        assert saved_state(state_dir) == "active"
        # the CLI's own start-up dominates its time; the bot answers within its 0.2 s poll
        assert halt_s < 5.0
        started = time.monotonic()
        result = send_command(state_dir, "halt", "timed", timeout_s=2.0)
        assert result.ok and result.via == "bot" and result.state == "halted"
        assert time.monotonic() - started < 1.0
    finally:
        stop(bot)


def test_halt_with_no_bot_running_is_honoured_by_the_next_start(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    bot = start_bot(tmp_path, state_dir)
    stop(bot)  # kill -9: the lock goes with the process
    assert not bot_running(state_dir)
    out = tradebot("halt", "--reason", "weekend", "--state-dir", str(state_dir))
    assert out.returncode == 0, out.stderr
    assert "no bot is running: saved for the next start" in out.stdout
    bot = start_bot(tmp_path, state_dir)
    try:
        data = json.loads(tradebot("health", "--json", "--state-dir", str(state_dir)).stdout)
        assert data["trading"]["state"] == "halted" and data["trading"]["reason"] == "weekend"
    finally:
        stop(bot)


def test_health_with_no_state_yet(tmp_path: Path) -> None:
    out = tradebot("health", "--state-dir", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "no bot state at" in out.stderr and "--state-dir" in out.stderr
    assert not (tmp_path / "nothing").exists()
    assert "halt" in tradebot("halt", "--help").stdout.lower()
    assert tradebot("halt", "--state-dir", str(tmp_path)).returncode == 2  # --reason is required
    blank = tradebot("halt", "--reason", "  ", "--state-dir", str(tmp_path))
    assert blank.returncode == 2 and "say why trading stops" in blank.stderr  # and must say something


@pytest.mark.parametrize("command", [["halt", "--reason", "x"], ["resume"], ["health"]])
def test_a_state_dir_that_is_a_file_is_named_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "state").write_text("not a folder\n")
    config = tmp_path / "tradebot.toml"
    config.write_text('[bot]\nstate_dir = "state"\n')  # (--state-dir itself is checked by the option)
    out = tradebot(*command, "--config", str(config))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and str(tmp_path / "state") in out.stderr
    assert "not a directory" in out.stderr or "File exists" in out.stderr


async def test_watcher_applies_requests_and_refuses_a_second_bot(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    try:
        trading = TradingStateMachine(store=store)
        watcher = ControlWatcher(tmp_path, trading, max_request_age_s=30)
        watcher.acquire()
        try:
            with pytest.raises(StateError, match="another tradebot process is running"):
                ControlWatcher(tmp_path, trading).lock.acquire(wait_s=0.1)
            folder = tmp_path / "control"
            (folder / "1.req.json").write_text(
                json.dumps({"action": "halt", "reason": "r", "source": "s", "sent_at": time.time()})
            )
            (folder / "2.req.json").write_text(
                json.dumps({"action": "resume", "reason": "old", "sent_at": time.time() - 60})
            )
            (folder / "3.req.json").write_text("{not json")
            assert await watcher.poll_once() == 3
            assert trading.state is TradingState.HALTED  # the expired resume was not applied
            answers = [json.loads((folder / f"{i}.res.json").read_text()) for i in (1, 2, 3)]
            assert [a["ok"] for a in answers] == [True, False, False]
            assert "expired" in answers[1]["message"] and "unreadable" in answers[2]["message"]
            assert not list(folder.glob("*.req.json"))
        finally:
            watcher.release()
        result = await apply_command(trading, "pause", "", "x")
        assert not result.ok and "unknown action" in result.message
    finally:
        store.close()


def test_a_bot_that_does_not_answer_times_out_and_the_request_is_withdrawn(tmp_path: Path) -> None:
    from tradebot.services.control import BotLock

    lock = BotLock(tmp_path)
    assert lock.try_acquire()  # "running", but nobody watches the folder
    try:
        with pytest.raises(StateError, match=f"pid {os.getpid()}"):
            send_command(tmp_path, "halt", "x", timeout_s=0.3)
        assert not list((tmp_path / "control").glob("*.req.json"))
    finally:
        lock.release()


def test_halt_and_resume_on_tradebot_run_paper(tmp_path: Path) -> None:
    """The real bot: `tradebot run --paper` on the built-in simulator, then halt/health/resume."""
    import signal

    config = tmp_path / "tradebot.toml"
    config.write_text('[bot]\nstate_dir = "state"\n[monitoring]\nround_interval_s = 0.2\n')
    state_dir = tmp_path / "state"
    bot = subprocess.Popen(
        [sys.executable, "-m", "tradebot", "run", "--paper", "--duration", "40", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (bot_running(state_dir) and (state_dir / "control").exists()):
            assert bot.poll() is None and time.monotonic() < deadline, "bot did not start"
            time.sleep(0.1)
        out = tradebot("halt", "--reason", "drill", "--config", str(config))
        assert out.returncode == 0 and "active -> halted: drill" in out.stdout, out.stdout + out.stderr
        assert "no bot is running" not in out.stdout
        time.sleep(0.5)
        data = json.loads(tradebot("health", "--json", "--config", str(config)).stdout)
        assert data["running"] and data["trading"]["state"] == "halted"
        assert {"api-connectivity", "staleness", "drawdown"} <= set(data["checks"])
        out = tradebot("resume", "--config", str(config))
        assert out.returncode == 0 and "halted -> active" in out.stdout
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.wait(timeout=20)
