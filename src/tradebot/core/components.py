"""What a register hook returns: a named component with its factory and config class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["ComponentSpec"]


@attrs.frozen
class ComponentSpec:
    """One component a plugin provides.

    ``name`` is the stable name the config refers to (``[checks.<name>]``,
    ``exchange = "<name>"``, ``plugin = "<name>"`` for strategy instances ...).
    ``factory(config, context)`` builds the component; ``config`` is an instance of
    ``config_cls`` (an attrs class, validated by the core with cattrs; unknown keys are
    rejected) or ``None`` when ``config_cls`` is ``None``.

    What an exchange can do for paper trading is declared here, never inferred from its name:

    ``fills_on_paper``: the exchange simulates fills and balances over another exchange
    plugin's market data and market rules (the built-in ``paper`` exchange). The bot builds
    that other exchange first, without secrets, and hands it to the factory as
    ``context.extras["market_data_source"]``. Which exchange that is: the one ``[bot]
    exchange`` names under ``tradebot run --paper``; when this exchange is ``[bot] exchange``
    itself, the one its config's ``market_data`` field names.

    ``on_simulator(config, rest_url, ws_url)``: the exchange speaks the protocol of the
    built-in simulator; returns its config (``config`` may be None: the defaults) pointed at a
    simulator at those URLs. Paper trading with ``[bot] market_data = "simulator"`` uses it;
    an exchange without it is paper-traded on its own market data.
    """

    name: str
    factory: Callable[..., Any]
    config_cls: type | None = None
    description: str = ""
    fills_on_paper: bool = attrs.field(default=False, kw_only=True)
    on_simulator: Callable[[Any, str, str], Any] | None = attrs.field(default=None, kw_only=True)
