"""Config loading: attrs + cattrs, unknown keys rejected, errors naming rule and path."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from tradebot.app.config import Settings, load_settings, settings_from_dict, structure, validate_plugin_tables
from tradebot.core.components import ComponentSpec
from tradebot.core.errors import ConfigError
from tradebot.core.hookspecs import hookimpl
from tradebot.core.plugins import PluginHost
from tradebot.core.secrets import SecretStore, load_secrets, redact
from tradebot.core.validate import gt


@attrs.frozen
class StalenessLike:
    threshold_s: float = attrs.field(default=30.0, validator=gt(0))
    grace_s: float = attrs.field(default=60.0, validator=gt(0))


def test_error_names_rule_value_and_path() -> None:
    obj, issues = structure({"threshold_s": -5}, StalenessLike, "$.checks.staleness")
    assert obj is None
    assert issues == ["threshold_s must be > 0 (got -5) @ $.checks.staleness.threshold_s"]


def test_every_error_is_reported_not_just_the_first() -> None:
    _, issues = structure({"threshold_s": -5, "grace_s": 0}, StalenessLike, "$.c")
    assert len(issues) == 2


def test_unknown_keys_and_wrong_types_are_rejected_with_paths() -> None:
    _, issues = structure({"threshold_s": "fast", "treshold": 1}, StalenessLike, "$.checks.staleness")
    assert "expected float (got str 'fast') @ $.checks.staleness.threshold_s" in issues
    assert "unknown key(s): treshold @ $.checks.staleness" in issues


def test_core_sections_validated_together() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(
            {
                "risk": {"max_position": -1, "max_orders_per_minute": 0},
                "bot": {"pairs": ["BTCUSD"]},
                "botz": {},
                "strategies": {"s1": {"plugin": "sma-crossover", "timeout_s": 0}},
            }
        )
    issues = err.value.issues
    assert "max_position must be > 0 (got -1) @ $.risk.max_position" in issues
    assert "max_orders_per_minute must be > 0 (got 0) @ $.risk.max_orders_per_minute" in issues
    assert "pairs must look like 'BTC/USD' (got 'BTCUSD') @ $.bot.pairs" in issues
    assert any(i.startswith("unknown section 'botz' (did you mean bot?)") for i in issues)
    assert "timeout_s must be > 0 (got 0) @ $.strategies.s1.timeout_s" in issues


def test_secrets_in_config_file_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"exchanges": {"kraken": {"api_secret": "c2VjcmV0"}}})
    (issue,) = err.value.issues
    assert issue.endswith("@ $.exchanges.kraken.api_secret")
    assert "c2VjcmV0" not in str(err.value)


def test_toml_file_with_syntax_error_names_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[bot\nname = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_settings(p)


def test_defaults_without_file() -> None:
    s = load_settings(None)
    assert s.source is None and s.bot.exchange == "paper"
    assert s.risk.max_position == Decimal("1")
    assert set(s.strategies) == {"sma", "rsi"}


class ThirdPartyCheck:
    @hookimpl
    def tradebot_register_checks(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="staleness-like", factory=lambda c, x: None, config_cls=StalenessLike)]


class DummyExchange:
    @hookimpl
    def tradebot_register_exchanges(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="paper", factory=lambda c, x: None)]


class DummyPolicy:
    @hookimpl
    def tradebot_register_position_policies(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="maintain", factory=lambda c, x: None)]


def test_plugin_tables_validated_against_plugin_config_classes() -> None:
    host = PluginHost()
    host.register(ThirdPartyCheck(), "tp")
    host.register(DummyExchange(), "dx")
    host.register(DummyPolicy(), "dp")
    s = settings_from_dict({"checks": {"staleness-like": {"threshold_s": -5}, "nope": {}}, "strategies": {}})
    issues = validate_plugin_tables(s, host)
    assert "threshold_s must be > 0 (got -5) @ $.checks.staleness-like.threshold_s" in issues
    assert any(i.startswith("no loaded check plugin provides 'nope'") for i in issues)
    ok = settings_from_dict({"checks": {"staleness-like": {"threshold_s": 2}}, "strategies": {}})
    assert validate_plugin_tables(ok, host) == []
    assert ok.plugin_config("check", "staleness-like") == StalenessLike(threshold_s=2.0)


def test_secrets_from_env_and_file_never_shown(tmp_path: Path) -> None:
    f = tmp_path / "secrets.toml"
    f.write_text('kraken_api_key = "KEYFROMFILE"\nkraken_api_secret = "U0VDUkVUU0VDUkVU"\n')
    f.chmod(0o600)
    declared = ("kraken_api_key", "kraken_api_secret")  # as the loaded Kraken plugin declares them
    store = load_secrets(f, environ={"TRADEBOT_KRAKEN_API_KEY": "KEYFROMENV"}, declared=declared)
    assert store["kraken_api_key"] == "KEYFROMENV"
    assert store["kraken_api_secret"] == "U0VDUkVUU0VDUkVU"
    assert "KEYFROMENV" not in repr(store) and "U0VDUkVU" not in str(store)
    assert redact("sig U0VDUkVUU0VDUkVU end") == "sig *** end"
    assert isinstance(store, SecretStore)
    with pytest.raises(ConfigError, match="unknown secret name 'kraken_api_key'"):
        load_secrets(f, environ={})  # no plugin loaded declares it


def test_config_check_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[bot]\nexchange = "paper"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nmax_position = -5\n[backup]\ncount = 0\n")
    run = lambda p: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tradebot", "config", "check", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    r_bad = run(bad)
    assert r_bad.returncode == 2
    assert "max_position must be > 0 (got -5) @ $.risk.max_position" in r_bad.stderr
    assert "count must be > 0 (got 0) @ $.backup.count" in r_bad.stderr
    r_good = run(good)
    assert r_good.returncode == 0, r_good.stderr


def test_config_show_prints_effective_toml(tmp_path: Path) -> None:
    import tomllib

    p = tmp_path / "c.toml"
    p.write_text("[risk]\nmax_orders_per_minute = 7\n")
    r = subprocess.run(
        [sys.executable, "-m", "tradebot", "config", "show", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    assert data["risk"]["max_orders_per_minute"] == 7
    assert data["backup"]["count"] == 24  # a default
    assert isinstance(Settings(), Settings)


def test_halt_policy_must_be_loaded() -> None:
    host = PluginHost()
    host.register(DummyExchange(), "dx")
    s = settings_from_dict({"strategies": {}, "halt": {"position_policy": "close"}})
    issues = validate_plugin_tables(s, host)
    assert any(
        "no loaded position policy named 'close'" in i and i.endswith("@ $.halt.position_policy")
        for i in issues
    )


async def test_halt_takes_effect_even_when_it_cannot_be_saved() -> None:
    from tradebot.core.clock import FakeClock
    from tradebot.core.models import TradingState
    from tradebot.core.trading_state import TradingStateMachine

    class FlakyStore:
        def __init__(self) -> None:
            self.fail = True
            self.saved: list[str] = []

        def load_trading_state(self) -> None:
            return None

        def save_trading_state(
            self, state: str, reason: str, source: str, time: object, *, manual_resume: bool = False
        ) -> None:
            if self.fail:
                raise OSError("disk full")
            self.saved.append(state)

    store, clock = FlakyStore(), FakeClock()
    sm = TradingStateMachine(store=store, clock=clock)
    await sm.halt("drawdown", "check:drawdown")
    assert sm.state is TradingState.HALTED and store.saved == []
    with pytest.raises(OSError, match="disk full"):
        await sm.resume("operator", "cli")  # loosening is never applied unsaved
    assert sm.state is TradingState.HALTED
    store.fail = False
    import asyncio

    await asyncio.sleep(0)  # the retry task starts and waits on the clock
    await clock.advance(1.5)
    assert store.saved == ["halted"]
