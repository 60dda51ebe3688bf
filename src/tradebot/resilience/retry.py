"""Retries with stamina, for transient errors only.

:func:`call_with_retry` runs an async call under :func:`stamina.retry_context` and retries
only errors that :func:`is_retryable` accepts: transient ``TradebotError`` subclasses,
except :class:`~tradebot.core.errors.CircuitOpen` (the point of an open breaker is not to
call) and :class:`~tradebot.core.errors.OrderOutcomeUnknown` (resolved by lookup, never
by resending). A :class:`~tradebot.core.errors.RateLimited` error that says how long to
wait is retried after exactly that wait, when it is short enough.

A call that is not idempotent is run exactly once, whatever the policy and whatever
stamina's testing mode says.

Every attempt and retry is counted per endpoint in :class:`RetryStats`, whose listeners
receive a :class:`RetryEvent` for each retry (for metrics and tracing). stamina's own
instrumentation hooks (:mod:`stamina.instrumentation`) fire as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import attrs
import stamina

from tradebot.core.errors import CircuitOpen, OrderOutcomeUnknown, RateLimited, TradebotError
from tradebot.core.validate import ge, gt

__all__ = [
    "EndpointRetryCounts",
    "RetryEvent",
    "RetryPolicy",
    "RetryStats",
    "call_with_retry",
    "is_retryable",
    "retry_after_failure",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    """How hard to retry: attempts, overall time budget and backoff shape."""

    attempts: int = attrs.field(default=3, validator=gt(0))
    timeout_s: float = attrs.field(default=30.0, validator=gt(0))
    wait_initial_s: float = attrs.field(default=0.2, validator=ge(0))
    wait_max_s: float = attrs.field(default=5.0, validator=gt(0))
    wait_jitter_s: float = attrs.field(default=0.5, validator=ge(0))
    max_retry_after_s: float = attrs.field(default=15.0, validator=ge(0))
    """A server-requested wait longer than this is not waited out inside one call."""


def is_retryable(exc: BaseException, *, max_retry_after_s: float = 15.0) -> bool | float:
    """Whether ``exc`` may be retried; a float is the wait the server asked for."""
    if isinstance(exc, (CircuitOpen, OrderOutcomeUnknown)):
        return False
    if not isinstance(exc, TradebotError) or not exc.transient:
        return False
    if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
        if exc.retry_after_s > max_retry_after_s:
            return False
        return max(0.0, float(exc.retry_after_s))
    return True


@attrs.frozen
class RetryEvent:
    """A retry is about to happen: attempt ``attempt`` of ``endpoint`` after ``error``."""

    endpoint: str
    attempt: int
    error_type: str
    error: str


@attrs.define
class EndpointRetryCounts:
    """Counters of one endpoint."""

    attempts: int = 0
    retries: int = 0
    successes: int = 0
    failures: int = 0


RetryListener = Callable[[RetryEvent], None]
FailureListener = Callable[[str, BaseException | None], None]


class RetryStats:
    """Attempts, retries, successes and final failures per endpoint, plus retry listeners."""

    def __init__(self, listeners: Iterable[RetryListener] = ()) -> None:
        self.endpoints: dict[str, EndpointRetryCounts] = {}
        self._listeners: list[RetryListener] = list(listeners)
        self._failure_listeners: list[FailureListener] = []

    def add_listener(self, listener: RetryListener) -> None:
        """Call ``listener`` before every retry."""
        self._listeners.append(listener)

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Call ``listener(endpoint, error)`` for every call that finally failed (after its retries)."""
        self._failure_listeners.append(listener)

    def of(self, endpoint: str) -> EndpointRetryCounts:
        """The counters of ``endpoint`` (zero when never called)."""
        counts = self.endpoints.get(endpoint)
        if counts is None:  # built only once per endpoint, not on every lookup
            counts = self.endpoints[endpoint] = EndpointRetryCounts()
        return counts

    @property
    def total_retries(self) -> int:
        return sum(c.retries for c in self.endpoints.values())

    def attempted(self, endpoint: str) -> None:
        """Count an attempt (callers that run a first attempt themselves, see :func:`retry_after_failure`)."""
        self.of(endpoint).attempts += 1

    def _retry(self, endpoint: str, attempt: int, error: BaseException | None) -> None:
        self.of(endpoint).retries += 1
        event = RetryEvent(endpoint, attempt, type(error).__name__, str(error) if error else "")
        log.info("retrying %s (attempt %d) after %s", endpoint, attempt, event.error_type)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("retry listener %r failed", listener)

    def finished(self, endpoint: str, ok: bool, error: BaseException | None = None) -> None:
        """Count a call's final outcome (``error``: what made it fail, when known)."""
        if ok:
            self.of(endpoint).successes += 1
        else:
            self.of(endpoint).failures += 1
            if isinstance(error, asyncio.CancelledError):
                return  # the caller gave up: not a failure of the exchange
            for listener in list(self._failure_listeners):
                try:
                    listener(endpoint, error)
                except Exception:
                    log.exception("failure listener %r failed", listener)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    endpoint: str,
    policy: RetryPolicy | None = None,
    stats: RetryStats | None = None,
    idempotent: bool = True,
) -> T:
    """Await ``fn()``, retrying transient errors per ``policy`` when ``idempotent``."""
    policy = policy or RetryPolicy()
    stats = stats if stats is not None else RetryStats()
    if not idempotent:
        stats.attempted(endpoint)
        try:
            result = await fn()
        except BaseException as exc:
            stats.finished(endpoint, ok=False, error=exc)
            raise
        stats.finished(endpoint, ok=True)
        return result

    # Fast path: most calls succeed at once, and entering stamina's retry loop costs more
    # than a loopback round trip. The first attempt runs bare; only a failure goes on to
    # retry_after_failure.
    stats.attempted(endpoint)
    try:
        first = await fn()
    except Exception as exc:  # noqa: BLE001 - retry_after_failure decides what is retried
        error = exc  # retried outside the handler, so later errors do not chain to this one
    else:
        stats.finished(endpoint, ok=True)
        return first
    return await retry_after_failure(fn, error, endpoint=endpoint, policy=policy, stats=stats)


