"""reload-module heals a plugin whose code is broken, once the file is fixed on disk."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import types
from pathlib import Path

import pytest

from tradebot.core.errors import PluginError
from tradebot.core.healing import Failure, Healer
from tradebot.core.models import Alert, AlertLevel
from tradebot.core.plugins import PluginHost
from tradebot.core.quarantine import CriticalPart, CriticalPluginWatch
from tradebot.plugins.recovery.reload_module import ReloadModuleAction, ReloadModuleConfig

HEADER = """
from tradebot.core.components import ComponentSpec
from tradebot.core.hookspecs import hookimpl

class Thing:
    def value(self):
        return scale(21)

@hookimpl
def tradebot_register_checks():
    return [ComponentSpec(name="healplug", factory=lambda config, context: Thing())]
"""

GOOD = HEADER + "\nFACTOR = 2\n\ndef scale(x):\n    return x * FACTOR\n"
BROKEN_NAME = (
    HEADER + "\ndef scale(x):\n    return x * MULTIPLIER  # renamed, but the definition was forgotten\n"
)
BROKEN_IMPORT = "from tbtest_no_such_dependency import FACTOR\n" + HEADER
FIXED = (
    HEADER + "\nMULTIPLIER = 2  # the forgotten definition\n\n\ndef scale(x):\n    return x * MULTIPLIER\n"
)


def write(path: Path, code: str) -> None:
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    importlib.invalidate_caches()


@pytest.fixture
def plugin(extra_site: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, PluginHost, types.ModuleType]:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    path = extra_site / "tbtest_healplug.py"
    write(path, GOOD)
    module = importlib.import_module("tbtest_healplug")
    host = PluginHost()
    assert host.register(module, "healplug")
    return path, host, module


def failure_of(thing: object) -> Failure:
    try:
        thing.value()  # type: ignore[attr-defined]
    except PluginError as exc:

        async def probe() -> None:
            thing.value()  # type: ignore[attr-defined]

        return Failure.from_exception(exc, component="monitor", probe=probe)
    raise AssertionError("the plugin did not fail")


async def test_nameerror_healed_after_fix_on_disk(plugin: tuple[Path, PluginHost, types.ModuleType]) -> None:
    path, host, module = plugin
    ctx = types.SimpleNamespace(plugins=host)
    thing = host.build("check", "healplug", None, ctx)
    assert thing.value() == 42

    write(path, BROKEN_NAME)  # a bad deploy lands and is loaded
    importlib.reload(module)
    failure = failure_of(thing)
    assert (
        failure.caused_by(NameError) and failure.module == "tbtest_healplug" and failure.plugin == "healplug"
    )

    action = ReloadModuleAction(ReloadModuleConfig(retry_wait_s=0), ctx)
    healer = Healer([action])
    assert healer.applicable(failure) == ["reload-module"]
    still_broken = await healer.heal(failure)
    assert not still_broken.healed and "probe still fails" in still_broken.attempts[0].detail

    write(path, FIXED)
    healed = await healer.heal(failure)
    assert healed.healed and healed.action == "reload-module"
    assert thing.value() == 42  # the object built before sees the fixed module
    assert host.components("check")["healplug"].plugin == "healplug"
    assert host.build("check", "healplug", None, ctx).value() == 42
    assert healer.counters.successes == {"reload-module": 1}


async def test_importerror_while_broken_then_healed(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    path, host, module = plugin
    ctx = types.SimpleNamespace(plugins=host)
    write(path, BROKEN_IMPORT)
    try:
        importlib.reload(module)
    except ImportError as exc:
        failure = Failure.from_exception(exc, plugin="healplug")
    assert failure.module == "tbtest_healplug"
    action = ReloadModuleAction(ReloadModuleConfig(retry_wait_s=0), ctx)
    healer = Healer([action])
    first = await healer.heal(failure)
    assert not first.healed
    assert "ModuleNotFoundError" in first.attempts[0].detail  # the reload itself failed
    write(path, FIXED)
    assert (await healer.heal(failure)).healed
    assert host.pm.get_plugin("healplug") is sys.modules["tbtest_healplug"]


def test_never_reloads_core_or_unrelated_errors(plugin: tuple[Path, PluginHost, types.ModuleType]) -> None:
    _, host, _ = plugin
    action = ReloadModuleAction(None, types.SimpleNamespace(plugins=host))
    for framework in (
        "tradebot.core.bus",
        "tradebot.app.bot",
        "tradebot.services.notify",
        "tradebot.resilience.retry",
        "tradebot.drill",
        "tradebot.api._http",
    ):
        core = Failure(error=NameError("x"), kind="NameError", module=framework)
        assert not action.applies_to(core), framework
    other = Failure(error=ValueError("x"), kind="ValueError", module="tbtest_healplug")
    assert not action.applies_to(other)
    unknown = Failure(error=NameError("x"), kind="NameError", module="json")
    assert not action.applies_to(unknown)
    ours = Failure(error=NameError("x"), kind="NameError", module="tbtest_healplug")
    assert action.applies_to(ours)


async def _quarantine_by_faults(host: PluginHost, thing: object) -> None:
    for _ in range(host.quarantine_after):
        with pytest.raises(PluginError):
            thing.value()  # type: ignore[attr-defined]
    assert host.is_quarantined("healplug")


async def _recovered(watch: CriticalPluginWatch, count: int = 1) -> None:
    for _ in range(300):
        if len(watch.recoveries) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the quarantine was not handled: {watch.recoveries}")


class Recorder:
    def __init__(self) -> None:
        self.stops: list[str] = []
        self.alerts: list[Alert] = []


def _watch(host: PluginHost, thing: object, healer: Healer | None, rec: Recorder) -> CriticalPluginWatch:
    part = CriticalPart("the exchange", thing, consequence="the bot cannot place, cancel or look up orders")
    watch = CriticalPluginWatch(
        host, {"healplug": part}, healer=lambda: healer, stop=rec.stops.append, alert=rec.alerts.append
    )
    watch.attach()
    return watch


def _reload_healer(host: PluginHost) -> Healer:
    return Healer(
        [ReloadModuleAction(ReloadModuleConfig(retry_wait_s=0), types.SimpleNamespace(plugins=host))]
    )


async def _quarantined_under_watch(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> tuple[object, Healer, Recorder, CriticalPluginWatch]:
    """A built part of the plugin, watched, then quarantined by a NameError its module now raises."""
    path, host, module = plugin
    thing = host.build("check", "healplug", None, types.SimpleNamespace(plugins=host))
    healer = _reload_healer(host)
    rec = Recorder()
    watch = _watch(host, thing, healer, rec)
    write(path, BROKEN_NAME)
    importlib.reload(module)
    await _quarantine_by_faults(host, thing)
    return thing, healer, rec, watch


async def test_quarantined_critical_plugin_healed_by_reload_keeps_running(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    path, host, module = plugin
    thing = host.build("check", "healplug", None, types.SimpleNamespace(plugins=host))
    rec = Recorder()
    watch = _watch(host, thing, _reload_healer(host), rec)
    write(path, BROKEN_NAME)
    importlib.reload(module)
    await _quarantine_by_faults(host, thing)
    cause = host.quarantine_cause("healplug")
    assert cause is not None and cause.method == "value" and isinstance(cause.error, NameError)
    write(path, FIXED)  # the fix is deployed before the ladder gets to it
    await _recovered(watch)
    assert watch.recoveries == [("healplug", "healed")]
    assert (
        rec.stops == [] and not host.is_quarantined("healplug") and host.quarantine_cause("healplug") is None
    )
    assert thing.value() == 42
    (alert,) = rec.alerts
    assert (
        alert.level is AlertLevel.CRITICAL and "healplug" in alert.message and "the exchange" in alert.message
    )
    await watch.close()
    assert watch._on_quarantine not in host.quarantine_listeners


async def test_quarantined_critical_plugin_not_healed_stops_for_a_restart(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    # the file stays broken: reloading it does not help
    _, healer, rec, watch = await _quarantined_under_watch(plugin)
    await _recovered(watch)
    # the ladder ran, and its probe repeated the very call that failed (value), which still fails
    assert healer.counters.attempts == {"reload-module": 1} and healer.counters.successes == {}
    assert watch.recoveries == [("healplug", "stopped")]
    (reason,) = rec.stops
    assert "healplug" in reason and "NameError" in reason and "could not heal" in reason
    await watch.close()


async def test_plugin_quarantined_again_soon_after_healing_is_not_healed_twice(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    path, host, module = plugin
    thing, healer, rec, watch = await _quarantined_under_watch(plugin)
    write(path, FIXED)
    await _recovered(watch)
    write(path, HEADER + "\ndef scale(x):\n    return x * DIVISOR  # broken again, differently\n")
    importlib.reload(module)
    await _quarantine_by_faults(host, thing)
    await _recovered(watch, 2)
    assert watch.recoveries == [("healplug", "healed"), ("healplug", "stopped")]
    assert healer.counters.attempts == {"reload-module": 1}  # not tried a second time
    assert "quarantined again" in rec.stops[0]
    await watch.close()


async def test_reregister_with_a_failing_register_hook_does_not_quarantine_twice(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    path, host, module = plugin
    thing = host.build("check", "healplug", None, types.SimpleNamespace(plugins=host))
    quarantines: list[str] = []
    host.quarantine_listeners.append(lambda p, r: quarantines.append(p))
    write(path, BROKEN_NAME)
    importlib.reload(module)
    await _quarantine_by_faults(host, thing)
    write(
        path,
        BROKEN_NAME.replace(
            "    return [ComponentSpec", "    raise RuntimeError('hook broke')\n    return [ComponentSpec"
        ),
    )
    assert not host.reregister(importlib.reload(module), "healplug")
    assert quarantines == ["healplug"]  # once, by the faults; not again by the failing hook
    assert host.is_quarantined("healplug") and host.failures("healplug") == host.quarantine_after
    cause = host.quarantine_cause("healplug")
    assert cause is not None and isinstance(cause.error, NameError)


async def test_quarantine_of_a_plugin_the_bot_can_do_without_is_left_alone(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    _, host, _ = plugin
    stops: list[str] = []
    part = CriticalPart("the exchange", object(), consequence="no orders")
    watch = CriticalPluginWatch(host, {"paper": part}, healer=lambda: None, stop=stops.append)
    watch.attach()
    host.quarantine("healplug", "a strategy kept failing")
    await asyncio.sleep(0.05)
    assert watch.recoveries == [] and stops == []
    await asyncio.to_thread(host.quarantine, "paper", "5 consecutive failures")  # from a worker thread
    await _recovered(watch)
    assert watch.recoveries == [("paper", "stopped")] and "healing is off" in stops[0]
    await watch.close()


async def test_watch_handles_an_earlier_quarantine_and_nothing_after_close(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    _, host, _ = plugin
    host.quarantine("paper", "before the watch listened")
    stops: list[str] = []
    part = CriticalPart("the exchange", object(), consequence="no orders")
    watch = CriticalPluginWatch(host, {"paper": part, "kraken": part}, healer=lambda: None, stop=stops.append)
    watch.attach()
    await _recovered(watch)
    assert watch.recoveries == [("paper", "stopped")]
    host.quarantine("kraken", "while stopping")  # reported, then the watch closes before it runs
    await watch.close()
    await asyncio.sleep(0.05)
    assert watch.recoveries == [("paper", "stopped")] and len(stops) == 1
