"""Plugin discovery, enabling, validation, isolation, quarantine."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import make_dist
from tradebot.core.components import ComponentSpec
from tradebot.core.errors import PluginError, PluginQuarantined
from tradebot.core.hookspecs import hookimpl
from tradebot.core.plugins import PluginHost, installed_plugins, opt_in_plugins, resolve_enabled

BUILTINS = {
    "kraken": "exchange",
    "paper": "exchange",
    "sma-crossover": "strategy",
    "rsi-reversion": "strategy",
    "grid": "strategy",
    "api-connectivity": None,
    "staleness": None,
    "resources": None,
    "consecutive-losses": None,
    "drawdown": None,
    "api-error-rate": None,
    "volatility": None,
    "reconnect": "recovery",
    "dns": "recovery",
    "resync": "recovery",
    "restart-component": "recovery",
    "reload-module": "recovery",
    "escalate": "recovery",
    "maintain": "policy",
    "close": "policy",
    "reduce": "policy",
    "log": "notifier",
    "telegram": "notifier",
    "webhook": "notifier",
}


def test_every_builtin_has_its_own_entry_point() -> None:
    eps = installed_plugins()
    for name in BUILTINS:
        assert name in eps, name
        assert eps[name].dist is not None and eps[name].dist.name == "tradebot"
    values = [eps[n].value for n in BUILTINS]
    assert len(set(values)) == len(values), "each built-in is its own module"


def test_default_set_excludes_plugins_needing_user_settings() -> None:
    # declared in the package metadata (entry-point group tradebot.opt_in), not known by name
    assert opt_in_plugins() == {"telegram", "webhook"}, "stale metadata? reinstall: pip install -e ."
    enabled = resolve_enabled(None, ["a", "telegram", "b", "webhook"], environ={})
    assert enabled == ["a", "b"]
    assert resolve_enabled(None, ["a", "telegram", "b"], environ={}, opt_in={"a"}) == ["b", "telegram"]


def test_env_var_overrides_config_which_overrides_default() -> None:
    installed = ["a", "b", "c"]
    assert resolve_enabled(["a"], installed, environ={"TRADEBOT_PLUGINS": "b, c"}) == ["b", "c"]
    assert resolve_enabled(["a"], installed, environ={}) == ["a"]
    assert resolve_enabled(None, installed, environ={}) == ["a", "b", "c"]


class GoodCheckPlugin:
    @hookimpl
    def tradebot_register_checks(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="good", factory=lambda cfg, ctx: object())]


def test_register_collects_components_with_their_plugin() -> None:
    host = PluginHost()
    assert host.register(GoodCheckPlugin(), "goodplug")
    comp = host.component("check", "good")
    assert comp.plugin == "goodplug" and comp.category == "check"
    with pytest.raises(PluginError, match="did you mean good"):
        host.component("check", "goood")


class UnknownHookPlugin:
    @hookimpl
    def tradebot_no_such_hook(self) -> None:
        return None


def test_plugin_with_hook_without_spec_is_rejected_naming_plugin_and_hook() -> None:
    host = PluginHost()
    assert not host.register(UnknownHookPlugin(), "oddplug")
    assert "tradebot_no_such_hook" in host.report.failed["oddplug"]
    assert host.pm.get_plugin("oddplug") is None
    with pytest.raises(PluginError) as err:
        PluginHost().register(UnknownHookPlugin(), "oddplug", required=["oddplug"])
    assert err.value.plugin == "oddplug" and err.value.hook == "tradebot_no_such_hook"


class BadArgsPlugin:
    @hookimpl
    def tradebot_alert(self, alert, extra_argument):  # type: ignore[no-untyped-def]
        return None


def test_hook_with_wrong_arguments_is_rejected() -> None:
    host = PluginHost()
    assert not host.register(BadArgsPlugin(), "badargs")
    assert "extra_argument" in host.report.failed["badargs"]


def test_duplicate_component_names_are_rejected() -> None:
    host = PluginHost()
    assert host.register(GoodCheckPlugin(), "first")
    assert not host.register(GoodCheckPlugin(), "second")
    assert "already provided by plugin 'first'" in host.report.failed["second"]


class RaisingAlertPlugin:
    calls = 0

    @hookimpl
    def tradebot_alert(self, alert):  # type: ignore[no-untyped-def]
        RaisingAlertPlugin.calls += 1
        raise RuntimeError("boom")


class RecordingAlertPlugin:
    def __init__(self) -> None:
        self.seen: list[object] = []

    @hookimpl
    async def tradebot_alert(self, alert):  # type: ignore[no-untyped-def]
        self.seen.append(alert)


async def test_raising_hook_is_isolated_attributed_and_quarantined(caplog: pytest.LogCaptureFixture) -> None:
    from tradebot.core.models import Alert, AlertLevel

    host = PluginHost(quarantine_after=3)
    quarantined: list[tuple[str, str]] = []
    host.quarantine_listeners.append(lambda p, r: quarantined.append((p, r)))
    RaisingAlertPlugin.calls = 0
    rec = RecordingAlertPlugin()
    host.register(RaisingAlertPlugin(), "raiser")
    host.register(rec, "recorder")
    alert = Alert(level=AlertLevel.INFO, title="t", message="m", source="test")
    for _ in range(5):
        await host.broadcast("tradebot_alert", alert=alert)
    # the other plugin always got the alert; the raiser stopped being called after 3 failures
    assert len(rec.seen) == 5
    assert RaisingAlertPlugin.calls == 3
    assert host.is_quarantined("raiser") and not host.is_quarantined("recorder")
    assert quarantined and quarantined[0][0] == "raiser" and "boom" in quarantined[0][1]
    assert any("raiser" in r.getMessage() and "tradebot_alert" in r.getMessage() for r in caplog.records)


def test_plugin_object_calls_are_guarded() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.n = 0

        def work(self) -> int:
            self.n += 1
            if self.n <= 2:
                raise ValueError("bad input")
            return self.n

    host = PluginHost(quarantine_after=3)
    obj = host.wrap("flaky", Flaky())
    for _ in range(2):
        with pytest.raises(PluginError) as err:
            obj.work()
        assert err.value.plugin == "flaky" and isinstance(err.value.__cause__, ValueError)
    assert obj.work() == 3  # success resets the consecutive count
    assert host.failures("flaky") == 0


def test_domain_errors_pass_through_without_counting() -> None:
    from tradebot.core.errors import NetworkError

    def fails() -> None:
        raise NetworkError("down")

    host = PluginHost(quarantine_after=1)
    with pytest.raises(NetworkError):
        host.call("ex", "balances", fails)
    assert not host.is_quarantined("ex")


def test_quarantined_plugin_is_not_called() -> None:
    host = PluginHost(quarantine_after=1)
    with pytest.raises(PluginError):
        host.call("p", "m", lambda: 1 / 0)
    with pytest.raises(PluginQuarantined):
        host.call("p", "m", lambda: 1)


# --- real entry points (a distribution installed into a folder on sys.path) ----------


def _install_broken(site: Path) -> None:
    make_dist(
        site,
        "tbtest-broken",
        {"tbtest_broken": "import no_such_module_anywhere\n"},
        {"tbtest-broken": "tbtest_broken"},
    )


def test_plugin_that_fails_to_import_is_reported_and_skipped(extra_site: Path) -> None:
    _install_broken(extra_site)
    assert "tbtest-broken" in {ep.name for ep in metadata.entry_points(group="tradebot")}
    host = PluginHost()
    report = host.load(["tbtest-broken"])
    assert "no_such_module_anywhere" in report.failed["tbtest-broken"]
    assert "ModuleNotFoundError" in report.failed["tbtest-broken"]


def test_required_plugin_that_fails_to_import_stops_start_up(extra_site: Path) -> None:
    _install_broken(extra_site)
    with pytest.raises(PluginError, match="required plugin 'tbtest-broken'"):
        PluginHost().load(["tbtest-broken"], required=["tbtest-broken"])


def test_enabled_but_not_installed_is_reported() -> None:
    host = PluginHost()
    host.load(["tbtest-missing"])
    assert host.report.unknown == ["tbtest-missing"]


def test_only_enabled_plugins_are_imported(extra_site: Path) -> None:
    make_dist(
        extra_site,
        "tbtest-marker",
        {"tbtest_marker": "import sys\nsys.modules.setdefault('tbtest_marker_imported', sys)\n"},
        {"tbtest-marker": "tbtest_marker"},
    )
    PluginHost().load(["tbtest-other"])
    assert "tbtest_marker" not in sys.modules
    PluginHost().load(["tbtest-marker"])
    assert "tbtest_marker" in sys.modules


def test_cli_lists_broken_plugin_with_its_error(extra_site: Path) -> None:
    _install_broken(extra_site)
    out = subprocess.run(
        [sys.executable, "-m", "tradebot", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "TRADEBOT_PLUGINS": "tbtest-broken"},
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [d["name"] for d in data] == ["tbtest-broken"]
    assert "tbtest-broken" in out.stderr and "no_such_module_anywhere" in out.stderr
