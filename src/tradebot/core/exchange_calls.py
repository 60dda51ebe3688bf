"""Every failed exchange call of the running bot, reported where it happens.

An exchange whose client keeps :class:`~tradebot.resilience.retry.RetryStats`
(``retry_stats``, as the Kraken exchange does) reports every failed request itself: each
attempt that is retried and each call that finally fails (:func:`watch_requests`), so an
order sent three times into a 502 counts three times. Any other exchange is handed to the
bot's parts (executor, checks, policies) through :class:`ErrorReportingExchange`: each
awaited call that raises, an order placement, a lookup, a cancel, a balance read, is
reported before the error goes on to the caller unchanged. The API-error-rate trigger
counts these, so an exchange that fails every order is noticed even when the executor
absorbs each failure (an order whose outcome is unknown is looked up, not raised).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["ErrorReportingExchange", "FailedCall", "KeepsRequestStats", "RequestStats", "watch_requests"]

log = logging.getLogger("tradebot.exchange")


class FailedCall(Exception):
    """One failed exchange request, as reported by the client's retry statistics.

    ``error_type`` is the class name of the error behind it (what the API-error-rate
    trigger shows and matches its ``ignore`` list against).
    """

    def __init__(self, endpoint: str, error_type: str, message: str = "") -> None:
        super().__init__(f"{endpoint}: {error_type}" + (f": {message}" if message else ""))
        self.endpoint = endpoint
        self.error_type = error_type


@runtime_checkable
class RequestStats(Protocol):
    """Statistics of an exchange client's requests that tell of every failed attempt."""

    def add_listener(self, listener: Callable[[Any], None]) -> None: ...

    def add_failure_listener(self, listener: Callable[[str, BaseException | None], None]) -> None: ...


@runtime_checkable
class KeepsRequestStats(Protocol):
    """An exchange whose client keeps :class:`RequestStats` (``retry_stats``), as Kraken's does."""

    retry_stats: RequestStats


def watch_requests(exchange: Any, on_error: Callable[[BaseException, str], None]) -> bool:
    """Report every failed request of ``exchange``'s client; False when it keeps no statistics.

    Called once, when the bot takes the exchange."""
    if not isinstance(exchange, KeepsRequestStats) or not isinstance(exchange.retry_stats, RequestStats):
        return False
    stats = exchange.retry_stats

    def retried(event: Any) -> None:  # an attempt failed and is tried again
        on_error(FailedCall(event.endpoint, event.error_type, event.error), event.endpoint)

    def failed(endpoint: str, error: BaseException | None) -> None:  # the call failed for good
        on_error(error if error is not None else FailedCall(endpoint, "unknown"), endpoint)

    stats.add_listener(retried)
    stats.add_failure_listener(failed)
    return True


class ErrorReportingExchange:
    """A transparent proxy of an exchange whose failing coroutine calls are reported.

    Attributes and non-coroutine methods (the market-data stream, properties) pass through
    untouched. A cancelled call is not a failure.
    """

    __slots__ = ("_tb_cache", "_tb_inner", "_tb_on_error")

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
                except Exception:  # reporting never changes the call's outcome
                    log.exception("reporting a failed exchange call failed")
                raise

        cache[name] = reported
        return reported

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tb_inner, name, value)

    def __repr__(self) -> str:
        return repr(self._tb_inner)
