"""The package's shape is enforced: the import-linter contracts in pyproject.toml hold (the core
imports no plugin, built-in plugins import only tradebot.api, the layers), a broken contract
fails, and the core stays a small part of the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "tradebot"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

CORE_SHARE_LIMIT = 0.35
"""The core's share of the package's lines; README.md's layout section states the figure."""


def lint_imports(src: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts (or only ``contracts``, by id), on the
    ``tradebot`` package found in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    only = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache", *only],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(150)
def test_the_import_contracts_hold() -> None:
    done = lint_imports(ROOT / "src")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in done.stdout


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package with ``line`` added to ``module`` (a path under tradebot/)."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "tradebot", ignore=shutil.ignore_patterns("__pycache__"))
    target = src / "tradebot" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return src


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/bus.py", "import tradebot.checks.staleness", "core-imports-no-plugin"),
        ("core/executor.py", "from tradebot.services import metrics", "core-imports-no-plugin"),
        ("checks/staleness.py", "from tradebot.core.bus import EventBus", "plugins-import-only-the-api"),
        (
            "exchanges/kraken/ws.py",
            "from tradebot.resilience.turns import Turns",
            "plugins-import-only-the-api",
        ),
        (
            "app/bot.py",
            "from tradebot.exchanges.kraken.config import KrakenConfig",
            "application-imports-no-plugin",
        ),
        ("services/control.py", "from tradebot.app import bot", "layers"),
        (
            "exchanges/paper.py",
            "from tradebot.exchanges.kraken.fees import KRAKEN_FEES",
            "plugins-are-independent",
        ),
    ],
)
def test_a_broken_contract_fails(tmp_path: Path, module: str, line: str, contract: str) -> None:
    src = _copy_with(tmp_path, module, line)
    done = lint_imports(src, contract)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 0 kept, 1 broken." in done.stdout
    assert line.split()[1] in done.stdout  # the report names the offending import


def _lines(folder: Path) -> int:
    return sum(len(path.read_text().splitlines()) for path in folder.rglob("*.py"))


def test_the_core_is_under_35_percent_of_the_package() -> None:
    core, package = _lines(PACKAGE / "core"), _lines(PACKAGE)
    assert core / package < CORE_SHARE_LIMIT, f"core/ holds {core} of {package} lines ({core / package:.1%})"
