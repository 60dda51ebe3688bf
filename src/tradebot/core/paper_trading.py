"""How a paper run is put together: which exchange fills on paper, over whose market data.

Paper trading wraps an exchange plugin: the plugin's market data stream and ``markets()``
drive an exchange that fills on paper (one whose :class:`~tradebot.core.components.ComponentSpec`
declares ``fills_on_paper``, the built-in ``paper``). Nothing here knows a plugin by name:

* ``tradebot run --paper``: the source is the exchange ``[bot] exchange`` names, the fills
  are the loaded paper-filling exchange's;
* ``[bot] exchange`` names a paper-filling exchange itself: the source is the exchange its
  config's ``market_data`` field names (``[exchanges.paper] market_data``, ``kraken`` by
  default).

With ``[bot] market_data = "simulator"`` a source that can run against the built-in
simulator (its spec's ``on_simulator``) is pointed at it; any other source trades on its own
market data.
"""

from __future__ import annotations

from typing import Any

import attrs

from tradebot.core.errors import ConfigError

__all__ = ["PaperPlan", "paper_plan"]


@attrs.frozen
class PaperPlan:
    """A paper run: ``engine`` fills orders over the market data and rules of ``source``."""

    engine: str
    """The exchange plugin that fills on paper."""
    source: str
    """The exchange plugin whose market data and ``markets()`` the fills follow."""
    simulator: bool
    """The source runs against the built-in simulator (``[bot] market_data = "simulator"``)."""


def paper_plan(settings: Any, host: Any, *, paper: bool) -> PaperPlan | None:
    """The paper run these settings ask for (``paper``: ``--paper``); None for live trading.

    A plan that cannot be made (no paper-filling exchange loaded, two of them, a source that
    fills on paper itself) is a :class:`ConfigError` saying what to change.
    """
    exchanges = host.components("exchange")
    chosen: str = settings.bot.exchange
    comp = exchanges.get(chosen)
    if comp is not None and comp.spec.fills_on_paper:
        engine = chosen
        config = settings.plugin_config("exchange", chosen)
        if config is None and comp.spec.config_cls is not None:
            config = comp.spec.config_cls()
        source = getattr(config, "market_data", None)  # read once, where the run is planned
        where = f"$.exchanges.{chosen}.market_data"
        if not isinstance(source, str) or not source:
            raise _cannot(
                f"the exchange {chosen!r} fills on paper but names no exchange plugin to take market data from; "
                f"set [exchanges.{chosen}] market_data to one @ {where}"
            )
    elif not paper:
        return None
    else:
        engines = sorted(n for n, c in exchanges.items() if c.spec.fills_on_paper)
        if not engines:
            raise _cannot(
                "--paper needs an exchange plugin that fills on paper, and none is loaded; enable the built-in one "
                "(tradebot plugins enable paper) @ $.plugins"
            )
        if len(engines) > 1:
            raise _cannot(
                f"--paper: {len(engines)} loaded exchange plugins fill on paper ({', '.join(engines)}); set [bot] "
                "exchange to the one to use, or disable the others @ $.bot.exchange"
            )
        engine, source, where = engines[0], chosen, "$.bot.exchange"
    src = exchanges.get(source)
    if src is not None and src.spec.fills_on_paper:
        raise _cannot(
            f"paper trading takes market data from an exchange plugin that trades for real, and {source!r} fills on "
            f"paper itself; name another exchange plugin @ {where}"
        )
    simulator = (
        settings.bot.market_data == "simulator" and src is not None and src.spec.on_simulator is not None
    )
    return PaperPlan(engine=engine, source=source, simulator=simulator)


def _cannot(issue: str) -> ConfigError:
    return ConfigError("paper trading cannot be set up", [issue])
