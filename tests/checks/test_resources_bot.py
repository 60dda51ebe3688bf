"""The resources check in the running bot: host-wide load only degrades, the bot's own
memory headroom HALTs (through the real ``tradebot run`` and ``tradebot health``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def tb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args], capture_output=True, text=True, cwd=cwd, timeout=90
    )


FAST = (
    "[checks.resources]\ninterval_s = 0.2\nsustained_s = 0.5\nhost_cpu_warn_pct = 0\nhost_mem_warn_pct = 0\n"
)


@pytest.mark.timeout(120)
def test_host_wide_load_over_every_limit_degrades_but_never_halts(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n[http]\nenabled = false\n' + FAST)
    run = tb("run", "--paper", "--duration", "4", "--config", str(cfg), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trading state active" in run.stdout
    health = tb("health", "--json", "--config", str(cfg), cwd=tmp_path)
    data = json.loads(health.stdout)
    assert data["checks"]["resources"]["status"] == "degraded", data["checks"]["resources"]
    assert "host_cpu_pct" in data["checks"]["resources"]["message"]


@pytest.mark.timeout(120)
def test_the_bots_own_memory_headroom_halts(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    # more headroom than any host has: the bot's memory is about to run out, as far as it can tell
    cfg.write_text(
        '[bot]\nstate_dir = "state"\n[http]\nenabled = false\n' + FAST + "mem_headroom_critical_mb = 1e12\n"
    )
    run = tb("run", "--paper", "--duration", "4", "--config", str(cfg), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trading state halted" in run.stdout and "mem_headroom_mb" in run.stdout
    assert tb("health", "--config", str(cfg), cwd=tmp_path).returncode == 2
