"""Configuration of the Kraken exchange plugin (``[exchange.kraken]``).

Credentials are not configuration: they come from the bot's secrets
(``TRADEBOT_KRAKEN_API_KEY`` / ``TRADEBOT_KRAKEN_API_SECRET`` or a secrets file).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from tradebot.api import ge, gt, in_range, non_empty, one_of
from tradebot.api.resilience import BreakerConfig, RateTier, RetryPolicy

__all__ = ["REST_TIERS", "TRADING_TIERS", "KrakenConfig", "endpoint_cost"]

# Kraken's REST counter per API key (max, decay per second), by verification tier.
REST_TIERS: Mapping[str, RateTier] = {
    "starter": RateTier("starter", 15, 0.33),
    "intermediate": RateTier("intermediate", 20, 0.5),
    "pro": RateTier("pro", 20, 1.0),
}

# The matching engine's per-pair order counter, by tier.
TRADING_TIERS: Mapping[str, RateTier] = {
    "starter": RateTier("starter", 60, 1.0),
    "intermediate": RateTier("intermediate", 125, 2.34),
    "pro": RateTier("pro", 180, 3.75),
}

_COST_2 = frozenset({"Ledgers", "QueryLedgers", "TradesHistory", "QueryTrades"})
_TRADING = frozenset({"AddOrder", "AddOrderBatch", "CancelOrder", "CancelAll", "EditOrder", "AmendOrder"})


def endpoint_cost(method: str) -> int:
    """What a private call adds to the REST counter (order calls use the per-pair limiter)."""
    if method in _TRADING:
        return 0
    return 2 if method in _COST_2 else 1


def _url(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise ValueError(f"{attribute.name} must be an http(s) or ws(s) URL (got {value!r})")


@attrs.frozen
class KrakenConfig:
    """Settings of one Kraken connection. Every field has a production-safe default."""

    base_url: str = attrs.field(default="https://api.kraken.com", validator=[non_empty, _url])
    ws_url: str = attrs.field(default="wss://ws.kraken.com/v2", validator=[non_empty, _url])
    user_agent: str = attrs.field(default="tradebot/0.1", validator=non_empty)
    # HTTP
    request_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    connect_timeout_s: float = attrs.field(default=5.0, validator=gt(0))
    pool_limit: int = attrs.field(default=20, validator=gt(0))
    keepalive_timeout_s: float = attrs.field(default=30.0, validator=gt(0))
    dns_cache_ttl_s: int = attrs.field(default=300, validator=ge(0))
    # rate limits
    rate_tier: str = attrs.field(default="starter", validator=one_of(tuple(REST_TIERS)))
    rate_margin: float = attrs.field(default=1.0, validator=in_range(0, 10))
    min_spacing_s: float = attrs.field(default=0.15, validator=in_range(0, 5))
    # retries
    retry_attempts: int = attrs.field(default=3, validator=in_range(1, 20))
    retry_timeout_s: float = attrs.field(default=30.0, validator=gt(0))
    retry_wait_initial_s: float = attrs.field(default=0.2, validator=ge(0))
    retry_wait_max_s: float = attrs.field(default=5.0, validator=gt(0))
    # circuit breakers (one per endpoint group)
    breaker_window: int = attrs.field(default=20, validator=gt(0))
    breaker_min_calls: int = attrs.field(default=5, validator=gt(0))
    breaker_failure_rate: float = attrs.field(default=0.5, validator=in_range(0.01, 1.0))
    breaker_half_open_calls: int = attrs.field(default=2, validator=gt(0))
    breaker_open_wait_s: float = attrs.field(default=5.0, validator=gt(0))
    breaker_open_wait_max_s: float = attrs.field(default=300.0, validator=gt(0))
    # orders
    order_lookup_delay_s: float = attrs.field(default=1.0, validator=in_range(0, 60))
    max_order_sends: int = attrs.field(default=3, validator=in_range(1, 10))
    # state
    nonce_file: str = attrs.field(default="kraken_nonce", validator=non_empty)
    # market data
    ws_heartbeat_timeout_s: float = attrs.field(default=5.0, validator=gt(0))
    ws_reconnect_initial_s: float = attrs.field(default=0.5, validator=gt(0))
    ws_reconnect_max_s: float = attrs.field(default=30.0, validator=gt(0))
    rest_fallback_after_s: float = attrs.field(default=3.0, validator=ge(0))
    rest_fallback_poll_s: float = attrs.field(default=2.0, validator=gt(0))
    # balances
    balance_cache_s: float = attrs.field(default=0.0, validator=ge(0))
    # trading safety: Kraken's dead man's switch, and fills from the executions channel
    dead_mans_switch_s: int = attrs.field(default=60, validator=in_range(0, 86400))
    """While trading, Kraken cancels every open order this long after the bot last checked in
    (CancelAllOrdersAfter); 0 turns the switch off. Disarmed on a clean shutdown."""
    dead_mans_switch_refresh_s: float = attrs.field(default=15.0, validator=gt(0))
    """How often the switch is refreshed (must be well below ``dead_mans_switch_s``)."""
    executions_channel: bool = True
    """Follow orders and fills on the authenticated WebSocket ``executions`` channel; order
    lookups then come from it while it is live, and from REST otherwise."""
    ws_auth_url: str = ""
    """The authenticated WebSocket; empty: ``wss://ws-auth.kraken.com/v2`` with Kraken's public
    ``ws_url``, else ``ws_url`` itself (the simulator serves both on one address)."""
    # market rules (AssetPairs, and the fee tier from TradeVolume when keys are given)
    markets_refresh_s: float = attrs.field(default=60.0, validator=gt(0))
    """How long ``AssetPairs`` (and the fee tier) are kept before Kraken is asked again: a pair
    turned ``cancel_only`` or delisted is known within this time (one public call, and one
    private ``TradeVolume`` call when keys are given, per refresh)."""

    def __attrs_post_init__(self) -> None:
        self.breaker_config()  # validates the combination (min_calls <= window ...)
        if self.ws_auth_url:
            _url(self, attrs.fields(KrakenConfig).ws_auth_url, self.ws_auth_url)
        if self.dead_mans_switch_s and self.dead_mans_switch_refresh_s >= self.dead_mans_switch_s:
            raise ValueError(
                f"dead_mans_switch_refresh_s ({self.dead_mans_switch_refresh_s}) must be below "
                f"dead_mans_switch_s ({self.dead_mans_switch_s}), or the switch fires while the bot runs"
            )

    def breaker_config(self) -> BreakerConfig:
        """The circuit-breaker settings of every endpoint group."""
        return BreakerConfig(
            window_size=self.breaker_window,
            min_calls=self.breaker_min_calls,
            failure_rate=self.breaker_failure_rate,
            half_open_calls=self.breaker_half_open_calls,
            open_wait_s=self.breaker_open_wait_s,
            open_wait_max_s=self.breaker_open_wait_max_s,
        )

    def retry_policy(self) -> RetryPolicy:
        """The retry policy of idempotent calls."""
        return RetryPolicy(
            attempts=self.retry_attempts,
            timeout_s=self.retry_timeout_s,
            wait_initial_s=self.retry_wait_initial_s,
            wait_max_s=self.retry_wait_max_s,
        )

    @property
    def rest_tier(self) -> RateTier:
        return REST_TIERS[self.rate_tier]

    @property
    def trading_tier(self) -> RateTier:
        return TRADING_TIERS[self.rate_tier]
