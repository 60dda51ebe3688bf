"""The example plugin package, installed like a user would, has one plugin of every kind, written
against ``tradebot.api`` only: every one is listed, configured, checked, and used by a real run."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "tradebot-hello"

KINDS = {
    "hello-market": ("exchange", ["tradebot_register_exchanges"]),
    "hello-momentum": ("strategy", ["tradebot_register_strategies"]),
    "hello-check": ("check", ["tradebot_register_checks"]),
    "hello-pause": ("recovery", ["tradebot_register_recovery_actions"]),
    "hello-hold": ("policy", ["tradebot_register_position_policies"]),
    "hello-file": ("notifier", ["tradebot_register_notifiers"]),
    "hello-audit": (
        "other",
        [
            "tradebot_configure",
            "tradebot_fill_report",
            "tradebot_plugin_settings",
            "tradebot_shutdown",
            "tradebot_startup",
            "tradebot_trading_state_changed",
        ],
    ),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example package into its own folder (not into the test environment)."""
    target = tmp_path_factory.mktemp("hello-site")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    return target


def _env(site: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("TRADEBOT_PLUGINS", None)
    env.pop("TRADEBOT_CONFIG", None)
    return env


def _tradebot(
    args: list[str], site: Path, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(site),
        cwd=cwd,
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_example_imports_nothing_of_tradebot_but_the_api() -> None:
    for module in (EXAMPLE / "src" / "tradebot_hello").glob("*.py"):
        tree = ast.parse(module.read_text(), str(module))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for name in names:
                if name.split(".")[0] == "tradebot":
                    assert name == "tradebot.api", f"{module.name} imports {name}"


def test_every_kind_is_listed_and_enabled_like_a_built_in(site: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        '# my config\n[bot]\nstate_dir = "state"\n\n[plugins]\n'
        'enabled = ["kraken", "paper", "sma-crossover", "rsi-reversion", "maintain", "log"]\n\n'
        "[http]\nenabled = false\n\n[risk]\naccept_unprotected = true\n"
    )
    listed = _tradebot(["plugins", "list", "--all", "--json", "--config", str(cfg)], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    infos = {p["name"]: p for p in json.loads(listed.stdout)}
    for name, (category, hooks) in KINDS.items():
        assert infos[name] == {
            "name": name,
            "category": category,
            "distribution": "tradebot-hello",
            "version": "0.2.0",
            "enabled": False,
            "state": "disabled",
            "error": None,
            "hooks": hooks,
        }
    enabled = _tradebot(["plugins", "enable", "hello-check", "--config", str(cfg)], site, tmp_path)
    assert enabled.returncode == 0, enabled.stderr
    assert cfg.read_text().startswith("# my config\n")
    listed = _tradebot(["plugins", "list", "--json", "--config", str(cfg)], site, tmp_path)
    assert {p["name"]: p["state"] for p in json.loads(listed.stdout)}["hello-check"] == "loaded"


ALL = '["kraken", "paper", "escalate", "log", ' + ", ".join(f'"{n}"' for n in KINDS) + "]"


def test_a_lifecycle_plugin_s_own_table_is_checked_with_paths(site: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    base = (
        f'[bot]\nstate_dir = "state"\n\n[plugins]\nenabled = {ALL}\n[halt]\nposition_policy = "hello-hold"\n'
        '\n[risk]\naccept_unprotected = true\n\n[strategies.mom]\nplugin = "hello-momentum"\n'
    )
    cfg.write_text(base + '\n[plugins.hello-audit]\nfile = "trail.jsonl"\nfills = false\n')
    ok = _tradebot(["config", "check", "--config", str(cfg)], site, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    shown = _tradebot(["config", "show", "--config", str(cfg)], site, tmp_path)
    assert '[plugins.hello-audit]\nfile = "trail.jsonl"\nfills = false' in shown.stdout, shown.stdout

    cfg.write_text(
        base + '\n[plugins.hello-audit]\nfile = ""\nfills = "yes"\ncolour = 1\n'
        "\n[plugins.hello-check]\nmin_ticks = 3\n\n[plugins.hello-nobody]\nx = 1\n"
    )
    bad = _tradebot(["config", "check", "--config", str(cfg)], site, tmp_path)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert "unknown key(s): colour @ $.plugins.hello-audit" in out
    assert "@ $.plugins.hello-audit.fills" in out
    assert "plugin 'hello-check' takes no settings of its own @ $.plugins.hello-check" in out
    assert "no loaded plugin named 'hello-nobody'" in out and "@ $.plugins.hello-nobody" in out


def test_a_paper_run_uses_the_strategy_check_policy_notifier_and_lifecycle_plugin(
    site: Path, tmp_path: Path
) -> None:
    """Paper trading on the built-in simulator; a person HALTs the running bot on the way."""
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        f'[bot]\nstate_dir = "state"\npairs = ["BTC/USD"]\n\n[plugins]\nenabled = {ALL}\n\n[http]\nenabled = false\n'
        "\n[risk]\naccept_unprotected = true\n"
        '\n[halt]\nposition_policy = "hello-hold"\n\n[healing]\nladder = ["hello-pause", "escalate"]\n'
        '\n[notifications]\nnotifiers = ["hello-file"]\n'
        '\n[strategies.mom]\nplugin = "hello-momentum"\nparams = { run = 2, volume = 0.001 }\n'
        "\n[checks.hello]\nmin_ticks = 3\ninterval_s = 0.5\n"
        '\n[plugins.hello-audit]\nfile = "trail.jsonl"\n'
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradebot", "run", "--paper", "--duration", "8", "--config", str(cfg)],
        env=_env(site),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 40
        while not any(e["event"] == "startup" for e in _lines(state / "trail.jsonl")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the bot did not start"
            time.sleep(0.1)
        time.sleep(2)  # let it trade a little
        halted = _tradebot(["halt", "--reason", "a person says stop", "--config", str(cfg)], site, tmp_path)
        assert halted.returncode == 0, halted.stdout + halted.stderr
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]

    db = sqlite3.connect(state / "tradebot.db")
    health = db.execute("SELECT status, message FROM health WHERE check_name = 'hello'").fetchall()
    assert any(s == "ok" and "hello, market" in m for s, m in health), health

    trail = _lines(state / "trail.jsonl")
    events = [e["event"] for e in trail]
    assert events[0] == "startup" and events[-1] == "shutdown", events
    change = next(e for e in trail if e["event"] == "trading-state")
    assert (change["current"], change["reason"]) == ("halted", "a person says stop"), change
    assert str(change["source"]).startswith("operator"), change
    fills = db.execute("SELECT client_order_id, volume FROM fills ORDER BY seq").fetchall()
    assert [(e["client_order_id"], e["volume"]) for e in trail if e["event"] == "fill"] == fills
    orders = db.execute("SELECT strategy, status FROM orders").fetchall()
    assert orders and {s for s, _ in orders} == {"mom"}, orders  # the strategy traded

    notes = _lines(state / "hello-notifications.jsonl")
    kinds = [n["kind"] for n in notes]
    assert "startup" in kinds and "trading_state" in kinds, kinds
    assert any("hello-hold: positions kept as they are" in str(n["text"]) for n in notes), notes


def test_a_run_on_the_example_exchange_trades_heals_and_matches_its_books(site: Path, tmp_path: Path) -> None:
    """A live-mode run on the third-party exchange: its stream drops once and hello-pause heals it."""
    cfg = tmp_path / "tradebot.toml"
    enabled = '["escalate", "log", ' + ", ".join(f'"{n}"' for n in KINDS) + "]"
    cfg.write_text(
        f'[bot]\nstate_dir = "state"\nexchange = "hello-market"\npairs = ["HM/USD"]\n\n[plugins]\nenabled = {enabled}\n'
        '\n[http]\nenabled = false\n\n[halt]\nposition_policy = "hello-hold"\n\n[risk]\naccept_unprotected = true\n'
        '\n[healing]\nladder = ["hello-pause", "escalate"]\n\n[recovery.hello-pause]\npause_s = 0.1\n'
        "\n[exchanges.hello-market]\ntick_interval_s = 0.02\ndisconnect_after = 60\nseed = 3\n"
        '\n[strategies.mom]\nplugin = "hello-momentum"\nparams = { run = 2, volume = 0.5 }\n'
    )
    ran = _tradebot(["run", "--duration", "5", "--config", str(cfg)], site, tmp_path, timeout=90)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "healing: hello-pause healed" in ran.stderr, ran.stderr[-3000:]

    state = tmp_path / "state"
    books = json.loads((state / "hello-market.json").read_text())
    db = sqlite3.connect(state / "tradebot.db")
    journal = {
        cid: (status, Decimal(filled))
        for cid, status, filled in db.execute("SELECT client_order_id, status, filled_volume FROM orders")
    }
    exchange = {o["client_order_id"]: (o["status"], Decimal(o["filled_volume"])) for o in books["orders"]}
    assert journal == exchange
    assert sum(1 for status, _ in exchange.values() if status == "closed") >= 2, exchange
    position = db.execute("SELECT volume FROM positions WHERE pair = 'HM/USD'").fetchone()
    assert Decimal(position[0] if position else 0) == Decimal(books["balances"].get("HM", "0"))
    cash = db.execute("SELECT value FROM kv WHERE key = 'portfolio.cash'").fetchone()[0]
    assert Decimal(cash) == Decimal(books["balances"]["USD"])  # fees included, to the last digit
    trail = _lines(state / "hello-audit.jsonl")
    assert (
        len([e for e in trail if e["event"] == "fill"])
        == db.execute("SELECT count(*) FROM fills").fetchone()[0]
    )


def test_a_paper_run_wraps_the_example_exchange(site: Path, tmp_path: Path) -> None:
    """`--paper` on a third-party exchange: its tickers and market rules (its fee) drive the paper
    fills, and no order reaches it."""
    cfg = tmp_path / "tradebot.toml"
    enabled = '["paper", "maintain", "log", "escalate", "hello-market", "hello-momentum"]'
    cfg.write_text(
        f'[bot]\nstate_dir = "state"\nexchange = "hello-market"\npairs = ["HM/USD"]\n\n[plugins]\nenabled = {enabled}\n'
        "\n[http]\nenabled = false\n\n[risk]\naccept_unprotected = true\n"
        "\n[exchanges.hello-market]\ntick_interval_s = 0.02\nseed = 3\nfee_pct = 0.25\n"
        '\n[strategies.mom]\nplugin = "hello-momentum"\nparams = { run = 2, volume = 0.5 }\n'
    )
    ran = _tradebot(["run", "--paper", "--duration", "4", "--config", str(cfg)], site, tmp_path, timeout=90)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "paper trading with 'paper' on the market data of the exchange plugin 'hello-market'" in ran.stderr

    state = tmp_path / "state"
    paper = json.loads((state / "paper-exchange.json").read_text())
    filled = [o for o in paper["orders"] if Decimal(o["filled_volume"]) > 0]
    assert len(filled) >= 2, paper["orders"]
    for o in filled:  # the fee is hello-market's (0.25 %), from its markets(), not Kraken's schedule
        cost = Decimal(o["filled_volume"]) * Decimal(o["avg_fill_price"])
        assert Decimal(o["fee"]) == cost * Decimal("0.25") / 100, o
    market = state / "hello-market.json"
    assert not market.exists() or json.loads(market.read_text())["orders"] == []  # nothing was sent to it
    db = sqlite3.connect(state / "tradebot.db")
    journal = dict(db.execute("SELECT client_order_id, status FROM orders"))
    assert journal == {o["client_order_id"]: o["status"] for o in paper["orders"]}
    cash = db.execute("SELECT value FROM kv WHERE key = 'portfolio.cash'").fetchone()[0]
    assert Decimal(cash) == Decimal(paper["balances"]["USD"])


def test_paper_trading_a_third_party_exchange_without_the_paper_plugin_says_how(
    site: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        '[bot]\nstate_dir = "state"\nexchange = "hello-market"\npairs = ["HM/USD"]\n\n[plugins]\n'
        'enabled = ["maintain", "log", "escalate", "hello-market", "hello-momentum"]\n\n[http]\nenabled = false\n'
        '\n[risk]\naccept_unprotected = true\n\n[strategies.mom]\nplugin = "hello-momentum"\n'
    )
    ran = _tradebot(["run", "--paper", "--duration", "2", "--config", str(cfg)], site, tmp_path)
    assert ran.returncode == 2, ran.stderr[-3000:]
    assert "--paper needs an exchange plugin that fills on paper, and none is loaded" in ran.stderr, (
        ran.stderr[-3000:]
    )


def test_the_example_notifier_is_opt_in_like_the_built_in_telegram(site: Path, tmp_path: Path) -> None:
    """Declared in the package's metadata (entry-point group tradebot.opt_in): off by default,
    enabled like telegram is."""
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n\n[http]\nenabled = false\n')
    listed = _tradebot(["plugins", "list", "--all", "--json", "--config", str(cfg)], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    states = {p["name"]: p["state"] for p in json.loads(listed.stdout)}
    assert (states["hello-file"], states["telegram"]) == ("disabled", "disabled")
    assert (states["hello-check"], states["log"]) == ("loaded", "loaded")
    enabled = _tradebot(["plugins", "enable", "hello-file", "--config", str(cfg)], site, tmp_path)
    assert enabled.returncode == 0, enabled.stderr
    listed = _tradebot(["plugins", "list", "--all", "--json", "--config", str(cfg)], site, tmp_path)
    states = {p["name"]: p["state"] for p in json.loads(listed.stdout)}
    assert (states["hello-file"], states["telegram"], states["hello-check"]) == (
        "loaded",
        "disabled",
        "loaded",
    )
