"""Cheap latency histograms for hot paths: a bisect and three additions per observation.

An exchange client records every request's duration (by endpoint group and outcome) and
how long a private request waited for its turn; ``/metrics`` renders them as Prometheus
histograms (:mod:`tradebot.services.metrics`). Recording costs far less than an OpenTelemetry
histogram call, which matters on the order path.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import attrs

__all__ = ["LATENCY_BUCKETS_S", "Histogram", "LatencyHistograms"]

LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@attrs.define
class Histogram:
    """Counts per bucket (the last one is above every bound), the sum and the count."""

    bounds: tuple[float, ...]
    buckets: list[int]
    sum: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, [0] * (len(bounds) + 1))

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class LatencyHistograms:
    """One :class:`Histogram` per key (a tuple of label values, e.g. ``(group, outcome)``).

    ``labels`` names the key's parts, for exposition.
    """

    def __init__(self, labels: tuple[str, ...], bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.labels = labels
        self.bounds = bounds
        self._by_key: dict[tuple[str, ...], Histogram] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        hist = self._by_key.get(key)
        if hist is None:
            hist = self._by_key[key] = Histogram.empty(self.bounds)
        hist.observe(value)

    def seed(self, key: tuple[str, ...]) -> None:
        """Make ``key`` appear (at zero) before anything was observed."""
        if key not in self._by_key:
            self._by_key[key] = Histogram.empty(self.bounds)

    def items(self) -> Iterator[tuple[dict[str, str], Histogram]]:
        """(labels, histogram) for every key seen or seeded."""
        for key, hist in list(self._by_key.items()):
            yield dict(zip(self.labels, key, strict=True)), hist
