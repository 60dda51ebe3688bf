"""What a register hook returns: a named component with its factory and config class."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["ComponentSpec", "secret_env_var"]

_SECRET_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def secret_env_var(name: str) -> str:
    """The environment variable that provides the secret ``name``: ``TRADEBOT_<NAME>``."""
    return f"TRADEBOT_{name.upper()}"


def _as_names(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _secret_names(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    for name in value:
        if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
            raise ValueError(
                f"{attribute.name}: secret names are lower-case letters, digits and _ (got {name!r})"
            )


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

    What a component needs of the user's secrets is declared here too, so a plugin's secrets
    are loaded, checked and redacted exactly as the built-ins' are:

    ``secrets``: the names of the secrets the component needs when it is in use (the exchange
    that trades, a notifier that is on, a check or recovery step that is loaded ...). Each is
    read from the secrets file or ``TRADEBOT_<NAME>``; one missing stops the start-up (and
    ``config check``) with its name and variable, before anything trades.
    ``optional_secrets``: names it reads when set (a webhook's bearer token).
    ``check_secrets(secrets)``: problems with the values it was given (a key in the wrong
    encoding ...), each one line naming the secret, never its value.
    """

    name: str
    factory: Callable[..., Any]
    config_cls: type | None = None
    description: str = ""
    fills_on_paper: bool = attrs.field(default=False, kw_only=True)
    on_simulator: Callable[[Any, str, str], Any] | None = attrs.field(default=None, kw_only=True)
    secrets: tuple[str, ...] = attrs.field(
        default=(), converter=_as_names, validator=_secret_names, kw_only=True
    )
    optional_secrets: tuple[str, ...] = attrs.field(
        default=(), converter=_as_names, validator=_secret_names, kw_only=True
    )
    check_secrets: Callable[[Mapping[str, str]], Sequence[str]] | None = attrs.field(
        default=None, kw_only=True
    )
