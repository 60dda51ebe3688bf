"""Kraken wire conventions shared by the REST and WebSocket sides of the simulator."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

__all__ = ["KrakenRejection", "decimal_places", "fmt_decimal", "quantize", "rfc3339"]


class KrakenRejection(Exception):
    """A request the simulated exchange refuses with one Kraken error string.

    ``error`` is exactly what goes into the response's ``error`` list
    (``"EOrder:Insufficient funds"``, ``"EGeneral:Invalid arguments"`` ...).
    """

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def decimal_places(places: int) -> Decimal:
    """``Decimal('0.01')`` for ``places == 2``."""
    return Decimal(1).scaleb(-places)


def quantize(value: Decimal, places: int, *, down: bool = False) -> Decimal:
    """Round ``value`` to ``places`` decimals (banker's rounding, or toward zero)."""
    return value.quantize(decimal_places(places), rounding=ROUND_DOWN if down else ROUND_HALF_EVEN)


def fmt_decimal(value: Decimal, places: int) -> str:
    """A Kraken REST number: a string with exactly ``places`` decimals."""
    return f"{quantize(value, places):.{places}f}"


def rfc3339(when: datetime) -> str:
    """``2023-09-25T09:04:31.742648Z`` as WebSocket v2 writes timestamps."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
