"""In-process supervision: restart types, intensity, healing first, one-for-all, shutdown order."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from typing import Any

import pytest

from tradebot.core.errors import ConnectionFailed
from tradebot.core.healing import Failure, Healer
from tradebot.core.supervisor import ChildSpec, RestartType, Supervisor, SupervisorSettings
from tradebot.plugins.recovery.escalate import EscalateAction, EscalateConfig
from tradebot.plugins.recovery.restart_component import RestartComponentAction, RestartComponentConfig


async def until(cond: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Worker:
    """A child whose runs crash a set number of times, then run until cancelled."""

    def __init__(self, crashes: int = 0, exc: BaseException | None = None, finish: bool = False) -> None:
        self.crashes = crashes
        self.exc = exc or RuntimeError("worker bug")
        self.finish = finish
        self.starts = 0
        self.cancelled = 0

    async def run(self) -> None:
        self.starts += 1
        await asyncio.sleep(0)
        if self.starts <= self.crashes:
            exc = self.exc
            raise type(exc)(*exc.args, **getattr(exc, "context", {}))  # a fresh error per crash
        if self.finish:
            return
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled += 1


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    a, b = Worker(crashes=2), Worker()
    async with Supervisor(SupervisorSettings(max_restarts=5)) as sup:
        sup.add(ChildSpec("a", a.run))
        sup.add(ChildSpec("b", b.run))
        await until(lambda: a.starts == 3 and sup.is_running("a"))
        assert b.starts == 1
        assert [s.restarts for s in sup.status()] == [2, 0]
        assert "worker bug" in (sup.status()[0].last_error or "")
    assert a.cancelled == 1 and b.cancelled == 1


async def test_restart_types() -> None:
    perm, trans, temp, trans_ok = Worker(finish=True), Worker(crashes=1, finish=True), Worker(crashes=1), Worker(finish=True)
    async with Supervisor(SupervisorSettings(max_restarts=3)) as sup:
        sup.add(ChildSpec("perm", perm.run))  # finishes normally: permanent restarts it anyway
        sup.add(ChildSpec("trans", trans.run, restart=RestartType.TRANSIENT))
        sup.add(ChildSpec("temp", temp.run, restart=RestartType.TEMPORARY))
        sup.add(ChildSpec("trans-ok", trans_ok.run, restart=RestartType.TRANSIENT))
        await until(lambda: perm.starts >= 2 and trans.starts == 2)
        await asyncio.sleep(0.05)
        assert temp.starts == 1 and not sup.has_child("temp")
        assert trans_ok.starts == 1 and not sup.has_child("trans-ok")
        assert not sup.has_child("trans")  # crashed once, restarted, then finished normally


async def test_restart_intensity_escalates_with_exit_code_75() -> None:
    escalations: list[tuple[str, int]] = []
    alerts: list[Any] = []
    w = Worker(crashes=100)
    sup = Supervisor(
        SupervisorSettings(max_restarts=3, period_s=60),
        on_escalate=lambda reason, code: escalations.append((reason, code)),
        alert=alerts.append,
    )
    async with sup:
        sup.add(ChildSpec("strategies", w.run))
        await until(lambda: bool(escalations))
    assert w.starts == 4  # first run + 3 restarts, the 4th crash escalates
    assert escalations[0][1] == 75 and "restart intensity" in escalations[0][0]
    assert alerts and alerts[0].title == "restart intensity exceeded"


async def _escalate_a_crashing_child(
    settings: SupervisorSettings, actions: Callable[[Any], list[Any]]
) -> tuple[Healer, list[tuple[str, int]]]:
    """Run a child that always crashes under ``settings`` and a healer of ``actions(ctx)``
    until the supervisor escalates; the healer and the (reason, exit code) escalations."""
    escalations: list[tuple[str, int]] = []
    ctx = types.SimpleNamespace(extras={})
    healer = Healer(actions(ctx))
    sup = Supervisor(settings, healer=healer, on_escalate=lambda reason, code: escalations.append((reason, code)))
    ctx.supervisor = sup
    w = Worker(crashes=100, exc=ConnectionFailed("connection reset", host="127.0.0.1"))
    async with sup:
        sup.add(ChildSpec("market-data", w.run))
        await until(lambda: bool(escalations), timeout=3)
    return healer, escalations


async def test_crash_goes_through_the_healer_and_intensity_reaches_escalate() -> None:
    """restart-component restarts the child; once intensity is exceeded it fails and escalate runs."""
    healer, escalations = await _escalate_a_crashing_child(
        SupervisorSettings(max_restarts=2, period_s=60),
        lambda ctx: [
            RestartComponentAction(RestartComponentConfig(settle_s=0.02, retry_wait_s=0), ctx),
            EscalateAction(None, ctx),
        ],
    )
    actions = [r.action for r in healer.history]
    outcomes = [[a.outcome for a in r.attempts] for r in healer.history]
    assert healer.counters.attempts["restart-component"] == 3
    assert healer.counters.failures["restart-component"] == 3  # restarted child crashed again / limit hit
    assert actions[-1] == "escalate" and escalations[0][1] == 75
    assert outcomes[-1][-1] == "healed"
    assert "market-data" in escalations[0][0]


@pytest.mark.parametrize(("configured", "own", "expected"), [(76, None, 76), (76, 80, 80), (75, None, 75)])
# own None: the rung built with no config at all, as a ladder without [recovery.escalate] has it
async def test_the_escalate_rung_stops_with_the_one_configured_exit_code(
    configured: int, own: int | None, expected: int
) -> None:
    """``[supervisor] escalate_exit_code`` is the escalation code; the rung's own setting overrides it."""
    _, escalations = await _escalate_a_crashing_child(
        SupervisorSettings(max_restarts=0, period_s=60, escalate_exit_code=configured),
        lambda ctx: [EscalateAction(None if own is None else EscalateConfig(exit_code=own), ctx)],
    )
    assert escalations[0][1] == expected


