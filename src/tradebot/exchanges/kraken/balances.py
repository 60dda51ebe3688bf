"""Balances with a memory: the last known values, served as stale when the API fails."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal

from tradebot.api import Balances, Clock, SystemClock, TradebotError

__all__ = ["BalanceManager"]

log = logging.getLogger(__name__)


class BalanceManager:
    """Fetches balances and remembers the last good answer with its age.

    When a fetch fails with a transient error and an earlier answer exists, that answer is
    returned as ``Balances(stale=True, age_s=...)``; with nothing fetched yet the error is
    raised. Permanent errors (bad key, permission) are always raised: stale numbers must
    not hide a broken configuration. ``cache_s`` > 0 serves a fresh-enough answer without
    calling the exchange.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, Decimal]]],
        *,
        clock: Clock | None = None,
        cache_s: float = 0.0,
    ) -> None:
        self._fetch = fetch
        self._clock: Clock = clock or SystemClock()
        self._cache_s = cache_s
        self._totals: Mapping[str, Decimal] | None = None
        self._as_of: datetime | None = None
        self._fetched_at = 0.0  # monotonic
        self.stale_served = 0
        self.last_error: TradebotError | None = None

    @property
    def age_s(self) -> float | None:
        """Seconds since the last successful fetch (None when never fetched)."""
        return None if self._totals is None else self._clock.monotonic() - self._fetched_at

    async def get(self) -> Balances:
        """Fresh balances, or the last known ones marked stale when the exchange fails."""
        if self._totals is not None and self._as_of is not None and self._cache_s > 0:
            age = self._clock.monotonic() - self._fetched_at
            if age <= self._cache_s:
                return Balances(totals=dict(self._totals), as_of=self._as_of, stale=False, age_s=age)
        try:
            totals = await self._fetch()
        except TradebotError as exc:
            self.last_error = exc
            if not exc.transient or self._totals is None or self._as_of is None:
                raise
            age = self._clock.monotonic() - self._fetched_at
            self.stale_served += 1
            log.warning(
                "balances: exchange unreachable (%s); serving values %.1fs old", type(exc).__name__, age
            )
            return Balances(totals=dict(self._totals), as_of=self._as_of, stale=True, age_s=age)
        self._totals = dict(totals)
        self._as_of = self._clock.now()
        self._fetched_at = self._clock.monotonic()
        self.last_error = None
        return Balances(totals=dict(totals), as_of=self._as_of, stale=False, age_s=0.0)
