"""Kraken REST transport: one pooled session, signing, limits, breakers, retries.

Every call goes retry (stamina, transient errors only) -> circuit breaker of its endpoint
group -> rate limiter -> one HTTP request -> error mapping and envelope validation. Each
attempt of a private call is signed with a fresh nonce, so a retried call never reuses one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from tradebot.api import (
    AuthError,
    BadDataError,
    Clock,
    ExchangeError,
    ExchangeUnavailable,
    InvalidNonce,
    RateLimited,
    RequestTimeout,
    SystemClock,
    TradebotError,
    order_at_wire,
)
from tradebot.api.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitBreakers,
    LatencyHistograms,
    RequestRateLimiter,
    RetryPolicy,
    RetryStats,
    Turns,
    call_with_retry,
    retry_after_failure,
)
from tradebot.exchanges.kraken.auth import sign
from tradebot.exchanges.kraken.config import KrakenConfig, endpoint_cost
from tradebot.exchanges.kraken.errors import map_http_status, map_kraken_error, map_transport_error
from tradebot.exchanges.kraken.nonce import NonceSource
from tradebot.exchanges.kraken.parse import parse_envelope

__all__ = ["ENDPOINT_GROUPS", "Credentials", "KrakenRestClient", "endpoint_group"]

log = logging.getLogger(__name__)

# One decoder for every answer: ``json.loads(raw, parse_float=...)`` builds a new decoder
# (and scanner) on each call. Prices stay exact: any JSON float becomes a Decimal.
_JSON = json.JSONDecoder(parse_float=Decimal)

_PUBLIC_URL_CACHE_SIZE = 256

ENDPOINT_GROUPS = ("public", "private", "trading", "websocket")
_TRADING_METHODS = frozenset(
    {"AddOrder", "AddOrderBatch", "CancelOrder", "CancelAll", "EditOrder", "AmendOrder"}
)
_ORDER_METHODS = frozenset({"AddOrder", "AddOrderBatch", "EditOrder", "AmendOrder"})
"""Requests that can add exposure: the trading state is checked again where they are sent."""


def endpoint_group(private: bool, method: str) -> str:
    """The circuit-breaker group of a REST method."""
    if not private:
        return "public"
    return "trading" if method in _TRADING_METHODS else "private"


class _Route:
    """What a REST method's calls share, worked out once per client instead of per call."""

    __slots__ = ("bare_url", "cost", "endpoint", "group", "method", "path", "private", "trading", "url")

    def __init__(self, base: str, private: bool, method: str) -> None:
        self.private = private
        self.method = method
        self.endpoint = f"{'private' if private else 'public'}/{method}"
        self.path = f"/0/{self.endpoint}"  # what a private call signs
        self.url = f"{base}{self.path}"
        self.group = endpoint_group(private, method)
        self.trading = self.group == "trading"
        self.cost = endpoint_cost(method) if private else 0
        self.bare_url = URL(self.url, encoded=True)  # a public call without parameters


