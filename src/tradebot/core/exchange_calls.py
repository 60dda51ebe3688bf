"""Every failed exchange call of the running bot, reported where it happens.

The bot hands its parts (executor, checks, policies) the exchange through
:class:`ErrorReportingExchange`: each awaited call that raises, an order placement, a
lookup, a cancel, a balance read, is reported to ``on_error`` before the error goes on to
the caller unchanged. The API-error-rate trigger counts these, so an exchange that fails
every order is noticed even when the executor absorbs each failure (an order whose outcome
is unknown is looked up, not raised).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["ErrorReportingExchange"]

log = logging.getLogger("tradebot.exchange")


class ErrorReportingExchange:
    """A transparent proxy of an exchange whose failing coroutine calls are reported.

    Attributes and non-coroutine methods (the market-data stream, properties) pass through
    untouched. A cancelled call is not a failure.
    """

    __slots__ = ("_tb_inner", "_tb_on_error", "_tb_cache")

    def __init__(self, inner: Any, on_error: Callable[[BaseException, str], None]) -> None:
        object.__setattr__(self, "_tb_inner", inner)
        object.__setattr__(self, "_tb_on_error", on_error)
        object.__setattr__(self, "_tb_cache", {})

    @property
    def inner(self) -> Any:
        """The exchange behind the proxy."""
        return self._tb_inner

    def __getattr__(self, name: str) -> Any:
        cache: dict[str, Any] = self._tb_cache
        if name in cache:
            return cache[name]
        value = getattr(self._tb_inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(value):
            return value
        inner, on_error = self._tb_inner, self._tb_on_error

        async def reported(*args: Any, **kwargs: Any) -> Any:
            try:
                return await getattr(inner, name)(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                try:
                    on_error(exc, name)
                except Exception:  # noqa: BLE001 - reporting never changes the call's outcome
                    log.exception("reporting a failed exchange call failed")
                raise

        cache[name] = reported
        return reported

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tb_inner, name, value)

    def __repr__(self) -> str:
        return repr(self._tb_inner)
