"""Kraken's rate limiters: a counter that grows per call and decays continuously."""

from __future__ import annotations

import attrs

from tradebot.core.clock import Clock

__all__ = [
    "RATE_TIERS",
    "DecayCounter",
    "RateTier",
    "amend_age_penalty",
    "edit_age_penalty",
    "order_age_penalty",
]


@attrs.frozen
class RateTier:
    """Limits of one Kraken verification tier (REST counter and matching-engine counter)."""

    rest_max: float
    rest_decay: float
    order_max: float
    order_decay: float


RATE_TIERS: dict[str, RateTier] = {
    "starter": RateTier(15, 0.33, 60, 1.0),
    "intermediate": RateTier(20, 0.5, 125, 2.34),
    "pro": RateTier(20, 1.0, 180, 3.75),
}


class DecayCounter:
    """A counter of cost units that loses ``decay`` units per second, capped at ``maximum``.

    A call is admitted when the counter plus its cost stays within the maximum; a refused
    call adds nothing (so a client that backs off recovers at the decay rate).
    """

    def __init__(self, maximum: float, decay: float, clock: Clock) -> None:
        self.maximum = maximum
        self.decay = decay
        self._clock = clock
        self._level = 0.0
        self._at = clock.monotonic()

    @property
    def level(self) -> float:
        now = self._clock.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.decay)
        self._at = now
        return self._level

    def force_add(self, cost: float) -> None:
        """Count ``cost`` units whatever the level (the level may pass the maximum)."""
        self._level = self.level + cost

    def try_add(self, cost: float, *, maximum: float | None = None, decay: float | None = None) -> bool:
        """Admit a call of ``cost`` units; ``maximum``/``decay`` override the limits (faults)."""
        if decay is not None and decay != self.decay:
            _ = self.level  # settle the decay so far at the old rate
            self.decay = decay
        level = self.level
        if level + cost > (self.maximum if maximum is None else maximum):
            return False
        self._level = level + cost
        return True


def order_age_penalty(age_s: float) -> int:
    """Extra matching-engine cost of cancelling an order ``age_s`` seconds after it was placed."""
    for limit, penalty in ((5, 8), (10, 6), (15, 5), (45, 4), (90, 2), (300, 1)):
        if age_s < limit:
            return penalty
    return 0


def edit_age_penalty(age_s: float) -> int:
    """Extra cost of EditOrder on an order created or amended ``age_s`` seconds ago."""
    for limit, penalty in ((5, 6), (10, 5), (15, 4), (45, 2), (90, 1)):
        if age_s < limit:
            return penalty
    return 0


def amend_age_penalty(age_s: float) -> int:
    """Extra cost of AmendOrder (cheaper than cancel + add: the order keeps its place)."""
    for limit, penalty in ((5, 3), (10, 2), (15, 1)):
        if age_s < limit:
            return penalty
    return 0
