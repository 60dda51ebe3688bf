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
from tradebot.core.healing import EXIT_ESCALATE, Failure, Healer
from tradebot.core.models import Alert, AlertLevel
from tradebot.core.plugins import PluginHost
from tradebot.core.quarantine import CriticalPluginWatch
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
BROKEN_NAME = HEADER + "\ndef scale(x):\n    return x * MULTIPLIER  # renamed, but the definition was forgotten\n"
BROKEN_IMPORT = "from tbtest_no_such_dependency import FACTOR\n" + HEADER
FIXED = HEADER + "\nMULTIPLIER = 2  # the forgotten definition\n\n\ndef scale(x):\n    return x * MULTIPLIER\n"


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
    assert failure.caused_by(NameError) and failure.module == "tbtest_healplug" and failure.plugin == "healplug"

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


async def test_importerror_while_broken_then_healed(plugin: tuple[Path, PluginHost, types.ModuleType]) -> None:
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
    core = Failure(error=NameError("x"), kind="NameError", module="tradebot.core.bot")
    assert not action.applies_to(core)
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


async def _recovered(watch: CriticalPluginWatch) -> None:
    for _ in range(200):
        if watch.recoveries:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the quarantine was not handled")


def _watch(host: PluginHost, thing: object, healer: Healer | None, stops: list[tuple[str, int]]) -> CriticalPluginWatch:
    async def probe() -> None:
        thing.value()  # type: ignore[attr-defined]

    alerts: list[Alert] = []
    watch = CriticalPluginWatch(
        host,
        {"healplug": "the exchange"},
        probes={"healplug": probe},
        healer=lambda: healer,
        stop=lambda reason, code: stops.append((reason, code)),
        alert=alerts.append,
    )
    watch.attach()
    watch.alerts = alerts  # type: ignore[attr-defined]
    return watch


async def test_quarantined_critical_plugin_healed_by_reload_keeps_running(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    path, host, module = plugin
    thing = host.build("check", "healplug", None, types.SimpleNamespace(plugins=host))
    healer = Healer([ReloadModuleAction(ReloadModuleConfig(retry_wait_s=0), types.SimpleNamespace(plugins=host))])
    stops: list[tuple[str, int]] = []
    watch = _watch(host, thing, healer, stops)
    write(path, BROKEN_NAME)
    importlib.reload(module)
    await _quarantine_by_faults(host, thing)
    assert isinstance(host.quarantine_cause("healplug"), NameError)
    write(path, FIXED)  # the fix is deployed before the ladder gets to it
    await _recovered(watch)
    assert watch.recoveries == [("healplug", "healed")]
    assert stops == [] and not host.is_quarantined("healplug") and host.quarantine_cause("healplug") is None
    assert thing.value() == 42
    (alert,) = watch.alerts  # type: ignore[attr-defined]
    assert alert.level is AlertLevel.CRITICAL and "healplug" in alert.message and "the exchange" in alert.message
    await watch.close()
    assert watch._on_quarantine not in host.quarantine_listeners


async def test_quarantined_critical_plugin_not_healed_stops_for_a_restart(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    path, host, module = plugin
    thing = host.build("check", "healplug", None, types.SimpleNamespace(plugins=host))
    healer = Healer([ReloadModuleAction(ReloadModuleConfig(retry_wait_s=0), types.SimpleNamespace(plugins=host))])
    stops: list[tuple[str, int]] = []
    watch = _watch(host, thing, healer, stops)
    write(path, BROKEN_NAME)
    importlib.reload(module)
    await _quarantine_by_faults(host, thing)  # and the file stays broken: reloading it does not help
    await _recovered(watch)
    assert watch.recoveries == [("healplug", "stopped")]
    ((reason, code),) = stops
    assert code == EXIT_ESCALATE and "healplug" in reason and "NameError" in reason
    await watch.close()


async def test_quarantine_of_a_plugin_the_bot_can_do_without_is_left_alone(
    plugin: tuple[Path, PluginHost, types.ModuleType],
) -> None:
    _, host, _ = plugin
    stops: list[tuple[str, int]] = []
    watch = CriticalPluginWatch(host, {"paper": "the exchange"}, healer=lambda: None, stop=lambda r, c: stops.append((r, c)))
    watch.attach()
    host.quarantine("healplug", "a strategy kept failing")
    await asyncio.sleep(0.05)
    assert watch.recoveries == [] and stops == []
    host.quarantine("paper", "5 consecutive failures")  # healing off: straight to a restart
    await _recovered(watch)
    assert watch.recoveries == [("paper", "stopped")] and stops[0][1] == EXIT_ESCALATE
    await watch.close()
