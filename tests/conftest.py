"""Shared fixtures for the whole suite."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradebot.core.loop import loop_factory, loop_name


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test runs on the event loop the bot runs on (uvloop where it is installed)."""
    import asyncio

    return {loop_name(): loop_factory() or asyncio.new_event_loop}


def make_dist(
    root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "0.1"
) -> Path:
    """Install a tiny distribution into ``root`` by hand: its modules plus a dist-info with
    entry points of group ``tradebot`` (what pip would write)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    eps = "[tradebot]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps, encoding="utf-8")
    return root


@pytest.fixture
def extra_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path (and PYTHONPATH for subprocesses) to install test plugins into."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    )
    yield site
    for mod in [m for m in sys.modules if m.startswith("tbtest_")]:
        del sys.modules[mod]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's plugin or config overrides, or writes outside tmp_path."""
    for var in ("TRADEBOT_PLUGINS", "TRADEBOT_CONFIG", "TRADEBOT_SECRETS_FILE", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
