"""What a register hook returns: a named component with its factory and config class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["ComponentSpec"]


@attrs.frozen
class ComponentSpec:
    """One component a plugin provides.

    ``name`` is the stable name the config refers to (``[checks.<name>]``,
    ``exchange = "<name>"``, ``plugin = "<name>"`` for strategy instances ...).
    ``factory(config, context)`` builds the component; ``config`` is an instance of
    ``config_cls`` (an attrs class, validated by the core with cattrs; unknown keys are
    rejected) or ``None`` when ``config_cls`` is ``None``.
    """

    name: str
    factory: Callable[..., Any]
    config_cls: type | None = None
    description: str = ""
