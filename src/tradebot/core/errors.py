"""The one exception hierarchy of tradebot.

Every failure the bot can meet is one of these classes. Each says whether it is
*transient* (retrying later may succeed) or *permanent* (retrying the same call will
fail again), and carries the context a user needs to act on it. Retries, circuit
breakers, healing and HALT decisions all key off these classes, never off strings.

Messages must never contain secrets: exchange adapters pass only endpoint names,
hosts and sanitised details into these exceptions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "BadDataError",
    "CircuitOpen",
    "ConfigError",
    "ConnectionFailed",
    "DNSError",
    "ExchangeError",
    "ExchangeUnavailable",
    "InsufficientFunds",
    "InvalidNonce",
    "InvalidOrder",
    "MarketClosed",
    "NetworkError",
    "OrderNotFound",
    "OrderOutcomeUnknown",
    "PermanentError",
    "PluginError",
    "PluginQuarantined",
    "RateLimited",
    "RequestTimeout",
    "StateError",
    "TradebotError",
    "TransientError",
    "UnknownPair",
    "describe",
]


class TradebotError(Exception):
    """Base of every error raised by tradebot.

    ``transient`` tells retry and healing logic whether the same call may succeed later.
    ``context`` holds structured, secret-free details (endpoint, host, pair, ...).
    """

    transient: bool = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in self.context.items() if v is not None)
        return f"{self.message} ({details})" if details else self.message


class TransientError(TradebotError):
    """A failure that may clear by itself: retry with backoff."""

    transient = True


class PermanentError(TradebotError):
    """A failure that will repeat: fix the cause, do not retry."""

    transient = False


# --- network ----------------------------------------------------------------


class NetworkError(TransientError):
    """The request did not reach the exchange or its answer did not reach us."""


class DNSError(NetworkError):
    """The host name could not be resolved (DNS failure or timeout)."""


class ConnectionFailed(NetworkError):
    """The TCP/TLS connection was refused, reset or dropped."""


class RequestTimeout(NetworkError):
    """The request took longer than its timeout."""


class CircuitOpen(TransientError):
    """The circuit breaker of this endpoint group is open: the call was not attempted."""


# --- exchange ---------------------------------------------------------------


class ExchangeError(TradebotError):
    """The exchange answered with an error."""


class ExchangeUnavailable(ExchangeError, TransientError):
    """The exchange is down, busy, in maintenance or answered 5xx."""


class RateLimited(ExchangeError, TransientError):
    """A rate limit, lockout or throttle: back off before calling again."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **context: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **context)
        self.retry_after_s = retry_after_s


class InvalidNonce(ExchangeError, TransientError):
    """The nonce was not above the last accepted one: fix the nonce, then retry."""


class MarketClosed(ExchangeError, TransientError):
    """The market is in cancel_only / post_only / maintenance mode."""


class AuthError(ExchangeError, PermanentError):
    """Invalid key, signature or missing permission."""


class InvalidOrder(ExchangeError, PermanentError):
    """The exchange rejected the order's arguments."""


class InsufficientFunds(ExchangeError, PermanentError):
    """Not enough balance for the order."""


class UnknownPair(ExchangeError, PermanentError):
    """The pair is not known to the exchange."""


class OrderNotFound(ExchangeError, PermanentError):
    """No order with that id exists on the exchange."""


class OrderOutcomeUnknown(TransientError):
    """An order request was sent but its outcome is not known (timeout, lost response).

    The order must be looked up by its client order id before anything is resent.
    """


class BadDataError(PermanentError):
    """A response or message failed validation (missing field, wrong type, NaN price ...)."""


# --- framework --------------------------------------------------------------


class ConfigError(PermanentError):
    """The configuration is invalid. ``issues`` lists every problem with its path."""

    def __init__(self, message: str, issues: list[str] | None = None) -> None:
        super().__init__(message)
        self.issues: list[str] = list(issues or [])

    def __str__(self) -> str:
        if not self.issues:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {i}" for i in self.issues)


class PluginError(PermanentError):
    """A plugin could not be loaded, validated or called."""

    def __init__(self, message: str, *, plugin: str, hook: str | None = None) -> None:
        super().__init__(message, plugin=plugin, hook=hook)
        self.plugin = plugin
        self.hook = hook


class PluginQuarantined(PluginError):
    """The plugin failed too often and is switched off for this run."""


class StateError(PermanentError):
    """The state store is unusable (corrupt, locked, wrong schema)."""


def describe(exc: BaseException) -> str:
    """``str(exc)``, or what can be said of it when its own ``__str__`` fails.

    For messages about errors raised by plugin code, which may be of any class: reporting a
    failure must never fail in turn. Every registered secret is redacted.
    """
    from tradebot.core.secrets import redact  # an error's text may quote a secret: it never goes further

    try:
        return redact(str(exc))
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the report of the error
        return f"<{type(exc).__name__} that cannot be shown>"
