"""Kraken errors and transport failures -> tradebot's exception hierarchy.

Kraken does not say which of its errors are transient; the mapping follows common
practice (see KRAKEN.md): unavailable / busy / internal / deadline -> exchange unavailable
(retry later); rate limit / lockout / throttled -> back off; invalid nonce -> its own
class; bad arguments / key / signature / permission, insufficient funds, unknown pair ->
permanent.

Every message names the endpoint (``private/AddOrder``); none contains a key, a secret, a
signature or a request body.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Sequence

import aiohttp

from tradebot.api import (
    AuthError,
    CircuitOpen,
    ConnectionFailed,
    DNSError,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    MarketClosed,
    NetworkError,
    OrderNotFound,
    RateLimited,
    RequestTimeout,
    TradebotError,
    UnknownPair,
)

__all__ = ["definitely_not_placed", "map_http_status", "map_kraken_error", "map_transport_error"]

LOCKOUT_S = 15 * 60.0

# exact Kraken error (without the ":extra" part) -> (class, what it means to a user)
_EXACT: dict[str, tuple[type[TradebotError], str]] = {
    "EAPI:Invalid nonce": (InvalidNonce, "nonce not above the last one accepted"),
    "EAPI:Rate limit exceeded": (RateLimited, "API rate limit exceeded"),
    "EOrder:Rate limit exceeded": (RateLimited, "order rate limit exceeded"),
    "EGeneral:Too many requests": (RateLimited, "too many requests"),
    "EGeneral:Temporary lockout": (RateLimited, "temporary lockout (about 15 minutes)"),
    "EService:Unavailable": (ExchangeUnavailable, "service unavailable"),
    "EService:Busy": (ExchangeUnavailable, "service busy"),
    "EGeneral:Internal error": (ExchangeUnavailable, "internal error at the exchange"),
    "EDatabase:Internal error": (ExchangeUnavailable, "internal error at the exchange"),
    "EService:Deadline elapsed": (ExchangeUnavailable, "request deadline elapsed at the exchange"),
    "EService:Market in cancel_only mode": (MarketClosed, "market in cancel_only mode"),
    "EService:Market in post_only mode": (MarketClosed, "market in post_only mode"),
    "EService:Market in limit_only mode": (MarketClosed, "market in limit_only mode"),
    "EAPI:Invalid key": (AuthError, "invalid API key"),
    "EAPI:Invalid signature": (AuthError, "invalid signature"),
    "EAPI:Feature disabled": (AuthError, "feature disabled for this key"),
    "EGeneral:Permission denied": (AuthError, "permission denied for this key"),
    "EOrder:Insufficient funds": (InsufficientFunds, "insufficient funds"),
    "EOrder:Insufficient margin": (InsufficientFunds, "insufficient margin"),
    "EQuery:Unknown asset pair": (UnknownPair, "unknown asset pair"),
    "EOrder:Unknown order": (OrderNotFound, "unknown order"),
    "EQuery:Unknown order": (OrderNotFound, "unknown order"),
    "EOrder:Invalid order": (InvalidOrder, "invalid order"),
    "EOrder:Invalid price": (InvalidOrder, "invalid price"),
    "EOrder:Order minimum not met": (InvalidOrder, "order minimum not met"),
    "EOrder:Cost minimum not met": (InvalidOrder, "cost minimum not met"),
    "EOrder:Tick size check failed": (InvalidOrder, "price does not fit the tick size"),
    "EOrder:Orders limit exceeded": (InvalidOrder, "open orders limit exceeded"),
    "EOrder:Positions limit exceeded": (InvalidOrder, "positions limit exceeded"),
    "EOrder:Domain rate limit exceeded": (RateLimited, "order domain rate limit exceeded"),
}

_THROTTLED = re.compile(r"^EService:\s*Throttled(?::\s*(\d+))?", re.IGNORECASE)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_MAX_ERRORS = 10
_MAX_ERROR_CHARS = 200
# control characters would let an error text start a line of its own in a plain-text log
_CONTROLS = dict.fromkeys((*range(32), 127), " ")


def _clean(error: object) -> str:
    """A Kraken error text fit for messages and logs, whatever the exchange sent.

    Capped at 200 characters, control characters made spaces, and characters UTF-8 cannot
    encode (lone surrogates, which JSON may carry) replaced, so no log handler fails on it.
    """
    text = str(error)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "..."
    if not text.isprintable() or not text.isascii():
        text = text.translate(_CONTROLS).encode("utf-8", "replace").decode("utf-8")
    return text


def _head(error: str) -> str:
    """``"EGeneral:Invalid arguments:volume"`` -> ``"EGeneral:Invalid arguments"``."""
    parts = error.split(":")
    return ":".join(p.strip() for p in parts[:2]) if len(parts) >= 2 else error.strip()


def map_kraken_error(
    errors: Sequence[str], *, endpoint: str, trading: bool = False, now: float | None = None
) -> TradebotError:
    """The exception for a non-empty Kraken ``error`` list (the first error decides)."""
    cleaned = [_clean(e) for e in errors[:_MAX_ERRORS]]
    if len(errors) > _MAX_ERRORS:
        cleaned.append(f"and {len(errors) - _MAX_ERRORS} more")
    raw = cleaned[0] if cleaned else "unknown error"
    all_errors = "; ".join(cleaned)
    head = _head(raw)
    prefix = f"Kraken {endpoint}"

    if m := _THROTTLED.match(raw):
        until = int(m.group(1)) if m.group(1) else None
        wait = max(0.0, until - (now if now is not None else time.time())) if until else None
        return RateLimited(
            f"{prefix}: throttled", retry_after_s=wait, endpoint=endpoint, kraken_error=all_errors
        )

    if head in _EXACT:
        cls, meaning = _EXACT[head]
        if cls is RateLimited:
            wait = LOCKOUT_S if head == "EGeneral:Temporary lockout" else None
            return RateLimited(
                f"{prefix}: {meaning}", retry_after_s=wait, endpoint=endpoint, kraken_error=all_errors
            )
        error = cls(f"{prefix}: {meaning}", endpoint=endpoint, kraken_error=all_errors)
        if cls is MarketClosed and trading:
            # an order refused by the market's mode (which lasts minutes to hours) is not
            # placed: said at once, not retried with backoff; the strategy may signal again
            error.transient = False
        return error

    if head == "EGeneral:Invalid arguments" or head.startswith("EOrder:"):
        cls = InvalidOrder if trading or head.startswith("EOrder:") else ExchangeError
        return cls(f"{prefix}: rejected arguments", endpoint=endpoint, kraken_error=all_errors)
    if head.startswith(("EService:", "EDatabase:")):
        return ExchangeUnavailable(f"{prefix}: service problem", endpoint=endpoint, kraken_error=all_errors)
    if head.startswith("EAPI:"):
        return AuthError(f"{prefix}: API request refused", endpoint=endpoint, kraken_error=all_errors)
    # unknown errors are not retried: repeating a call we do not understand is not safe
    return ExchangeError(f"{prefix}: error", endpoint=endpoint, kraken_error=all_errors)


def _title(body: bytes) -> str | None:
    m = _TITLE.search(body[:4096])
    if not m:
        return None
    text = re.sub(rb"\s+", b" ", m.group(1)).strip().decode("utf-8", "replace")
    return text[:100] or None


def map_http_status(status: int, body: bytes, *, endpoint: str) -> TradebotError:
    """An HTTP answer whose body is not a Kraken JSON envelope."""
    title = _title(body)
    prefix = f"Kraken {endpoint}"
    if status == 429:
        return RateLimited(f"{prefix}: HTTP 429 too many requests", endpoint=endpoint, http_status=status)
    if status == 408:
        return RequestTimeout(f"{prefix}: HTTP 408 request timeout", endpoint=endpoint, http_status=status)
    if status >= 500 or (status in (403, 404) and title and "cloudflare" in title.lower()):
        return ExchangeUnavailable(
            f"{prefix}: HTTP {status} from the exchange or its proxy",
            endpoint=endpoint,
            http_status=status,
            page=title,
        )
    if status >= 400:
        return ExchangeError(f"{prefix}: HTTP {status}", endpoint=endpoint, http_status=status, page=title)
    return ExchangeUnavailable(
        f"{prefix}: answer is not JSON (HTTP {status})", endpoint=endpoint, http_status=status, page=title
    )


def map_transport_error(
    exc: BaseException, *, endpoint: str, host: str | None, timeout_s: float | None = None
) -> NetworkError:
    """A failure below HTTP (DNS, TCP, TLS, timeout, dropped connection)."""
    prefix = f"Kraken {endpoint}"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if (dns_error is not None and isinstance(exc, dns_error)) or (
        isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror)
    ):
        err = DNSError(f"{prefix}: DNS resolution failed for host {host!r}", endpoint=endpoint, host=host)
        err.not_sent = True  # type: ignore[attr-defined]
        return err
    if isinstance(exc, socket.gaierror):
        err = DNSError(f"{prefix}: DNS resolution failed for host {host!r}", endpoint=endpoint, host=host)
        err.not_sent = True  # type: ignore[attr-defined]
        return err
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
    if connect_timeout is not None and isinstance(exc, connect_timeout):
        err2: NetworkError = RequestTimeout(
            f"{prefix}: timed out connecting to {host}", endpoint=endpoint, host=host, timeout_s=timeout_s
        )
        err2.not_sent = True  # type: ignore[attr-defined]
        return err2
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
        return RequestTimeout(
            f"{prefix}: request timed out", endpoint=endpoint, host=host, timeout_s=timeout_s
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        err3 = ConnectionFailed(
            f"{prefix}: could not connect to {host} ({type(exc.os_error).__name__})",
            endpoint=endpoint,
            host=host,
        )
        err3.not_sent = True  # type: ignore[attr-defined]
        return err3
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionFailed(f"{prefix}: server closed the connection", endpoint=endpoint, host=host)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionFailed(f"{prefix}: response body cut off", endpoint=endpoint, host=host)
    if isinstance(exc, (aiohttp.ClientOSError, ConnectionError, OSError)):
        return ConnectionFailed(f"{prefix}: connection reset or dropped", endpoint=endpoint, host=host)
    return ConnectionFailed(
        f"{prefix}: transport failure ({type(exc).__name__})", endpoint=endpoint, host=host
    )


def definitely_not_placed(exc: BaseException) -> bool:
    """True when an AddOrder that raised ``exc`` certainly did not create an order.

    Either the request never left (DNS, connect refused, connect timeout, open circuit)
    or Kraken answered with an explicit rejection. Timeouts, dropped connections, 5xx
    pages and "unavailable"-type answers leave the outcome unknown.
    """
    if getattr(exc, "not_sent", False) or isinstance(exc, CircuitOpen):
        return True
    if isinstance(exc, ExchangeError) and "kraken_error" in exc.context:
        return not isinstance(exc, ExchangeUnavailable)
    return False
