"""`tradebot run` as a user runs it: pre-flight report, graceful stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _tradebot(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_dry_run_on_a_good_setup_passes(tmp_path: Path) -> None:
    r = _tradebot(["run", "--paper", "--dry-run"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for item in ("config", "plugins", "state store", "exchange reachable", "clock skew", "credentials valid"):
        assert f"[PASS] {item}" in r.stdout, r.stdout
    assert "ready to trade" in r.stdout


def test_dry_run_on_a_broken_setup_fails_and_says_why(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    # live Kraken exchange pointed at a closed local port, and no credentials
    cfg.write_text(
        '[bot]\nexchange = "kraken"\n\n[exchanges.kraken]\nbase_url = "http://127.0.0.1:9"\nretry_attempts = 1\n'
    )
    r = _tradebot(["run", "--dry-run", "--config", str(cfg)], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[FAIL] exchange reachable" in r.stdout and "127.0.0.1" in r.stdout
    assert "NOT ready" in r.stdout


def test_dry_run_with_invalid_config_reports_it(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text("[risk]\nmax_position = -1\n")
    r = _tradebot(["run", "--dry-run", "--config", str(cfg)], tmp_path)
    assert r.returncode == 1
    assert (
        "[FAIL] config" in r.stdout and "max_position must be > 0 (got -1) @ $.risk.max_position" in r.stdout
    )


@pytest.mark.timeout(90)
def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n\n[http]\nenabled = false\n')
    err_log = tmp_path / "stderr.log"
    with err_log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradebot", "run", "--paper", "--config", str(cfg)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    try:
        deadline = time.monotonic() + 40
        # started (a SIGTERM during start-up ends start-up instead: another test's business)
        while time.monotonic() < deadline and " on paper; state " not in err_log.read_text():
            time.sleep(0.1)
        assert " on paper; state " in err_log.read_text(), err_log.read_text()[-3000:]
        time.sleep(1)  # let it trade a little
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        took = time.monotonic() - sent
        err = err_log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert took < 8, f"graceful stop took {took:.1f}s"
    assert "run finished" in out and "signal SIGTERM" in out
    db = sqlite3.connect(tmp_path / "state" / "tradebot.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    unfinished = db.execute("SELECT COUNT(*) FROM orders WHERE status IN ('pending', 'unknown')").fetchone()[
        0
    ]
    assert unfinished == 0
    assert os.path.exists(tmp_path / "state" / "tradebot.db")


@pytest.mark.timeout(90)
def test_second_bot_on_the_same_state_dir_exits_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n\n[http]\nenabled = false\n')
    first = subprocess.Popen(
        [sys.executable, "-m", "tradebot", "run", "--paper", "--duration", "20", "--config", str(cfg)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (tmp_path / "state" / "tradebot.db").exists():
            time.sleep(0.1)
        started = time.monotonic()
        second = _tradebot(["run", "--paper", "--duration", "5", "--config", str(cfg)], tmp_path, timeout=30)
        took = time.monotonic() - started
        assert second.returncode == 1
        assert "another tradebot process is running with this state directory" in second.stdout
        assert took < 15
        assert first.poll() is None, "the first bot must keep running"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert first.returncode == 0


def test_unreadable_secrets_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\nsecrets_file = "secrets"\n\n[http]\nenabled = false\n')
    r = _tradebot(["run", "--paper", "--duration", "2", "--config", str(cfg)], tmp_path)
    assert r.returncode == 2  # a configuration error: restarting cannot help
    assert "cannot read secrets file" in r.stdout and "Traceback" not in r.stderr


def test_a_live_run_without_api_keys_does_not_start(tmp_path: Path) -> None:
    """No order could be placed: a configuration error (the Kraken plugin declares its keys) before
    anything starts, naming the secrets and where they go, instead of "trading" on."""
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        '[bot]\nexchange = "kraken"\nstate_dir = "state"\n\n[http]\nenabled = false\n\n'
        '[exchanges.kraken]\nbase_url = "http://127.0.0.1:9"\nws_url = "ws://127.0.0.1:9/v2"\nretry_attempts = 1\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    r = subprocess.run(
        [sys.executable, "-m", "tradebot", "run", "--duration", "5", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert r.returncode == 2, r.stdout + r.stderr  # restarting cannot help
    assert "the exchange kraken needs the secret(s) kraken_api_key, kraken_api_secret" in r.stdout
    assert "TRADEBOT_KRAKEN_API_KEY" in r.stdout
    assert "trading state" not in r.stdout and "Traceback" not in r.stderr


def test_a_failed_start_up_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be\n")
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n\n[http]\nenabled = false\n')
    r = _tradebot(["run", "--paper", "--duration", "5", "--config", str(cfg)], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("the bot did not start: start-up failed: cannot create the state directory")
    assert "nothing was traded" in r.stdout and "trading state active" not in r.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--paper", "--infinite", "--duration", "5"], "cannot also stop after --duration"),
        (["--paper", "--dry-run", "--infinite"], "--dry-run only checks the setup"),
    ],
)
def test_options_that_exclude_each_other_are_a_usage_error(
    tmp_path: Path, args: list[str], says: str
) -> None:
    r = _tradebot(["run", *args], tmp_path, timeout=30)
    assert r.returncode == 2 and says in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "tradebot-state").exists()  # refused before anything started