class Credentials:
    """An API key pair. Its repr and str never show either part."""

    __slots__ = ("_key", "_secret")

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._key = api_key
        self._secret = api_secret

    @property
    def api_key(self) -> str:
        return self._key

    @property
    def api_secret(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return "Credentials(api_key=***, api_secret=***)"

    __str__ = __repr__


class KrakenRestClient:
    """Public and private Kraken REST calls over one pooled aiohttp session."""

    def __init__(
        self,
        config: KrakenConfig,
        *,
        credentials: Credentials | None,
        nonces: NonceSource,
        breakers: CircuitBreakers,
        limiter: RequestRateLimiter,
        retry_stats: RetryStats | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._credentials = credentials
        self.nonces = nonces
        self.breakers = breakers
        self.limiter = limiter
        self.retry_stats = retry_stats if retry_stats is not None else RetryStats()
        self.retry_policy: RetryPolicy = config.retry_policy()
        self._clock: Clock = clock or SystemClock()
        self._base = config.base_url.rstrip("/")
        self.host = urlsplit(config.base_url).hostname
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[tuple[bool, str], _Route] = {}
        self._public_urls: dict[tuple[object, ...], URL] = {}  # (endpoint, *params) -> encoded URL
        # the turns private requests take, per event loop (like a lock, they belong to one loop)
        self._private_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Turns] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False  # close() was called: nothing more is sent until start()
        self.sessions_created = 0
        self.requests_sent = 0
        self.request_timings = LatencyHistograms(("group", "outcome"))
        """Duration of each request attempt by endpoint group and outcome (``ok`` or the error's
        class name), limiter and turn waits included."""
        self.queue_timings = LatencyHistograms(("group",))
        """How long private requests waited for their turn (see :meth:`_private_in_turn`)."""
        for group in ("public", "private", "trading"):
            self.request_timings.seed((group, "ok"))
        for group in ("private", "trading"):
            self.queue_timings.seed((group,))

    def __repr__(self) -> str:
        return f"<KrakenRestClient {self._base} private={'yes' if self._credentials else 'no'}>"

    # --- session ---------------------------------------------------------------

    @property
    def has_credentials(self) -> bool:
        return self._credentials is not None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session (created on first use)."""
        if self._session is None or self._session.closed:
            self._session = self._new_session()
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=cfg.pool_limit,
            use_dns_cache=cfg.dns_cache_ttl_s > 0,
            ttl_dns_cache=cfg.dns_cache_ttl_s or None,
            keepalive_timeout=cfg.keepalive_timeout_s,
        )
        timeout = aiohttp.ClientTimeout(
            total=cfg.request_timeout_s, connect=cfg.connect_timeout_s, sock_connect=cfg.connect_timeout_s
        )
        self.sessions_created += 1
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": cfg.user_agent},
            raise_for_status=False,
        )

    async def start(self) -> None:
        """Open the session."""
        self._closed = False
        _ = self.session

    async def close(self) -> None:
        """Close the session (idempotent). Calls still waiting to be sent then fail as not sent,
        rather than opening a session nobody closes."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def reconnect(self) -> None:
        """Drop every pooled connection and open a fresh session (not after close())."""
        if self._closed:
            log.info("Kraken REST client is closed: not reconnecting")
            return
        old, self._session = self._session, None
        _ = self.session
        if old is not None and not old.closed:
            await old.close()
        log.info("Kraken REST session recreated (%d so far)", self.sessions_created)

    def flush_dns(self) -> None:
        """Forget cached DNS answers so the next request resolves the host again."""
        if self._session is not None and not self._session.closed:
            connector = self._session.connector
            if isinstance(connector, aiohttp.TCPConnector):
                connector.clear_dns_cache()

    # --- calls -------------------------------------------------------------------

    async def public(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``/0/public/<method>``; returns the validated ``result``.

        What :meth:`_call` does, with the first attempt run here rather than under
        :func:`call_with_retry`: one coroutine less on every public call, the hot path.
        """
        route = self._route(False, method)
        args = dict(params) if params else {}
        breaker = self.breakers[route.group]
        if breaker.state is BreakerState.OPEN:
            breaker.acquire()  # raises CircuitOpen: fail fast, before any retry machinery
        stats, endpoint = self.retry_stats, route.endpoint
        counts = stats.of(endpoint)  # what stats.attempted/finished count, without two calls
        counts.attempts += 1
        try:
            result = await self._attempt(route, args, breaker)
        except Exception as exc:  # noqa: BLE001 - retry_after_failure decides what is retried
            error = exc  # retried outside the handler, so later errors do not chain to this one
        else:
            counts.successes += 1
            return result
        return await retry_after_failure(
            lambda: self._attempt(route, args, breaker),
            error,
            endpoint=endpoint,
            policy=self.retry_policy,
            stats=stats,
        )

    async def private(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True
    ) -> Any:
        """Call ``/0/private/<method>``; returns the validated ``result``.

        ``idempotent=False`` sends exactly once (no retry of any kind).
        """
        if self._credentials is None:
            raise AuthError(
                f"Kraken private/{method}: no API key configured (set TRADEBOT_KRAKEN_API_KEY and"
                " TRADEBOT_KRAKEN_API_SECRET)",
                endpoint=f"private/{method}",
            )
        return await self._call(True, method, dict(params or {}), idempotent=idempotent)

    def _route(self, private: bool, method: str) -> _Route:
        route = self._routes.get((private, method))
        if route is None:
            route = self._routes[(private, method)] = _Route(self._base, private, method)
        return route

    def _call(
        self, private: bool, method: str, params: dict[str, Any], *, idempotent: bool
    ) -> Awaitable[Any]:
        """The call's awaitable, for :meth:`public` / :meth:`private` to await (no frame of its own)."""
        route = self._route(private, method)
        breaker = self.breakers[route.group]
        if breaker.state is BreakerState.OPEN:
            breaker.acquire()  # raises CircuitOpen: fail fast, before any retry machinery
        # a plain lambda, not a nested coroutine: one frame less on every await of the call
        return call_with_retry(
            lambda: self._attempt(route, params, breaker),
            endpoint=route.endpoint,
            policy=self.retry_policy,
            stats=self.retry_stats,
            idempotent=idempotent,
        )

    def _public_url(self, route: _Route, params: dict[str, Any]) -> URL:
        """The encoded URL of a public call; remembered for string parameters, which repeat."""
        if not params:
            return route.bare_url
        for key, value in params.items():
            if type(key) is not str or type(value) is not str:
                # not cached: 1, 1.0 and True are one dict key yet encode differently
                return URL(f"{route.url}?{urlencode(params)}", encoded=True)
        cache_key = (route.endpoint, *params.items())
        url = self._public_urls.get(cache_key)
        if url is None:
            if len(self._public_urls) >= _PUBLIC_URL_CACHE_SIZE:
                self._public_urls.clear()  # bounded: parameters a caller varies must not grow it
            # a ready-encoded URL spares aiohttp re-parsing and re-quoting it on every call
            url = self._public_urls[cache_key] = URL(f"{route.url}?{urlencode(params)}", encoded=True)
        return url

    async def _attempt(self, route: _Route, params: dict[str, Any], breaker: CircuitBreaker) -> Any:
        """One attempt under the breaker: limiter, one HTTP request, decoding and validation.

        Kept in one coroutine (no helper coroutines): every frame on the await chain is
        paid again each time the request suspends and resumes.
        """
        started = time.perf_counter()
        ticket = breaker.acquire()
        try:
            endpoint = route.endpoint
            limiter = self.limiter
            # the synchronous fast path takes the slot when nothing has to wait (and nobody
            # is queued); otherwise wait in line as always
            if not limiter.try_acquire(route.cost, counted=route.private):
                await limiter.acquire(route.cost, counted=route.private)
            try:
                if route.private:
                    resp = await self._private_in_turn(route, params)
                else:
                    if self._closed:
                        raise self._closed_error(route)
                    request = self.session.get(self._public_url(route, params))
                    self.requests_sent += 1
                    # awaited rather than entered: aiohttp's context managers add two coroutines
                    # per call; release() in ``finally`` hands the connection back as __aexit__ does
                    resp = await request
                try:
                    status = resp.status
                    raw = await resp.read()
                finally:
                    resp.release()
            except TradebotError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise map_transport_error(
                    exc, endpoint=endpoint, host=self.host, timeout_s=self.config.request_timeout_s
                ) from exc
            except RuntimeError as exc:  # "Session is closed" while a reconnect swapped sessions
                raise map_transport_error(exc, endpoint=endpoint, host=self.host) from exc
            result = self._decode(endpoint, status, raw, trading=route.trading)
        except BaseException as exc:
            breaker.record(ticket, exc)
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__
            self.request_timings.observe((route.group, outcome), time.perf_counter() - started)
            raise
        breaker.record(ticket, None)
        self.request_timings.observe((route.group, "ok"), time.perf_counter() - started)
        return result

    async def _private_in_turn(self, route: _Route, params: dict[str, Any]) -> aiohttp.ClientResponse:
        """Send a private request when it is its turn; the answer's response object.

        Kraken refuses a nonce not above the last one it accepted, and requests sent side by
        side on separate connections may arrive in any order: one private request is in
        flight at a time, from taking its nonce until the answer's headers are back (Kraken
        has seen the nonce by then). Waiting for the turn counts against the request's own
        timeout, so a call never takes longer than ``request_timeout_s`` however many wait
        ahead of it; one that times out still waiting was never sent.
        """
        loop = asyncio.get_running_loop()
        turns = self._private_turns.get(loop)
        if turns is None:
            turns = self._private_turns[loop] = Turns()
        sent = False
        waiting = time.perf_counter()
        try:
            # orders and cancels go ahead of look-ups waiting: a cancel on HALT is not kept
            # waiting behind balance and order queries
            async with asyncio.timeout(self.config.request_timeout_s), turns.turn(urgent=route.trading):
                sent = True
                self.queue_timings.observe((route.group,), time.perf_counter() - waiting)
                return await self._send_private(route, params)
        except TimeoutError:
            if sent:
                raise  # on the wire: the outcome is unknown (mapped as a request timeout)
            self.queue_timings.observe((route.group,), time.perf_counter() - waiting)
            err = RequestTimeout(
                f"Kraken {route.endpoint}: not sent, the private requests ahead of it took the whole"
                f" {self.config.request_timeout_s:g}s timeout",
                endpoint=route.endpoint,
            )
            err.not_sent = True  # type: ignore[attr-defined]
            raise err from None

    def _closed_error(self, route: _Route) -> ExchangeError:
        err = ExchangeError(
            f"Kraken {route.endpoint}: not sent, the client was closed", endpoint=route.endpoint
        )
        err.not_sent = True  # type: ignore[attr-defined]
        return err

    async def _send_private(self, route: _Route, params: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._credentials is not None
        if self._closed:  # e.g. closed while this request waited for its turn
            raise self._closed_error(route)
        if route.method in _ORDER_METHODS:
            # in this turn, in the same step as the send: no order leaves after a HALT
            with order_at_wire():
                return await self._post_signed(route, params)
        return await self._post_signed(route, params)

    async def _post_signed(self, route: _Route, params: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._credentials is not None
        nonce = self.nonces.next()
        body = urlencode({"nonce": nonce, **params})
        headers = {
            "API-Key": self._credentials.api_key,
            "API-Sign": sign(route.path, nonce, body, self._credentials.api_secret),
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        }
        self.requests_sent += 1
        return await self.session.post(route.url, data=body.encode(), headers=headers)

    def _decode(self, endpoint: str, status: int, raw: bytes, *, trading: bool) -> Any:
        try:
            # what json.loads does with bytes, minus building a decoder per call
            if raw[:1] == b"{" and raw[1:2] != b"\x00":
                # the usual answer: UTF-8 by json.detect_encoding's own rules, and nothing
                # before the object, so raw_decode reads it without decode()'s whitespace scans
                text = raw.decode("utf-8", "surrogatepass")
                body, end = _JSON.raw_decode(text)
                if end != len(text) and text[end:].strip(" \t\n\r"):
                    body = _JSON.decode(text)  # only JSON's whitespace may follow: raises "Extra data"
            else:
                body = _JSON.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        except RecursionError:  # nesting no real answer has: bad data, not a crash
            raise BadDataError(
                f"Kraken {endpoint}: answer nested too deeply to read ({len(raw)} bytes)", endpoint=endpoint
            ) from None
        except (ValueError, UnicodeDecodeError):
            if status == 200 and raw.lstrip()[:1] in (b"{", b"["):
                raise ExchangeUnavailable(
                    f"Kraken {endpoint}: malformed or truncated JSON ({len(raw)} bytes)",
                    endpoint=endpoint,
                    http_status=status,
                ) from None
            raise map_http_status(status, raw, endpoint=endpoint) from None
        if status != 200 and not (
            isinstance(body, dict) and isinstance(body.get("error"), list) and body["error"]
        ):
            raise map_http_status(status, raw, endpoint=endpoint)
        errors, result = parse_envelope(body, endpoint)
        if errors:
            exc = map_kraken_error(errors, endpoint=endpoint, trading=trading)
            if isinstance(exc, RateLimited) and not trading:
                self.limiter.penalize()  # order-rate errors belong to the per-pair limiter instead
            if isinstance(exc, InvalidNonce):
                log.warning("Kraken %s: nonce rejected; the next attempt uses a fresh one", endpoint)
            raise exc
        return result
