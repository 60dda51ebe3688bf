"""attrs validators whose messages name the rule and the value.

The config loader adds the path, giving errors such as
``threshold_s must be > 0 (got -5) @ $.checks.staleness.threshold_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

import attrs

__all__ = ["ge", "gt", "in_range", "le", "lt", "non_empty", "one_of"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def show(value: Any) -> str:
    """A value as a user wrote it: ``-5`` not ``-5.0``, ``0.5`` not ``Decimal('0.5')``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    return repr(value)


def _compare(op: str, bound: Any, ok: Callable[[Any, Any], bool]) -> Validator:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not ok(value, bound):
            raise ValueError(f"{attribute.name} must be {op} {bound} (got {show(value)})")

    return check


def gt(bound: Any) -> Validator:
    """value > bound"""
    return _compare(">", bound, lambda v, b: v > b)


def ge(bound: Any) -> Validator:
    """value >= bound"""
    return _compare(">=", bound, lambda v, b: v >= b)


def lt(bound: Any) -> Validator:
    """value < bound"""
    return _compare("<", bound, lambda v, b: v < b)


def le(bound: Any) -> Validator:
    """value <= bound"""
    return _compare("<=", bound, lambda v, b: v <= b)


def in_range(low: Any, high: Any) -> Validator:
    """low <= value <= high"""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not (low <= value <= high):
            raise ValueError(f"{attribute.name} must be between {low} and {high} (got {show(value)})")

    return check


def one_of(choices: Collection[Any]) -> Validator:
    """value in choices"""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{attribute.name} must be one of {listed} (got {value!r})")

    return check


def non_empty(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """value has at least one element / character"""
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")