async def test_healed_crash_is_restarted_once() -> None:
    ctx = types.SimpleNamespace(extras={})
    healer = Healer([RestartComponentAction(RestartComponentConfig(settle_s=0.02), ctx)])
    sup = Supervisor(SupervisorSettings(max_restarts=5), healer=healer)
    ctx.supervisor = sup
    w = Worker(crashes=1)
    async with sup:
        sup.add(ChildSpec("executor", w.run))
        await until(lambda: healer.counters.healed == 1)
        await asyncio.sleep(0.05)
        assert w.starts == 2 and sup.is_running("executor") and sup.restarts_total == 1


async def test_one_for_all_restarts_every_child() -> None:
    a, b = Worker(crashes=1), Worker()
    async with Supervisor(SupervisorSettings(strategy="one_for_all")) as sup:
        sup.add(ChildSpec("a", a.run))
        sup.add(ChildSpec("b", b.run))
        await until(lambda: a.starts == 2 and b.starts == 2)
        assert sup.is_running("a") and sup.is_running("b")


async def test_unhealed_crash_stops_the_bot_unless_infinite() -> None:
    stops: list[int] = []
    healer = Healer([])
    sup = Supervisor(healer=healer, on_escalate=lambda r, code: stops.append(code), restart_unhealed=False)
    w = Worker(crashes=1)
    async with sup:
        sup.add(ChildSpec("strategies", w.run))
        await until(lambda: bool(stops))
    assert stops == [1] and w.starts == 1


async def test_shutdown_cancels_in_reverse_order_within_bound() -> None:
    order: list[str] = []

    def child(name: str, stubborn: bool = False) -> Any:
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                order.append(name)
                if stubborn:
                    await asyncio.sleep(0)  # still stops; the bound is what matters

        return run

    sup = Supervisor(SupervisorSettings(shutdown_timeout_s=0.5))
    await sup.start()
    for n in ("market-data", "executor", "strategies"):
        sup.add(ChildSpec(n, child(n)))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sup.stop()
    assert order == ["strategies", "executor", "market-data"]
    assert loop.time() - t0 < 0.5


async def test_failure_from_child_names_component() -> None:
    seen: list[Failure] = []

    class Recorder:
        name = "record"
        from tradebot.core.healing import RecoveryLimits

        limits = RecoveryLimits()

        def applies_to(self, failure: Failure) -> bool:
            seen.append(failure)
            return False

        async def recover(self, failure: Failure) -> bool:
            return False

        async def verify(self, failure: Failure) -> bool:
            return False

    sup = Supervisor(SupervisorSettings(max_restarts=1), healer=Healer([Recorder()]))
    w = Worker(crashes=1)
    async with sup:
        sup.add(ChildSpec("monitor", w.run, plugin="staleness"))
        await until(lambda: w.starts == 2)
    assert seen[0].component == "monitor" and seen[0].plugin == "staleness"
    assert seen[0].module == __name__
