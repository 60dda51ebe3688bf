"""Which exchange fills on paper, over whose market data: read from what the exchanges declare."""

from __future__ import annotations

from typing import Any

import pytest

from tradebot.app.config import settings_from_dict
from tradebot.core.components import ComponentSpec
from tradebot.core.errors import ConfigError
from tradebot.core.hookspecs import hookimpl
from tradebot.core.paper_trading import PaperPlan, paper_plan
from tradebot.core.plugins import PluginHost
from tradebot.exchanges import paper
from tradebot.exchanges.kraken import plugin as kraken


class _Venue:
    """A third-party exchange that cannot run against the simulator."""

    @hookimpl
    def tradebot_register_exchanges(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="venue", factory=lambda config, context: None)]


class _OtherPaper:
    @hookimpl
    def tradebot_register_exchanges(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="paper2", factory=lambda config, context: None, fills_on_paper=True)]


def _host(*plugins: tuple[object, str]) -> PluginHost:
    host = PluginHost()
    for obj, name in plugins:
        assert host.register(obj, name), host.report.failed
    return host


def _settings(**bot: Any) -> Any:
    return settings_from_dict({"bot": bot})


BASE = ((paper, "paper"), (kraken, "kraken"), (_Venue(), "venue"))


def test_live_trading_has_no_plan() -> None:
    assert paper_plan(_settings(exchange="venue"), _host(*BASE), paper=False) is None


def test_paper_wraps_the_exchange_the_config_names() -> None:
    host = _host(*BASE)
    assert paper_plan(_settings(exchange="venue"), host, paper=True) == PaperPlan(
        "paper", "venue", simulator=False
    )
    assert paper_plan(_settings(exchange="kraken"), host, paper=True) == PaperPlan(
        "paper", "kraken", simulator=True
    )
    live_data = _settings(exchange="kraken", market_data="exchange")
    assert paper_plan(live_data, host, paper=True) == PaperPlan("paper", "kraken", simulator=False)


def test_the_paper_exchange_as_bot_exchange_takes_its_source_from_its_config() -> None:
    host = _host(*BASE)
    assert paper_plan(_settings(exchange="paper"), host, paper=False) == PaperPlan(
        "paper", "kraken", simulator=True
    )
    settings = settings_from_dict(
        {"bot": {"exchange": "paper"}, "exchanges": {"paper": {"market_data": "venue"}}}
    )
    from tradebot.app.config import validate_plugin_tables

    validate_plugin_tables(settings, host)  # fills the exchange tables (strategies are not loaded here)
    assert settings.plugin_config("exchange", "paper").market_data == "venue"
    assert paper_plan(settings, host, paper=True) == PaperPlan("paper", "venue", simulator=False)


@pytest.mark.parametrize(
    ("plugins", "exchange", "expected"),
    [
        (
            ((kraken, "kraken"), (_Venue(), "venue")),
            "venue",
            "--paper needs an exchange plugin that fills on paper",
        ),
        (
            (*BASE, (_OtherPaper(), "paper2")),
            "venue",
            "2 loaded exchange plugins fill on paper (paper, paper2)",
        ),
    ],
)
def test_a_plan_that_cannot_be_made_says_what_to_change(
    plugins: tuple[tuple[object, str], ...], exchange: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        paper_plan(_settings(exchange=exchange), _host(*plugins), paper=True)
    assert expected in caught.value.issues[0]


def test_a_source_that_fills_on_paper_itself_is_refused() -> None:
    host = _host(*BASE, (_OtherPaper(), "paper2"))
    with pytest.raises(ConfigError) as caught:
        paper_plan(_settings(exchange="paper2"), host, paper=False)
    assert "names no exchange plugin to take market data from" in caught.value.issues[0]
    settings = settings_from_dict(
        {"bot": {"exchange": "paper"}, "exchanges": {"paper": {"market_data": "paper2"}}}
    )
    from tradebot.app.config import validate_plugin_tables

    validate_plugin_tables(settings, host)  # fills the exchange tables (strategies are not loaded here)
    with pytest.raises(ConfigError) as caught:
        paper_plan(settings, host, paper=False)
    assert "'paper2' fills on paper itself" in caught.value.issues[0]
