"""Configs that passed ``config check`` / ``--dry-run`` but then failed, or ran unprotected.

Each is refused with the rule and the path by ``config check`` (exit 2), ``run`` (exit 2,
never 75, nothing traded) and ``run --dry-run`` (exit 1, a FAIL line).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import make_dist
from tradebot.cli.main import cli

# the default config protects: a test that leaves the triggers out says so on purpose
UNPROTECTED = "[risk]\naccept_unprotected = true\n"


def check(cfg: Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["config", "check", "--config", str(cfg)], env=env)


def issues_of(result: Result) -> list[str]:
    return [line.strip()[2:] for line in result.stderr.splitlines() if line.startswith("  - ")]


def write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n[http]\nport = 0\n' + text, encoding="utf-8")
    return cfg


def tb(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def refused_everywhere(tmp_path: Path, text: str, expected: str, env: dict[str, str] | None = None) -> None:
    """``config check`` exits 2, ``run`` exits 2 before trading, ``--dry-run`` exits 1; each says ``expected``."""
    cfg = write(tmp_path, text)
    r = check(cfg, env=env)
    assert r.exit_code == 2, r.output
    assert any(expected in i for i in issues_of(r)), r.stderr
    run = tb("run", "--paper", "--duration", "3", "--config", str(cfg), cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert expected in run.stdout + run.stderr and "run finished" not in run.stdout
    dry = tb("run", "--paper", "--dry-run", "--config", str(cfg), cwd=tmp_path, env=env)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "[FAIL]" in dry.stdout and expected in dry.stdout


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[monitoring]\nround_interval_s = inf\n", "$.monitoring.round_interval_s"),
        ("[checks.staleness]\nthreshold_s = nan\n", "$.checks.staleness.threshold_s"),
        ("[backup]\ninterval_s = -inf\n", "$.backup.interval_s"),
        ("[risk]\nmax_position = inf\n", "$.risk.max_position"),
        ('[strategies.sma]\nplugin = "sma-crossover"\ntimeout_s = inf\n', "$.strategies.sma.timeout_s"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, text: str, path: str) -> None:
    r = check(write(tmp_path, text))
    assert r.exit_code == 2, r.output
    assert any("finite" in i and i.endswith(f"@ {path}") for i in issues_of(r)), r.stderr


def test_round_interval_inf_stops_run_and_dry_run(tmp_path: Path) -> None:
    refused_everywhere(tmp_path, "[monitoring]\nround_interval_s = inf\n", "@ $.monitoring.round_interval_s")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[healing]\nladder = ["reconnect", "reconect"]\n',
            "no loaded recovery action named 'reconect' (did you mean reconnect?)",
        ),
        ('[notifications]\nnotifiers = ["log", "slack"]\n', "no loaded notifier named 'slack'"),
        (
            '[http]\nreadiness_checks = ["stalenes"]\n',
            "no loaded check named 'stalenes' (did you mean staleness?)",
        ),
        ('[bot]\nexchange = "krakn"\n', "no loaded exchange plugin named 'krakn' (did you mean kraken?)"),
    ],
)
def test_every_name_that_must_be_a_plugin_is_checked(tmp_path: Path, text: str, expected: str) -> None:
    # [http] and [bot] are written by write(): merge by writing the file ourselves
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(text, encoding="utf-8")
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert any(expected in i for i in issues_of(r)), r.stderr


def test_unknown_healing_step_stops_run(tmp_path: Path) -> None:
    refused_everywhere(
        tmp_path,
        '[healing]\nladder = ["reconnect", "reconect"]\n',
        "no loaded recovery action named 'reconect'",
    )


def test_no_halt_trigger_is_refused_listing_what_is_missing(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[plugins]\ndisabled = ["drawdown", "consecutive-losses"]\n[checks.staleness]\non_critical = "none"\n',
    )
    r = check(cfg)
    assert r.exit_code == 2, r.output
    (issue,) = issues_of(r)
    assert issue.startswith("trading would run unprotected: ")
    assert "a drawdown trigger (plugin 'drawdown') is not loaded" in issue
    assert "a loss trigger (plugin 'consecutive-losses') is not loaded" in issue
    assert (
        "a staleness check (plugin 'staleness') only alerts ([checks.staleness] on_critical = 'none')"
        in issue
    )
    assert issue.endswith(
        "[risk] accept_unprotected = true to run without them on purpose @ $.risk.accept_unprotected"
    )
    # said on purpose: accepted, and it runs
    cfg.write_text(cfg.read_text() + UNPROTECTED)
    assert check(cfg).exit_code == 0


def test_unprotected_config_stops_run_and_dry_run(tmp_path: Path) -> None:
    refused_everywhere(
        tmp_path,
        '[plugins]\ndisabled = ["drawdown", "consecutive-losses", "staleness"]\n',
        "trading would run unprotected",
    )


def test_the_default_config_is_protected_and_passes(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["config", "check"])
    assert r.exit_code == 0, r.output


def test_enabled_telegram_without_secrets_is_refused(tmp_path: Path) -> None:
    refused_everywhere(
        tmp_path,
        '[notifications]\nnotifiers = ["log", "telegram"]\n',
        "the notifier telegram needs the secret(s) telegram_bot_token, telegram_chat_id, which are not set",
        env={"TRADEBOT_PLUGINS": ",".join([*_default_plugins(), "telegram"])},
    )


def _default_plugins() -> list[str]:
    from tradebot.core.plugins import installed_plugins, resolve_enabled

    return resolve_enabled(None, installed_plugins(), environ={})


def test_quote_that_the_pairs_are_not_quoted_in_is_refused(tmp_path: Path) -> None:
    cfg = (
        write(tmp_path, "")
        .read_text()
        .replace('[bot]\nstate_dir = "state"\n', '[bot]\nstate_dir = "state"\nquote = "EUR"\n')
    )
    (tmp_path / "tradebot.toml").write_text(cfg)
    r = check(tmp_path / "tradebot.toml")
    assert r.exit_code == 2, r.output
    assert sorted(issues_of(r)) == sorted(
        f"pair {p!r} is quoted in USD, but [bot] quote is 'EUR': cash, equity and every limit are counted in EUR; "
        f"trade pairs quoted in EUR, or set [bot] quote = 'USD' @ $.bot.pairs[{i}]"
        for i, p in enumerate(["BTC/USD", "ETH/USD"])
    )


SIZED = """
import attrs
from decimal import Decimal
from tradebot.core.components import ComponentSpec
from tradebot.core.hookspecs import hookimpl


