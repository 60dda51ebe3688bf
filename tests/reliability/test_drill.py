"""Every drill scenario, with short timings: the real bot against the simulator, faults injected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradebot.drill import DrillSettings, render_reports, run_scenario, scenario_names

FAST = DrillSettings(
    warmup_s=0.5, fault_s=1.0, outage_s=2.0, after_heal_s=0.3, kill_rounds=2, kill_after_max_s=0.6
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [n for n in scenario_names() if n != "escalation"])  # tests/supervision
async def test_scenario_passes(name: str, tmp_path: Path) -> None:
    report = await run_scenario(name, FAST, workdir=tmp_path)
    assert report.passed, render_reports([report])
    assert report.duplicates == 0 and report.lost == 0 and report.state_intact
    assert report.orders_expected > 0
    if report.scenario.expect_state is not None:
        assert report.scenario.expect_state in report.states
    if report.scenario.exchange != "process":
        assert report.detected_s is not None and report.healed_s is not None


async def test_a_scenario_that_cannot_heal_fails_with_an_explanation(tmp_path: Path) -> None:
    # the feed stays stale far longer than the drill waits: healing must be reported missing
    settings = DrillSettings(warmup_s=0.3, outage_s=4.0, settle_timeout_s=0.5, after_heal_s=0.1)
    from tradebot import drill

    original = drill.SCENARIOS
    never = drill.Scenario("never-heals", "stale for good", "paper", fault="stale", expect_state="halted")
    drill.SCENARIOS = (*original, never)
    try:
        report = await run_scenario(
            "never-heals", attrs_evolve(settings, auto_resume_after_s=30.0), workdir=tmp_path
        )
    finally:
        drill.SCENARIOS = original
    assert not report.passed
    text = render_reports([report])
    assert "never-heals / healed" in text and "did not get back" in text


def attrs_evolve(settings: DrillSettings, **changes: float) -> DrillSettings:
    import attrs

    return attrs.evolve(settings, **changes)


def test_drill_cli_lists_and_rejects_unknown_scenarios() -> None:
    from click.testing import CliRunner

    from tradebot.cli.drill import drill

    listed = CliRunner().invoke(drill, ["--list"])
    assert listed.exit_code == 0
    for name in scenario_names():
        assert name in listed.output
    bad = CliRunner().invoke(drill, ["--scenario", "nope"])
    assert bad.exit_code == 2 and "unknown scenario" in bad.output


def test_drill_config_errors_name_the_path(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tradebot.cli.drill import drill

    cfg = tmp_path / "drill.toml"
    cfg.write_text("[drill]\nbogus = 2\n")
    result = CliRunner().invoke(drill, ["--config", str(cfg), "--scenario", "dns"])
    assert result.exit_code == 2 and "unknown key(s): bogus @ $.drill" in result.output
    cfg.write_text("[drill]\nfault_s = -1\n")
    result = CliRunner().invoke(drill, ["--config", str(cfg), "--scenario", "dns"])
    assert (
        result.exit_code == 2
        and "fault_s must be > 0 (got -1" in result.output
        and "$.drill.fault_s" in result.output
    )


@pytest.mark.timeout(120)
def test_a_reused_workdir_gets_a_fresh_folder_per_drill(tmp_path: Path) -> None:
    """Old orders in a reused --workdir must not turn into "lost" orders in the next verdict."""
    import subprocess
    import sys

    config = tmp_path / "drill.toml"
    config.write_text("[drill]\nwarmup_s = 0.5\nfault_s = 1.0\nafter_heal_s = 0.3\n")
    workdir = tmp_path / "wd"
    for _ in range(2):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tradebot",
                "drill",
                "--scenario",
                "lost-responses",
                "--workdir",
                str(workdir),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 of 1 scenarios passed" in r.stdout
    runs = sorted(p.name for p in workdir.iterdir())
    assert len(runs) == 2 and all(name.startswith("drill-") for name in runs), runs
    assert all((workdir / name / "lost-responses").is_dir() for name in runs)
