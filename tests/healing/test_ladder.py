"""The healing ladder: order, first success wins, limits, verification, counters, alerts."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from tradebot.core.clock import FakeClock
from tradebot.core.errors import ConnectionFailed, DNSError
from tradebot.core.healing import Failure, Healer, HealingSettings, RecoveryLimits, failing_module
from tradebot.core.models import Alert


@attrs.define
class Step:
    """A recovery action whose behaviour a test sets."""

    name: str
    applies: bool = True
    recovers: bool = True
    verifies: bool = True
    raises: BaseException | None = None
    escalates: bool = False
    limits: RecoveryLimits = attrs.field(factory=lambda: RecoveryLimits(retry_wait_s=0))
    log: list[str] = attrs.field(factory=list)

    def applies_to(self, failure: Failure) -> bool:
        return self.applies

    async def recover(self, failure: Failure) -> bool:
        self.log.append(self.name)
        if self.raises is not None:
            raise self.raises
        return self.recovers

    async def verify(self, failure: Failure) -> bool:
        return self.verifies


def ladder(*steps: Step, **kw: Any) -> tuple[Healer, list[str]]:
    calls: list[str] = []
    for s in steps:
        s.log = calls
    return Healer(list(steps), **kw), calls


async def test_ladder_tries_in_order_and_stops_at_first_verified_success() -> None:
    healer, calls = ladder(
        Step("reconnect", verifies=False),
        Step("dns", applies=False),
        Step("resync", raises=RuntimeError("boom")),
        Step("restart-component"),
        Step("escalate"),
    )
    result = await healer.heal(Failure.from_exception(ConnectionFailed("dropped", host="h")))
    assert result.healed and result.action == "restart-component"
    assert calls == ["reconnect", "resync", "restart-component"]
    assert [r.outcome for r in result.attempts] == ["not-healed", "error", "healed"]
    assert "RuntimeError: boom" in result.attempts[1].detail
    c = healer.counters.as_dict()
    assert c["attempts"] == {"reconnect": 1, "resync": 1, "restart-component": 1}
    assert c["successes"] == {"restart-component": 1}
    assert c["failures"] == {"reconnect": 1, "resync": 1}
    assert c["healed"] == 1 and c["unhealed"] == 0


async def test_probe_must_pass_for_success() -> None:
    probes = {"n": 0}

    async def probe() -> None:
        probes["n"] += 1
        if probes["n"] == 1:
            raise ConnectionFailed("still down")

    healer, calls = ladder(Step("reconnect"), Step("restart-component"))
    result = await healer.heal(Failure.from_exception(ConnectionFailed("x"), probe=probe))
    assert calls == ["reconnect", "restart-component"]
    assert result.action == "restart-component"
    assert "probe still fails" in result.attempts[0].detail


async def test_attempts_per_failure_and_limit_per_window() -> None:
    clock = FakeClock()
    flaky = Step(
        "reconnect",
        verifies=False,
        limits=RecoveryLimits(attempts=3, max_per_window=4, window_s=60, retry_wait_s=0),
    )
    healer, calls = ladder(flaky, clock=clock)
    r1 = await healer.heal(Failure(kind="stale-market-data"))
    assert not r1.healed and calls == ["reconnect"] * 3
    r2 = await healer.heal(Failure(kind="stale-market-data"))
    # one more use left in the window, then the limit skips the action
    assert [a.outcome for a in r2.attempts] == ["not-healed", "skipped-limit"]
    assert healer.counters.skipped == {"reconnect": 1}
    await clock.advance(61)
    r3 = await healer.heal(Failure(kind="stale-market-data"))
    assert [a.outcome for a in r3.attempts] == ["not-healed"] * 3


async def test_unhealed_and_frequent_healing_raise_alerts() -> None:
    alerts: list[Alert] = []
    clock = FakeClock()
    healer, _ = ladder(
        Step("reconnect"),
        clock=clock,
        alert=alerts.append,
        settings=HealingSettings(alert_after=3, alert_window_s=60),
    )
    for _ in range(3):
        await healer.heal(Failure(kind="x"))
    assert alerts == []
    await healer.heal(Failure(kind="x"))
    assert [a.title for a in alerts] == ["frequent healing"]
    await healer.heal(Failure(kind="x"))
    assert len(alerts) == 1  # one alert per window
    healer.actions[0].applies = False  # type: ignore[attr-defined]
    await healer.heal(Failure(kind="x"))
    assert alerts[-1].title == "healing failed" and alerts[-1].level.value == "critical"


async def test_action_timeout_is_an_error_not_a_hang() -> None:
    import asyncio

    class Slow(Step):
        async def recover(self, failure: Failure) -> bool:
            await asyncio.sleep(10)
            return True

    healer = Healer(
        [Slow("reconnect"), Step("escalate", escalates=True)], settings=HealingSettings(action_timeout_s=0.05)
    )
    result = await healer.heal(Failure(kind="x"))
    assert result.action == "escalate" and result.escalated
    assert "timed out" in result.attempts[0].detail


async def test_a_step_escalates_because_it_says_so_not_because_of_its_name() -> None:
    async def still_broken() -> None:
        raise ConnectionFailed("still down", host="h")

    failure = Failure(kind="x", probe=still_broken)
    named = await Healer([Step("escalate")]).heal(failure)  # the name alone: checked with the probe
    assert not named.healed and not named.escalated
    assert "probe still fails" in named.attempts[0].detail
    declared = await Healer([Step("page-the-operator", escalates=True)]).heal(failure)
    assert declared.healed and declared.escalated and declared.action == "page-the-operator"


def test_failure_from_exception_keeps_context_and_module() -> None:
    try:
        raise DNSError("no such host", host="api.example.invalid", endpoint="public/Time")
    except DNSError as exc:
        f = Failure.from_exception(exc, component="market-data")
    assert f.context["host"] == "api.example.invalid"
    assert f.module == __name__
    assert f.caused_by(DNSError) and not f.caused_by(ConnectionFailed)
    assert "component=market-data" in f.describe()
    assert failing_module(None) is None


def test_ladder_settings_reject_duplicates_and_empty() -> None:
    with pytest.raises(ValueError, match="twice"):
        HealingSettings(ladder=["dns", "dns"])
    with pytest.raises(ValueError, match="ladder must not be empty"):
        HealingSettings(ladder=[])
