"""A plugin's own ``[plugins.<name>]`` table: declared, validated, handed over, and failures contained."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from tradebot.api import PluginContext, gt, hookimpl
from tradebot.app.config import settings_from_dict, validate_plugin_tables
from tradebot.core.context import BotContext
from tradebot.core.errors import PluginError
from tradebot.core.plugins import PluginHost


@attrs.frozen
class GreetConfig:
    times: int = attrs.field(default=1, validator=gt(0))


class Greeter:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.got: tuple[Any, Any] | None = None

    @hookimpl
    def tradebot_plugin_settings(self) -> type:
        return GreetConfig

    @hookimpl
    async def tradebot_configure(self, config: GreetConfig, context: PluginContext) -> None:
        if self.fail:
            raise RuntimeError("cannot greet")
        self.got = (config, context)

    @hookimpl
    def tradebot_startup(self, context: Any) -> None:
        pass


def _host(plugin: object, name: str = "greeter") -> PluginHost:
    host = PluginHost()
    assert host.register(plugin, name), host.report.failed
    return host


async def test_the_validated_table_and_a_read_only_context_reach_the_plugin() -> None:
    plugin = Greeter()
    host = _host(plugin)
    settings = settings_from_dict({"plugins": {"greeter": {"times": 3}}})
    issues = validate_plugin_tables(settings, host)  # no exchange or policy is loaded here: only ours matter
    assert [i for i in issues if "$.plugins" in i] == []
    assert settings.plugin_config("plugin", "greeter") == GreetConfig(times=3)
    await host.configure(settings, BotContext(settings=settings, plugins=host))
    assert plugin.got is not None
    config, view = plugin.got
    assert config == GreetConfig(times=3)
    assert isinstance(view, PluginContext) and view.plugin == "greeter" and view.config == config
    assert view.logger.name == "tradebot.plugin.greeter"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        view.config = None  # type: ignore[misc]


async def test_a_table_problem_is_reported_with_its_path() -> None:
    host = _host(Greeter())
    settings = settings_from_dict({"plugins": {"greeter": {"times": 0, "colour": "red"}}})
    issues = validate_plugin_tables(settings, host)
    assert "unknown key(s): colour @ $.plugins.greeter" in issues
    settings = settings_from_dict({"plugins": {"greeter": {"times": 0}}})
    assert "times must be > 0 (got 0) @ $.plugins.greeter.times" in validate_plugin_tables(settings, host)


async def test_a_plugin_that_cannot_take_its_settings_is_quarantined_or_stops_start_up_when_required() -> (
    None
):
    host = _host(Greeter(fail=True))
    settings = settings_from_dict({})
    validate_plugin_tables(settings, host)
    await host.configure(settings, BotContext(settings=settings, plugins=host))
    assert host.is_quarantined("greeter")
    assert "tradebot_configure failed" in host.quarantined["greeter"]

    host = _host(Greeter(fail=True))
    validate_plugin_tables(settings, host)
    with pytest.raises(PluginError, match="required plugin 'greeter' could not take its settings"):
        await host.configure(settings, BotContext(settings=settings, plugins=host), required=["greeter"])


def test_a_settings_hook_must_return_an_attrs_class() -> None:
    class Bad:
        @hookimpl
        def tradebot_plugin_settings(self) -> type:
            return dict

    host = PluginHost()
    assert not host.register(Bad(), "bad")
    assert "tradebot_plugin_settings must return an attrs class" in host.report.failed["bad"]


def test_a_list_or_value_under_plugins_is_not_taken_for_a_plugin_table() -> None:
    settings = settings_from_dict(
        {"plugins": {"enabled": ["log"], "quarantine_after": 2, "greeter": {"times": 2}}}
    )
    assert settings.plugins.enabled == ["log"] and settings.plugins.quarantine_after == 2
    assert settings.plugin_tables == {"greeter": {"times": 2}}
