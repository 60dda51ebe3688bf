"""``tradebot plugins enable/disable`` edit the config in place, keeping comments."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tradebot.cli.main import cli

CONFIG = """\
# my bot: keep this comment
[bot]
exchange = "paper"   # trailing comment stays

[plugins]
# only these
enabled = ["paper", "sma-crossover"]
"""


def test_enable_and_disable_keep_comments_and_layout(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(CONFIG)
    runner = CliRunner()
    r = runner.invoke(cli, ["plugins", "enable", "grid", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    text = cfg.read_text()
    assert (
        "# my bot: keep this comment" in text
        and "# trailing comment stays" in text
        and "# only these" in text
    )
    assert '"grid"' in text
    r = runner.invoke(cli, ["plugins", "disable", "sma-crossover", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    import tomllib

    plugins = tomllib.loads(cfg.read_text())["plugins"]
    assert plugins["enabled"] == ["paper", "sma-crossover", "grid"]  # left as it was
    assert plugins["disabled"] == ["sma-crossover"]
    assert cfg.read_text().startswith(
        '# my bot: keep this comment\n[bot]\nexchange = "paper"   # trailing comment stays\n'
    )


def test_unknown_name_fails_with_near_matches(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(CONFIG)
    r = CliRunner().invoke(cli, ["plugins", "enable", "sma-crosover", "--config", str(cfg)])
    assert r.exit_code != 0
    assert "no plugin named 'sma-crosover'" in r.output and "sma-crossover" in r.output
    assert cfg.read_text() == CONFIG


def test_enable_without_list_starts_from_default_set(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text("# empty config\n")
    r = CliRunner().invoke(cli, ["plugins", "enable", "telegram", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    import tomllib

    enabled = tomllib.loads(cfg.read_text())["plugins"]["enabled"]
    assert "telegram" in enabled and "paper" in enabled and "kraken" in enabled
