"""Fixtures of the Kraken tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import stamina

from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.exchange import KrakenExchange
from tradebot.resilience.ratelimit import RateTier, RequestRateLimiter

from .fake_kraken import API_KEY, API_SECRET, FakeKraken


@pytest.fixture(autouse=True)
def fast_retries() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


@pytest.fixture
async def server() -> AsyncIterator[FakeKraken]:
    async with FakeKraken() as srv:
        yield srv


def make_exchange(
    base_url: str,
    state_dir: Path | None,
    *,
    api_key: str = API_KEY,
    api_secret: str = API_SECRET,
    fast_limits: bool = True,
    **overrides: Any,
) -> KrakenExchange:
    """An exchange with test-friendly timeouts; ``fast_limits`` swaps in a fast-draining counter."""
    settings: dict[str, Any] = dict(
        base_url=base_url,
        min_spacing_s=0.0,
        request_timeout_s=1.0,
        connect_timeout_s=1.0,
        order_lookup_delay_s=0.0,
        breaker_min_calls=4,
        breaker_window=4,
        breaker_open_wait_s=0.2,
    )
    settings.update(overrides)
    limiter = (
        RequestRateLimiter.build(RateTier("test", 20, 100.0), min_spacing_s=0.0) if fast_limits else None
    )
    return KrakenExchange(
        KrakenConfig(**settings),
        api_key=api_key,
        api_secret=api_secret,
        state_dir=state_dir,
        rate_limiter=limiter,
    )
