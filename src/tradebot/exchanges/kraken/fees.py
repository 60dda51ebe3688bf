"""Kraken's spot fee schedule: the one source for the simulator and the paper exchange.

Percent per fill by the account's 30-day traded volume in USD (Kraken Pro's published
schedule). Live, the Kraken plugin reads each pair's schedule from ``AssetPairs`` and the
account's volume from ``TradeVolume``; the simulator serves this schedule in its
``AssetPairs``, so a paper run against it pays what a live account of that volume pays.
"""

from __future__ import annotations

from tradebot.api import FeeSchedule

__all__ = ["KRAKEN_FEES"]

KRAKEN_FEES = FeeSchedule(
    taker=(
        (0, "0.40"), (10_000, "0.35"), (50_000, "0.24"), (100_000, "0.22"), (250_000, "0.20"),
        (500_000, "0.18"), (1_000_000, "0.16"), (2_500_000, "0.14"), (5_000_000, "0.12"), (10_000_000, "0.10"),
    ),
    maker=(
        (0, "0.25"), (10_000, "0.20"), (50_000, "0.14"), (100_000, "0.12"), (250_000, "0.10"),
        (500_000, "0.08"), (1_000_000, "0.06"), (2_500_000, "0.04"), (5_000_000, "0.02"), (10_000_000, "0"),
    ),
)  # fmt: skip
