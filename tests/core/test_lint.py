"""The code stays linted and formatted: `ruff check` and `ruff format --check` with the rule set
of pyproject.toml find nothing in the package, the tests, the benchmarks and the examples, and
they do report a finding when there is one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["src", "tests", "bench", "examples"]


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``ruff`` (from the dev extra) with the project's configuration; no cache written."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


@pytest.mark.timeout(120)
def test_ruff_check_finds_nothing() -> None:
    done = ruff("check", *CHECKED)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.timeout(120)
def test_the_code_is_formatted() -> None:
    done = ruff("format", "--check", *CHECKED)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_a_finding_and_unformatted_code_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nvalues = [ 1,2 ]\n")
    check = ruff("check", str(bad), cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "F401" in check.stdout  # the unused import
    fmt = ruff("format", "--check", str(bad), cwd=tmp_path)
    assert fmt.returncode == 1, fmt.stdout + fmt.stderr
    assert "bad.py" in fmt.stdout