async def retry_after_failure(
    fn: Callable[[], Awaitable[T]],
    error: Exception,
    *,
    endpoint: str,
    policy: RetryPolicy,
    stats: RetryStats,
) -> T:
    """The rest of :func:`call_with_retry` once its first attempt (counted) raised ``error``.

    A hot caller may run the first attempt itself, counted with :meth:`RetryStats.attempted`
    and :meth:`RetryStats.finished`, and call this only when it fails: one coroutine less on
    every call that succeeds. ``error`` is raised again when it is not retryable; otherwise it
    is replayed as attempt 1, so stamina schedules the backoff.
    """
    if is_retryable(error, max_retry_after_s=policy.max_retry_after_s) is False:
        # (a float, even 0.0, is a server-requested wait: retried)
        stats.finished(endpoint, ok=False, error=error)
        raise error
    last_error: BaseException | None = error

    def retry_on(exc: BaseException) -> bool | float:
        return is_retryable(exc, max_retry_after_s=policy.max_retry_after_s)

    have_result = False
    result_value: T | None = None
    try:
        async for attempt in stamina.retry_context(
            on=retry_on,
            attempts=policy.attempts,
            timeout=policy.timeout_s,
            wait_initial=policy.wait_initial_s,
            wait_max=policy.wait_max_s,
            wait_jitter=policy.wait_jitter_s,
        ):
            with attempt:
                if attempt.num == 1:
                    assert last_error is not None
                    raise last_error
                stats._retry(endpoint, attempt.num, last_error)
                stats.attempted(endpoint)
                try:
                    result_value = await fn()
                    have_result = True
                except Exception as exc:
                    last_error = exc
                    raise
    except BaseException as exc:
        stats.finished(endpoint, ok=False, error=exc)
        raise
    if not have_result:  # pragma: no cover - stamina either yields a success or raises
        raise RuntimeError(f"retry loop of {endpoint} ended without a result")
    stats.finished(endpoint, ok=True)
    return result_value  # type: ignore[return-value]
