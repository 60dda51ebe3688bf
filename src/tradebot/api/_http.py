"""HTTP delivery for notifiers (built-in and third-party): one session, errors without URLs.

URLs can hold secrets (Telegram puts the bot token in the path), so no error raised here
names the URL: only the service, the host and what went wrong.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from tradebot.core.errors import (
    ConnectionFailed,
    DNSError,
    PermanentError,
    RateLimited,
    RequestTimeout,
    TransientError,
)

__all__ = ["HttpPoster", "check_url"]


def check_url(_inst: Any, attribute: Any, value: str) -> None:
    """attrs validator: an absolute http(s) URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL (got {value!r})")


class HttpPoster:
    """POSTs JSON with a timeout over one lazily created aiohttp session."""

    def __init__(self, service: str, *, timeout_s: float) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self._session: Any = None

    def _get_session(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=4, ttl_dns_cache=300),
            )
        return self._session

    async def post_json(
        self, url: str, payload: Any, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST ``payload``; returns (status, decoded JSON body or None). Transport errors are mapped."""
        import aiohttp

        host = urlsplit(url).hostname or "?"
        try:
            async with self._get_session().post(url, json=payload, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError:
            raise RequestTimeout(f"{self.service}: no answer within {self.timeout_s:g}s", host=host) from None
        except aiohttp.ClientConnectorDNSError:
            raise DNSError(f"{self.service}: cannot resolve host", host=host) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(
                f"{self.service}: connection failed ({type(exc).__name__})", host=host
            ) from None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return status, body

    def raise_for_status(self, status: int, body: Any, *, retry_after_s: float | None = None) -> None:
        """Map a non-2xx answer to a transient or permanent error."""
        if 200 <= status < 300:
            return
        detail = ""
        if isinstance(body, dict):
            detail = str(body.get("description") or body.get("error") or "")[:200]
        msg = f"{self.service}: HTTP {status}{': ' + detail if detail else ''}"
        if status == 429:
            raise RateLimited(msg, retry_after_s=retry_after_s)
        if status >= 500 or status == 408:
            raise TransientError(msg, http_status=status)
        raise PermanentError(msg, http_status=status)

    async def close(self) -> None:
        """Close the session (safe to call more than once)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
            # let the connector close its transports before the loop moves on
            await asyncio.sleep(0)
