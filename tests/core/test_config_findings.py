"""Findings from a user's review of config validation, each checked through the real CLI.

1. ``[plugins] required`` must stop start-up when a required plugin is not installed, not
   enabled or fails to load (``config check``, ``run``, ``run --dry-run``).
2. Validation lists every problem of every section (core sections and plugin tables) at
   once, without follow-on errors about values it had to leave at their defaults.
3. A string where a list is expected is refused as such, at the key's own path, instead of
   being read character by character.
4. ``[plugins] enabled`` that leaves out the plugins of built-in defaults: the default
   strategy instances are dropped with a note, and a missing HALT position policy is an
   error that says it is the default and how to fix it.
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


def check(cfg: Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["config", "check", "--config", str(cfg)], env=env)


def issues_of(result: Result) -> list[str]:
    """The ``  - problem`` lines of an error report."""
    return [line.strip()[2:] for line in result.stderr.splitlines() if line.startswith("  - ")]


def assert_reports_exactly(cfg: Path, expected: list[str]) -> None:
    """``config check`` of ``cfg`` fails (exit 2) listing exactly ``expected``, in any order."""
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert sorted(issues_of(r)) == sorted(expected)


def write(tmp_path: Path, text: str, name: str = "tradebot.toml") -> Path:
    cfg = tmp_path / name
    cfg.write_text(text, encoding="utf-8")
    return cfg


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


# --- 1. [plugins] required -------------------------------------------------------------


def test_required_plugin_that_is_not_installed_fails_config_check(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[plugins]\nrequired = ["nosuch2"]\n')
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert issues_of(r) == [
        (
            "required plugin 'nosuch2' is not installed; install the package that provides it, "
            "or remove it from [plugins] required @ $.plugins.required[0]"
        )
    ]


def test_required_plugin_left_out_of_enabled_fails_config_check(tmp_path: Path) -> None:
    cfg = write(
        tmp_path, '[plugins]\nenabled = ["paper", "sma-crossover", "maintain"]\nrequired = ["kraken"]\n'
    )
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert issues_of(r)[0] == (
        "required plugin 'kraken' is not enabled: [plugins] enabled leaves it out; add it there "
        "(tradebot plugins enable kraken), or remove it from [plugins] required @ $.plugins.required[0]"
    )


def test_required_plugin_left_out_by_the_environment_names_the_variable(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[plugins]\nrequired = ["kraken"]\n')
    r = check(cfg, env={"TRADEBOT_PLUGINS": "paper,sma-crossover,rsi-reversion,maintain"})
    assert r.exit_code == 2, r.output
    issue = issues_of(r)[0]
    assert "required plugin 'kraken' is not enabled: TRADEBOT_PLUGINS" in issue
    assert "add it to TRADEBOT_PLUGINS" in issue and issue.endswith("@ $.plugins.required[0]")


def test_required_plugin_off_by_default_says_how_to_enable_it(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[plugins]\nrequired = ["webhook"]\n')
    r = check(cfg)
    assert r.exit_code == 2, r.output
    (issue,) = issues_of(r)
    assert issue.startswith("required plugin 'webhook' is not enabled: the default plugin set leaves it out")
    assert "tradebot plugins enable webhook" in issue and issue.endswith("@ $.plugins.required[0]")


def test_required_plugin_that_fails_to_import_names_it_and_the_fix(tmp_path: Path, extra_site: Path) -> None:
    make_dist(
        extra_site,
        "tbtest-broken",
        {"tbtest_broken": "import no_such_module_anywhere\n"},
        {"tbtest-broken": "tbtest_broken"},
    )
    cfg = write(
        tmp_path,
        '[plugins]\nenabled = ["paper", "kraken", "sma-crossover", "maintain", "tbtest-broken"]\nrequired = ["tbtest-broken"]\n',
    )
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert (
        "required plugin 'tbtest-broken' could not be loaded: import failed: ModuleNotFoundError" in r.stderr
    )
    assert "remove it from [plugins] required @ $.plugins.required[0]" in r.stderr


def test_required_plugin_stops_run_and_dry_run(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[plugins]\nrequired = ["nosuch2"]\n')
    r = run_cli("run", "--paper", "--duration", "2", "--config", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "required plugin 'nosuch2' is not installed" in r.stderr and "@ $.plugins.required[0]" in r.stderr
    assert "run finished" not in r.stdout
    dry = run_cli("run", "--dry-run", "--paper", "--config", str(cfg))
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "[FAIL] config" in dry.stdout and "required plugin 'nosuch2' is not installed" in dry.stdout


# --- 2. every problem of every section, at once ------------------------------------------


def test_every_section_is_validated_and_reported_together(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[bot]\nexchnage = "paper"\n'
        "[checks.staleness]\ntreshold_s = 1\n"
        '[risk]\nmax_orders_per_minute = "thirty"\nmax_position = -1\n',
    )
    assert_reports_exactly(
        cfg,
        [
            "unknown key(s): exchnage @ $.bot",
            "unknown key(s): treshold_s @ $.checks.staleness",
            "expected int (got str 'thirty') @ $.risk.max_orders_per_minute",
            "max_position must be > 0 (got -1) @ $.risk.max_position",
        ],
    )


def test_values_left_at_defaults_cause_no_follow_on_errors(tmp_path: Path) -> None:
    # fast="x" is reported; checking fast < slow with the default fast would be a bogus error,
    # and so would checking the default exchange after [bot] exchange was refused
    cfg = write(
        tmp_path,
        "[bot]\nexchange = 5\n"
        '[strategies.sma]\nplugin = "sma-crossover"\ntimeout_s = "slow"\n[strategies.sma.params]\nfast = "x"\nslow = 3\n'
        "[halt]\nposition_policy = 7\n"
        '[plugins]\nenabled = ["kraken", "sma-crossover", "close"]\n',
    )
    assert_reports_exactly(
        cfg,
        [
            "expected str (got int 5) @ $.bot.exchange",
            "expected float (got str 'slow') @ $.strategies.sma.timeout_s",
            "expected int (got str 'x') @ $.strategies.sma.params.fast",
            "expected str (got int 7) @ $.halt.position_policy",
        ],
    )


def test_secret_in_a_plugin_table_is_reported_once(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[exchanges.kraken]\napi_secret = "c2VjcmV0"\n[risk]\nmax_position = 0\n')
    r = check(cfg)
    assert r.exit_code == 2, r.output
    found = issues_of(r)
    assert len(found) == 2, found
    assert any(
        i.endswith("@ $.exchanges.kraken.api_secret") and i.startswith("secrets are not allowed")
        for i in found
    )
    assert "c2VjcmV0" not in r.output


# --- 3. a string where a list is expected -------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "path", "example"),
    [
        ('[bot]\npairs = "BTC/USD"\n', "$.bot.pairs", '["BTC/USD"]'),
        ('[bot]\npairs = "BTC/USD, ETH/USD"\n', "$.bot.pairs", '["BTC/USD", "ETH/USD"]'),
        ('[plugins]\nenabled = "paper"\n', "$.plugins.enabled", '["paper"]'),
        ('[plugins]\nrequired = "kraken"\n', "$.plugins.required", '["kraken"]'),
        (
            '[strategies.s]\nplugin = "sma-crossover"\npairs = "ETH/USD"\n',
            "$.strategies.s.pairs",
            '["ETH/USD"]',
        ),
        ('[http]\nreadiness_checks = "staleness"\n', "$.http.readiness_checks", '["staleness"]'),
        ('[checks.staleness]\npairs = "BTC/USD"\n', "$.checks.staleness.pairs", '["BTC/USD"]'),
    ],
)
def test_string_where_a_list_is_expected(tmp_path: Path, toml: str, path: str, example: str) -> None:
    r = check(write(tmp_path, toml))
    assert r.exit_code == 2, r.output
    assert issues_of(r) == [f"expected a list, like {example} (got a string) @ {path}"]


def test_table_where_a_list_is_expected(tmp_path: Path) -> None:
    r = check(write(tmp_path, "[bot]\npairs = {BTC = 1}\n"))
    assert r.exit_code == 2, r.output
    assert issues_of(r) == ["expected a list (got a table) @ $.bot.pairs"]


def test_badly_formed_pair_is_reported_at_pairs(tmp_path: Path) -> None:
    r = check(write(tmp_path, '[bot]\npairs = ["BTCUSD"]\n'))
    assert r.exit_code == 2, r.output
    assert issues_of(r) == ["pairs must look like 'BTC/USD' (got 'BTCUSD') @ $.bot.pairs"]


# --- 4. [plugins] enabled without the plugins of built-in defaults --------------------------


def test_default_strategy_instances_of_plugins_not_enabled_are_dropped_with_a_note(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[risk]\naccept_unprotected = true\n[plugins]\nenabled = ["paper", "kraken", "sma-crossover", "maintain"]\n',
    )
    r = check(cfg)
    assert r.exit_code == 0, r.output
    assert "rsi" not in r.stdout
    assert (
        "note: built-in strategy instance 'rsi' (plugin 'rsi-reversion') is left out: [plugins] enabled leaves out "
        "its plugin; to run it, add it there (tradebot plugins enable rsi-reversion) @ $.strategies.rsi"
    ) in r.stderr
    show = CliRunner().invoke(cli, ["config", "show", "--config", str(cfg)])
    assert show.exit_code == 0, show.output
    assert "[strategies.sma]" in show.stdout and "[strategies.rsi]" not in show.stdout


def test_default_position_policy_not_enabled_is_an_error_saying_so(tmp_path: Path) -> None:
    cfg = write(
        tmp_path, '[risk]\naccept_unprotected = true\n[plugins]\nenabled = ["paper", "sma-crossover"]\n'
    )
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert issues_of(r) == [
        (
            "no loaded position policy named 'maintain' (the default [halt] position_policy): [plugins] enabled "
            "leaves out its plugin; a HALT needs a position policy: add it there (tradebot plugins enable maintain), "
            "or set [halt] position_policy to one of: none loaded @ $.halt.position_policy"
        )
    ]
    # the default instance 'rsi' is left out with a note, not reported as an error
    assert "note: built-in strategy instance 'rsi'" in r.stderr


def test_paper_exchange_without_the_kraken_plugin_gets_a_note(tmp_path: Path) -> None:
    # paper trading reads its prices through the kraken plugin's client: say so before `run` fails
    cfg = write(
        tmp_path,
        '[risk]\naccept_unprotected = true\n[plugins]\nenabled = ["paper", "sma-crossover", "maintain"]\n',
    )
    r = check(cfg)
    assert r.exit_code == 0, r.output
    assert (
        "note: the paper exchange takes its market data ([bot] market_data = 'simulator', the default) from the "
        "exchange plugin 'kraken': [plugins] enabled leaves out its plugin, so paper trading cannot start; add it "
        "there (tradebot plugins enable kraken) @ $.bot.market_data"
    ) in r.stderr


def test_strategy_the_user_wrote_for_a_plugin_not_enabled_is_an_error(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[risk]\naccept_unprotected = true\n[plugins]\nenabled = ["paper", "kraken", "sma-crossover", "maintain"]\n[strategies.rsi]\nplugin = "rsi-reversion"\n',
    )
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert issues_of(r) == [
        (
            "no loaded strategy plugin named 'rsi-reversion': [plugins] enabled leaves out its plugin; add it there "
            "(tradebot plugins enable rsi-reversion) @ $.strategies.rsi.plugin"
        )
    ]


def test_only_strategy_instances_left_out_is_an_error_as_nothing_would_trade(tmp_path: Path) -> None:
    cfg = write(
        tmp_path, '[risk]\naccept_unprotected = true\n[plugins]\nenabled = ["paper", "kraken", "maintain"]\n'
    )
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert (
        "note: built-in strategy instance 'sma'" in r.stderr
        and "note: built-in strategy instance 'rsi'" in r.stderr
    )
    assert issues_of(r) == [
        "no strategy instance is enabled in [strategies]: the bot would trade nothing; enable one or add one, like "
        '[strategies.sma] plugin = "sma-crossover" @ $.strategies'
    ]


def test_minimal_plugin_set_that_config_check_accepts_also_runs(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[bot]\nstate_dir = "state"\n[http]\nport = 0\n[risk]\naccept_unprotected = true\n[plugins]\nenabled = ["paper", "kraken", "sma-crossover", "maintain"]\n',
    )
    assert check(cfg).exit_code == 0
    r = run_cli("run", "--paper", "--duration", "1", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "run finished" in r.stdout
    assert "note: built-in strategy instance 'rsi'" in r.stderr


def test_plugins_list_names_required_plugins_that_do_not_load(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[plugins]\nenabled = ["paper"]\nrequired = ["kraken", "nosuch2"]\n')
    r = CliRunner().invoke(cli, ["plugins", "list", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "error: required plugin 'kraken' is not enabled: [plugins] enabled leaves it out" in r.stderr
    assert "error: required plugin 'nosuch2' is not installed" in r.stderr


def test_disabling_a_required_plugin_warns_that_start_up_will_fail(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[plugins]\nenabled = ["paper", "kraken"]\nrequired = ["kraken"]\n')
    r = CliRunner().invoke(cli, ["plugins", "disable", "kraken", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "warning: kraken is still in [plugins] required: start-up fails" in r.stderr


def test_a_value_a_validator_refused_is_reported_once(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[halt]\nposition_policy = ""\n')
    r = check(cfg)
    assert r.exit_code == 2, r.output
    assert issues_of(r) == ["position_policy must not be empty @ $.halt.position_policy"]


def test_reading_an_invalid_config_for_a_setting_loads_no_plugin(tmp_path: Path) -> None:
    """`halt`, `resume`, `health` read the state dir only: a bad plugin table is start-up's business."""
    cfg = write(
        tmp_path, '[bot]\nstate_dir = "s"\n[risk]\nmax_position = -1\n[checks.staleness]\ntreshold_s = 1\n'
    )
    code = (
        "import sys\n"
        "from tradebot.app.config import InvalidSettings, load_settings\n"
        f"try:\n    load_settings({str(cfg)!r})\nexcept InvalidSettings as exc:\n    print(exc.issues)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('tradebot.exchanges', 'tradebot.checks'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    issues, modules = out.splitlines()
    assert "max_position" in issues and "treshold_s" not in issues
    assert modules == "[]"
