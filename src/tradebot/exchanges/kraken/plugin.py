"""Entry point of the ``kraken`` exchange plugin (entry-point group ``tradebot``)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tradebot.api import ComponentSpec, hookimpl
from tradebot.exchanges.kraken.config import KrakenConfig

if TYPE_CHECKING:
    from tradebot.exchanges.kraken.exchange import KrakenExchange

__all__ = ["check_secrets", "create", "on_simulator", "tradebot_register_exchanges"]


def create(config: KrakenConfig | None, context: Any) -> KrakenExchange:
    """Build the exchange from its config and the bot context.

    Credentials come from ``context.extras["secrets"]`` (``kraken_api_key`` /
    ``kraken_api_secret``); without them only public market data is available.
    """
    # imported here so that loading the plugin (e.g. `plugins list`) stays cheap
    from tradebot.exchanges.kraken.exchange import KrakenExchange

    secrets = getattr(context, "extras", {}).get("secrets", {}) or {}
    return KrakenExchange(
        config or KrakenConfig(),
        api_key=secrets.get("kraken_api_key") or None,
        api_secret=secrets.get("kraken_api_secret") or None,
        state_dir=getattr(context, "state_dir", None),
        clock=getattr(context, "clock", None),
    )


def on_simulator(config: KrakenConfig | None, rest_url: str, ws_url: str) -> KrakenConfig:
    """The config pointed at the built-in simulator (which speaks Kraken's protocol)."""
    import attrs

    return attrs.evolve(config or KrakenConfig(), base_url=rest_url, ws_url=ws_url)


def check_secrets(secrets: Mapping[str, str]) -> list[str]:
    """The API secret must be base64, as Kraken's private keys are: else every signed request fails."""
    api_secret = secrets.get("kraken_api_secret")
    if not api_secret:
        return []
    try:
        binascii.a2b_base64(api_secret.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return [
            "the Kraken API secret (kraken_api_secret) is not valid base64, as Kraken's private keys are: every"
            " signed request would fail; copy it again from Kraken's API key page"
        ]
    return []


@hookimpl
def tradebot_register_exchanges() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="kraken",
            factory=create,
            config_cls=KrakenConfig,
            on_simulator=on_simulator,
            secrets=("kraken_api_key", "kraken_api_secret"),
            check_secrets=check_secrets,
            description="Kraken spot: REST + WebSocket v2, idempotent orders, rate limits, breakers, retries",
        )
    ]
