"""In-process supervision: restart types, intensity, healing first, one-for-all, shutdown order."""

from __future__ import annotations

import asyncio
import contextlib
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
    perm, trans, temp, trans_ok = (
        Worker(finish=True),
        Worker(crashes=1, finish=True),
        Worker(crashes=1),
        Worker(finish=True),
    )
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
    sup = Supervisor(
        settings, healer=healer, on_escalate=lambda reason, code: escalations.append((reason, code))
    )
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


# --- stops are bounded, cancellations are never lost ---------------------------------------


class _CancelsItsCaller:
    """A recovery action that, like the escalate rung, gets the task running it cancelled
    (the bot's stop) at the very moment it finishes."""

    name = "escalate"
    limits = EscalateConfig()

    def __init__(self) -> None:
        self.victim: asyncio.Task[Any] | None = None

    def applies_to(self, failure: Failure) -> bool:
        return True

    async def recover(self, failure: Failure) -> bool:
        assert self.victim is not None
        self.victim.cancel()
        return True

    async def verify(self, failure: Failure) -> bool:
        return True


async def test_a_cancellation_during_the_escalate_rung_ends_the_healing_task() -> None:
    """asyncio.wait_for on Python 3.11 returned the rung's result and dropped this cancellation."""
    action = _CancelsItsCaller()
    healer = Healer([action])
    task = asyncio.ensure_future(healer.heal(Failure.from_exception(RuntimeError("boom"), component="x")))
    action.victim = task
    await asyncio.wait({task}, timeout=2)
    assert task.done() and task.cancelled()


async def test_stop_is_bounded_when_children_swallow_cancellation() -> None:
    class Stubborn:
        cancels = 0
        released = False  # at the end of the test, so the test's own loop can close

        async def run(self) -> None:
            while not Stubborn.released:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    Stubborn.cancels += 1

    polite = Worker()
    sup = Supervisor(SupervisorSettings(stop_grace_s=0.3))
    await sup.start()
    sup.add(ChildSpec("polite", polite.run))
    sup.add(ChildSpec("stubborn", Stubborn().run))
    sup.add(ChildSpec("last", Worker().run))
    await until(lambda: sup.is_running("stubborn") and polite.starts == 1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    stuck = await sup.stop()
    took = loop.time() - began
    assert stuck == ["stubborn"]
    assert took < 0.3 + 0.25 + 0.2, took  # grace + the last moment for the rest + scheduling
    assert polite.cancelled == 1  # cancelled and ended, although the stubborn child was before it
    assert Stubborn.cancels >= 1
    Stubborn.released = True
    for task in asyncio.all_tasks():
        if task.get_name() == "stubborn":
            task.cancel()


async def test_stop_is_bounded_when_the_watcher_itself_hangs() -> None:
    """The supervisor's own watcher stuck in a heal that ignores its cancellation."""
    entered = asyncio.Event()

    class Hangs:
        name = "restart-component"
        limits = RestartComponentConfig()

        def applies_to(self, failure: Failure) -> bool:
            return True

        released = False

        async def recover(self, failure: Failure) -> bool:
            entered.set()
            while not self.released:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)
            return False

        async def verify(self, failure: Failure) -> bool:
            return False

    hangs = Hangs()
    sup = Supervisor(SupervisorSettings(stop_grace_s=0.3), healer=Healer([hangs]))
    await sup.start()
    sup.add(ChildSpec("a", Worker(crashes=1).run))
    await asyncio.wait_for(entered.wait(), 2)
    began = asyncio.get_running_loop().time()
    stuck = await sup.stop()
    assert asyncio.get_running_loop().time() - began < 0.8
    assert stuck == ["supervisor"]
    hangs.released = True
    for task in asyncio.all_tasks():
        if task.get_name() == "supervisor":
            task.cancel()


async def test_cancel_and_wait_never_swallows_the_callers_cancellation() -> None:
    from tradebot.core.tasks import cancel_and_wait

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)  # still ending when the caller is cancelled

    async def stopper() -> str:
        inner = asyncio.ensure_future(slow_to_end())
        await asyncio.sleep(0)
        await cancel_and_wait(inner)
        return "ran on past its own cancellation"

    task = asyncio.ensure_future(stopper())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    assert task.cancelled()


def test_stop_grace_setting_and_its_old_name() -> None:
    assert SupervisorSettings().stop_grace_s == 10.0
    assert SupervisorSettings(shutdown_timeout_s=4).stop_grace_s == 4
    assert SupervisorSettings(stop_grace_s=3, shutdown_timeout_s=3).stop_grace_s == 3
    with pytest.raises(ValueError, match="shutdown_timeout_s is the old name of stop_grace_s"):
        SupervisorSettings(stop_grace_s=3, shutdown_timeout_s=4)


def test_the_old_setting_name_is_read_from_a_config_file(tmp_path: Any) -> None:
    from tradebot.app.config import load_settings

    cfg = tmp_path / "tradebot.toml"
    cfg.write_text("[supervisor]\nshutdown_timeout_s = 4\n")
    assert load_settings(cfg).section("supervisor").stop_grace_s == 4
    cfg.write_text("[supervisor]\nstop_grace_s = 2\nshutdown_timeout_s = 4\n")
    from tradebot.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "shutdown_timeout_s is the old name of stop_grace_s" in str(err.value) + " ".join(err.value.issues)


async def test_the_heartbeat_stops_when_the_bot_is_no_longer_alive(tmp_path: Any) -> None:
    from tradebot.core.sdnotify import Heartbeat

    alive = True
    beat = Heartbeat(tmp_path / "hb", interval_s=0.01, alive=lambda: alive)
    task = asyncio.ensure_future(beat.run())
    await until(lambda: beat.beats >= 3)
    alive = False
    await asyncio.sleep(0.05)
    frozen = beat.beats
    await asyncio.sleep(0.1)
    assert beat.beats == frozen
    task.cancel()
