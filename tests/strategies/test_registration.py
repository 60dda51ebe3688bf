"""The built-in strategies are discovered through their entry points like any plugin."""

from __future__ import annotations

from tests.strategies.conftest import tick
from tradebot.core.plugins import PluginHost
from tradebot.core.strategy import StrategyContext


def test_each_builtin_strategy_is_its_own_plugin_and_builds_from_defaults() -> None:
    host = PluginHost()
    report = host.load(["sma-crossover", "rsi-reversion", "grid"])
    assert report.failed == {}
    comps = host.components("strategy")
    assert {name: c.plugin for name, c in comps.items()} == {
        "sma-crossover": "sma-crossover",
        "rsi-reversion": "rsi-reversion",
        "grid": "grid",
    }
    for name, comp in comps.items():
        assert comp.spec.description
        assert comp.spec.config_cls is not None
        strategy = comp.spec.factory(comp.spec.config_cls(), StrategyContext(name=name, pairs=["BTC/USD"]))
        assert strategy.blocking is False  # quick pure computations: run inline on the loop
        assert list(strategy.on_event(tick(100))) == []
