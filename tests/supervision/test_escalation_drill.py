"""The drill's escalation scenario: a state store that refuses writes makes the bot escalate;
under --auto-restart a fresh process trades again, with no order lost or doubled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradebot.drill import DrillSettings, render_reports, run_scenario

# every write the bot tries waits for the database lock (seconds each) before it fails
pytestmark = pytest.mark.timeout(240)


async def test_escalation_scenario_passes(tmp_path: Path) -> None:
    report = await run_scenario("escalation", DrillSettings(), workdir=tmp_path)
    assert report.passed, render_reports([report])
    assert report.duplicates == 0 and report.lost == 0 and report.state_intact
    assert report.orders_after_heal > 0 and report.orders_expected > 0
    names = {e.name: e for e in report.expectations}
    assert names["escalated"].ok and names["exit after escalating"].ok and names["fresh child trades"].ok