@attrs.frozen
class SizedConfig:
    quote_amount: Decimal = Decimal("20")
    volume: Decimal | None = None


@hookimpl
def tradebot_register_strategies():
    return [ComponentSpec(name="sized", factory=lambda c, ctx: object(), config_cls=SizedConfig, description="x")]
"""


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            'volume = "0.5"',
            "volume 0.5 is over [risk] max_position 0.01: every order of this strategy would be refused",
        ),
        (
            'quote_amount = "900"',
            "quote_amount 900 is over [risk] max_notional_per_order 500: every order of this strategy would be refused",
        ),
    ],
)
def test_strategy_order_size_over_the_risk_limits_is_refused(
    tmp_path: Path, extra_site: Path, params: str, expected: str
) -> None:
    make_dist(extra_site, "tbtest-sized", {"tbtest_sized": SIZED}, {"tbtest-sized": "tbtest_sized"})
    text = (
        '[risk]\nmax_position = "0.01"\nmax_notional_per_order = "500"\n'
        f'[strategies.s]\nplugin = "sized"\nparams = {{{params}}}\n'
    )
    r = check(write(tmp_path, text))
    assert r.exit_code == 2, r.output
    key = params.split(" ")[0]
    assert [i for i in issues_of(r) if "over [risk]" in i] == [
        f"{expected}; lower it or raise {expected.split('[risk] ')[1].split(' ')[0]} @ $.strategies.s.params.{key}"
    ]
    # within the limits: accepted
    ok = text.replace('"0.5"', '"0.005"').replace('"900"', '"100"')
    assert check(write(tmp_path, ok)).exit_code == 0


def test_non_base64_api_secret_is_refused_before_it_can_loop_restarts(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('kraken_api_key = "key"\nkraken_api_secret = "not base64 at all!"\n')
    secrets.chmod(0o600)
    cfg = write(tmp_path, '[exchanges.kraken]\nbase_url = "http://127.0.0.1:9"\n').read_text()
    cfg = cfg.replace(
        '[bot]\nstate_dir = "state"\n',
        '[bot]\nstate_dir = "state"\nexchange = "kraken"\nsecrets_file = "secrets.toml"\n',
    )
    (tmp_path / "tradebot.toml").write_text(cfg)
    path = tmp_path / "tradebot.toml"
    r = check(path)
    assert r.exit_code == 2, r.output
    assert any("kraken_api_secret) is not valid base64" in i for i in issues_of(r))
    run = tb("run", "--config", str(path), "--duration", "3", cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr  # a configuration error: never 75 (restart me)
    assert "not valid base64" in run.stdout + run.stderr
    assert "not base64 at all" not in run.stdout + run.stderr  # the secret itself is never shown
    dry = tb("run", "--dry-run", "--config", str(path), cwd=tmp_path)
    assert dry.returncode == 1 and "[FAIL] setup" in dry.stdout and "not valid base64" in dry.stdout


def test_every_strategy_disabled_is_refused(tmp_path: Path) -> None:
    text = (
        '[strategies.sma]\nplugin = "sma-crossover"\nenabled = false\n'
        '[strategies.rsi]\nplugin = "rsi-reversion"\nenabled = false\n'
    )
    refused_everywhere(
        tmp_path, text, "no strategy instance is enabled in [strategies]: the bot would trade nothing"
    )


def test_an_empty_strategies_table_is_one_config_error_before_anything_starts(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[strategies]\n")
    run = tb("run", "--paper", "--duration", "3", "--config", str(cfg), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 2, out  # a configuration error: not 1, never 75 (restart me)
    assert f"error: invalid configuration in {cfg}" in out
    issues = [line for line in out.splitlines() if line.startswith("  - ")]
    assert issues == [
        "  - no strategy instance is enabled in [strategies]: the bot would trade nothing; enable one or add one,"
        ' like [strategies.sma] plugin = "sma-crossover" @ $.strategies'
    ], out
    assert "Traceback" not in out and "run finished" not in out and "HALT" not in out
    assert not (tmp_path / "state").exists()  # refused before any state was made


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('control_token = "some-control-token"\n')
    secrets.chmod(0o644)
    cfg = write(tmp_path, "").read_text().replace("[bot]\n", '[bot]\nsecrets_file = "secrets.toml"\n')
    (tmp_path / "tradebot.toml").write_text(cfg)
    expected = f"secrets file {secrets} is accessible by others (mode 0644)"
    r = check(tmp_path / "tradebot.toml")
    assert r.exit_code == 2 and expected in r.stderr and f"chmod 600 {secrets}" in r.stderr, r.output
    run = tb("run", "--paper", "--duration", "3", "--config", str(tmp_path / "tradebot.toml"), cwd=tmp_path)
    assert run.returncode == 2 and expected in run.stdout + run.stderr, run.stdout + run.stderr
    secrets.chmod(0o600)
    assert check(tmp_path / "tradebot.toml").exit_code == 0


@pytest.mark.parametrize("depth", [40, 5000])
def test_deep_nesting_is_a_clear_error_not_a_recursion_traceback(tmp_path: Path, depth: int) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        '[strategies.sma]\nplugin = "sma-crossover"\nparams = {x = ' + "[" * depth + "]" * depth + "}\n"
    )
    r = tb("config", "check", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nests tables or arrays too deeply" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_says_the_saved_state_starts_the_bot_halted(tmp_path: Path) -> None:
    from tradebot.core.store import StateStore

    StateStore(tmp_path / "state").close()
    cfg = write(tmp_path, "")
    assert tb("halt", "--reason", "checking the exchange", "--config", str(cfg), cwd=tmp_path).returncode == 0
    dry = tb("run", "--paper", "--dry-run", "--config", str(cfg), cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "[WARN] trading state" in dry.stdout
    assert "the saved state will start the bot HALTED (checking the exchange; by operator:cli" in dry.stdout


def test_a_plugin_name_claimed_twice_names_both_distributions(tmp_path: Path, extra_site: Path) -> None:
    code = (
        "from tradebot.core.components import ComponentSpec\nfrom tradebot.core.hookspecs import hookimpl\n"
        "class N:\n    async def send(self, n):\n        pass\n"
        "@hookimpl\ndef tradebot_register_notifiers():\n"
        "    return [ComponentSpec(name='log2', factory=lambda c, x: N(), config_cls=None, description='x')]\n"
    )
    make_dist(extra_site, "tbtest-notifier", {"tbtest_notifier": code}, {"log": "tbtest_notifier"})
    cfg = write(tmp_path, "")
    r = check(cfg)
    assert r.exit_code == 2, r.output
    (issue,) = [i for i in issues_of(r) if "claimed" in i]
    assert issue.startswith("plugin name 'log' is claimed by 2 distributions: ")
    assert "tbtest-notifier 0.1 (tbtest_notifier)" in issue and "tradebot " in issue
    assert "(tradebot.plugins.notifiers.log)" in issue
    run = tb("run", "--paper", "--duration", "3", "--config", str(cfg), cwd=tmp_path)
    assert run.returncode == 2 and "plugin name 'log' is claimed by 2 distributions" in run.stderr


def test_non_finite_numbers_on_the_command_line_and_in_the_environment_are_refused(tmp_path: Path) -> None:
    cfg = write(tmp_path, "")
    r = tb("run", "--paper", "--duration", "inf", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "must be a finite number of seconds (got inf)" in r.stderr, r.stderr
    r = tb(
        "run",
        "--paper",
        "--duration",
        "3",
        "--config",
        str(cfg),
        cwd=tmp_path,
        env={"TRADEBOT_TRACE_STRATEGY_INTERVAL_S": "inf"},
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert (
        "TRADEBOT_TRACE_STRATEGY_INTERVAL_S must be a finite number >= 0 (got 'inf')" in r.stdout + r.stderr
    )


def test_dry_run_fails_when_a_bot_already_runs_on_the_state(tmp_path: Path) -> None:
    from tradebot.core.store import StateStore
    from tradebot.services.control import BotLock

    StateStore(tmp_path / "state").close()
    lock = BotLock(tmp_path / "state")
    assert lock.try_acquire()  # as a running bot holds it
    try:
        cfg = write(tmp_path, "")
        dry = tb("run", "--paper", "--dry-run", "--config", str(cfg), cwd=tmp_path)
        assert dry.returncode == 1, dry.stdout + dry.stderr
        assert "[FAIL] state store" in dry.stdout and "a second one would not start" in dry.stdout
    finally:
        lock.release()
