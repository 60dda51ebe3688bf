"""Hardening findings about the CLI, each through the real ``tradebot`` command.

- ``halt``/``resume``/``health`` never create state: an unknown state dir is exit 2,
  naming where they looked and how to point them elsewhere.
- ``tradebot health`` exits 0 ok, 1 degraded, 2 critical or HALTED.
- ``plugins disable X`` writes ``[plugins] disabled`` and leaves ``enabled`` alone, so a
  plugin installed later still loads by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import make_dist
from tradebot.core.models import utc_now
from tradebot.core.store import StateStore


def tb(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=os.environ.copy(),
    )


@pytest.mark.parametrize(
    "command", [["halt", "--reason", "test"], ["resume"], ["health"], ["health", "--json"]]
)
def test_commands_in_a_folder_without_state_fail_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    before = sorted(tmp_path.iterdir())
    r = tb(*command, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "HALTED" not in r.stdout
    assert str((tmp_path / "tradebot-state").resolve()) in r.stderr  # where it looked
    assert "no config file was found" in r.stderr
    assert "--state-dir" in r.stderr and "--config" in r.stderr  # how to point it
    assert sorted(tmp_path.iterdir()) == before  # nothing created


def test_state_dir_from_a_config_is_named_with_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[bot]\nstate_dir = "elsewhere"\n')
    r = tb("halt", "--reason", "x", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"[bot] state_dir of {cfg}" in r.stderr and "elsewhere" in r.stderr
    assert not (tmp_path / "elsewhere").exists()
    r = tb("resume", "--state-dir", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 2 and "given with --state-dir" in r.stderr
    assert not (tmp_path / "nope").exists()


def test_health_exit_codes_for_monitoring(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = StateStore(state)
    store.append_health("staleness", "ok", "fresh", "{}", utc_now())
    store.close()
    r = tb("health", "--state-dir", str(state), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    store = StateStore(state)
    store.append_health("resources", "degraded", "loop lag", "{}", utc_now())
    store.close()
    assert tb("health", "--state-dir", str(state), cwd=tmp_path).returncode == 1

    store = StateStore(state)
    store.append_health("resources", "critical", "loop lag", "{}", utc_now())
    store.close()
    assert tb("health", "--json", "--state-dir", str(state), cwd=tmp_path).returncode == 2

    store = StateStore(state)
    store.append_health("resources", "ok", "fine", "{}", utc_now())
    store.close()
    assert tb("health", "--state-dir", str(state), cwd=tmp_path).returncode == 0
    halted = tb("halt", "--reason", "maintenance", "--state-dir", str(state), cwd=tmp_path)
    assert halted.returncode == 0, halted.stdout + halted.stderr
    r = tb("health", "--state-dir", str(state), cwd=tmp_path)
    assert r.returncode == 2 and "HALTED" in r.stdout
    assert tb("resume", "--state-dir", str(state), cwd=tmp_path).returncode == 0
    assert tb("health", "--state-dir", str(state), cwd=tmp_path).returncode == 0


def test_plugins_disable_writes_disabled_and_later_plugins_still_load(
    tmp_path: Path, extra_site: Path
) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text("# my bot\n")
    r = tb("plugins", "disable", "volatility", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    plugins = tomllib.loads(cfg.read_text())["plugins"]
    assert plugins == {"disabled": ["volatility"]}  # no frozen list of what is installed today
    # a plugin installed afterwards is loaded by default; the disabled one is not
    make_dist(
        extra_site,
        "tbtest-later",
        {"tbtest_later": "from tradebot.core.hookspecs import hookimpl\n"},
        {"tbtest-later": "tbtest_later"},
    )
    listed = tb("plugins", "list", "--json", "--all", "--config", str(cfg), cwd=tmp_path)
    import json

    enabled = {p["name"]: p["enabled"] for p in json.loads(listed.stdout)}
    assert enabled["tbtest-later"] is True and enabled["volatility"] is False and enabled["drawdown"] is True
    r = tb("plugins", "enable", "volatility", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "disabled" not in tomllib.loads(cfg.read_text()).get("plugins", {})
