"""The example third-party plugin, installed like a user would, is listed, enabled and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "tradebot-hello-check"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example package into its own folder (not into the test environment)."""
    target = tmp_path_factory.mktemp("hello-site")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr
    return target


def _tradebot(args: list[str], site: Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("TRADEBOT_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "tradebot", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def test_example_is_listed_enabled_and_runs(installed_example: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        "# my config\n[bot]\nstate_dir = \"state\"\n\n[plugins]\n"
        "enabled = [\"kraken\", \"paper\", \"sma-crossover\", \"rsi-reversion\", \"maintain\", \"log\"]\n\n"
        "[http]\nenabled = false\n\n[risk]\naccept_unprotected = true\n"
    )
    listed = _tradebot(["plugins", "list", "--all", "--json", "--config", str(cfg)], installed_example, tmp_path)
    assert listed.returncode == 0, listed.stderr
    info = {p["name"]: p for p in json.loads(listed.stdout)}["hello-check"]
    assert info == {
        "name": "hello-check", "category": "check", "distribution": "tradebot-hello-check",
        "version": "0.1.0", "enabled": False, "state": "disabled", "error": None,
        "hooks": ["tradebot_register_checks"],
    }

    enabled = _tradebot(["plugins", "enable", "hello-check", "--config", str(cfg)], installed_example, tmp_path)
    assert enabled.returncode == 0, enabled.stderr
    assert cfg.read_text().startswith("# my config\n")
    listed = _tradebot(["plugins", "list", "--json", "--config", str(cfg)], installed_example, tmp_path)
    assert {p["name"]: p["enabled"] for p in json.loads(listed.stdout)}["hello-check"] is True

    with cfg.open("a") as f:
        f.write("\n[checks.hello]\nmin_ticks = 3\ninterval_s = 0.5\n")
    ran = _tradebot(["run", "--paper", "--duration", "4", "--config", str(cfg)], installed_example, tmp_path, timeout=90)
    assert ran.returncode == 0, ran.stderr[-3000:]
    import sqlite3

    rows = sqlite3.connect(tmp_path / "state" / "tradebot.db").execute(
        "SELECT status, message FROM health WHERE check_name = 'hello'"
    ).fetchall()
    assert rows, "the hello check never reported"
    assert any(status == "ok" and "hello, market" in message for status, message in rows), rows
