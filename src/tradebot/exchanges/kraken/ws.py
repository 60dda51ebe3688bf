"""Kraken WebSocket v2 market data (ticker, ohlc) that heals itself.

:class:`MarketDataStream` keeps one socket: it subscribes, parses, and treats a socket
that says nothing (not even a heartbeat) for ``ws_heartbeat_timeout_s`` as dead. A dead
or failed socket is reconnected with exponential backoff and every subscription is sent
again. While the socket has been down for ``rest_fallback_after_s``, tickers (and candles)
are polled over REST instead, so consumers keep receiving data.

Events go through a bounded queue; when the consumer falls behind the oldest event is
dropped (market data is only worth its latest value) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import attrs

from tradebot.api import (
    Candle,
    CircuitOpen,
    Clock,
    ConnectionFailed,
    RequestTimeout,
    SystemClock,
    Ticker,
    TradebotError,
    cancel_and_wait,
)
from tradebot.api.resilience import CircuitBreaker
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.errors import map_transport_error
from tradebot.exchanges.kraken.pairs import PairRegistry
from tradebot.exchanges.kraken.parse import parse_ws_ohlc, parse_ws_ticker

__all__ = ["MarketDataStats", "MarketDataStream"]

log = logging.getLogger(__name__)

MarketEvent = Ticker | Candle


@attrs.define
class MarketDataStats:
    """Counters and flags of one market-data stream (for health checks and metrics)."""

    connected: bool = False
    using_fallback: bool = False
    connects: int = 0
    reconnects: int = 0
    stale_sockets: int = 0
    messages: int = 0
    bad_messages: int = 0
    events: int = 0
    dropped_events: int = 0
    fallback_polls: int = 0
    fallback_errors: int = 0
    subscriptions_sent: int = 0
    last_message_at: float | None = None  # monotonic
    last_error: str | None = None


class _StaleSocket(Exception):
    pass


class MarketDataStream:
    """One self-healing market-data subscription (iterate :meth:`events`)."""

    def __init__(
        self,
        *,
        pairs: Sequence[str],
        ohlc_interval: int | None,
        config: KrakenConfig,
        registry: PairRegistry,
        session: Callable[[], aiohttp.ClientSession],
        poll_tickers: Callable[[Sequence[str]], Awaitable[Sequence[Ticker]]],
        poll_ohlc: Callable[[str, int], Awaitable[Sequence[Candle]]],
        breaker: CircuitBreaker | None = None,
        clock: Clock | None = None,
        queue_size: int = 1000,
    ) -> None:
        self.pairs = [registry.info(p).pair for p in pairs]  # UnknownPair before any I/O
        self.ohlc_interval = ohlc_interval
        self.config = config
        self._registry = registry
        self._session = session
        self._poll_tickers = poll_tickers
        self._poll_ohlc = poll_ohlc
        self._breaker = breaker
        self._clock: Clock = clock or SystemClock()
        self._queue: asyncio.Queue[MarketEvent] = asyncio.Queue(maxsize=queue_size)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._down_since: float | None = None
        self._last_candle: dict[str, datetime] = {}
        self._req_id = 0
        self._conn_messages = 0  # messages on the current socket
        self.finished = False
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = MarketDataStats()

    # --- public ------------------------------------------------------------------

    async def events(self) -> AsyncIterator[MarketEvent]:
        """Tickers and candles until the consumer stops iterating or :meth:`stop` is called."""
        self._down_since = self._clock.monotonic()
        self._tasks = [
            asyncio.create_task(self._socket_loop(), name="kraken-ws"),
            asyncio.create_task(self._fallback_loop(), name="kraken-rest-fallback"),
        ]
        getter: asyncio.Future[MarketEvent] | None = None
        try:
            while not self._stopped:
                getter = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait([getter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                if self._stopped:
                    return
                for task in self._tasks:  # a loop ended by itself: that is a bug, surface it
                    if task.done():
                        task.result()
                        raise RuntimeError(f"market-data task {task.get_name()} ended")
        finally:
            self.finished = True
            if getter is not None:
                getter.cancel()
            await self._stop_tasks()
            await self._close_socket()

    async def _stop_tasks(self) -> None:
        # cancel_and_wait, not suppress(CancelledError): a stop of the caller itself goes through
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)

    async def stop(self) -> None:
        """End the stream: the consumer's iteration finishes."""
        self._stopped = True
        await self._stop_tasks()
        await self._close_socket()

    async def force_reconnect(self) -> None:
        """Close the current socket; the stream reconnects and resubscribes by itself."""
        await self._close_socket()

    # --- socket ------------------------------------------------------------------

    async def _close_socket(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()

    def _emit(self, event: MarketEvent) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.stats.dropped_events += 1
        self._queue.put_nowait(event)
        self.stats.events += 1

    def _backoff(self, failures: int) -> float:
        cfg = self.config
        base = min(cfg.ws_reconnect_initial_s * 2 ** max(0, failures - 1), cfg.ws_reconnect_max_s)
        return base * random.uniform(0.5, 1.0)  # jitter: many bots must not reconnect in lockstep

    async def _socket_loop(self) -> None:
        failures = 0
        while True:
            self._conn_messages = 0
            try:
                await self._run_socket()
            except asyncio.CancelledError:
                raise
            except CircuitOpen as exc:
                self.stats.last_error = str(exc)
                await self._clock.sleep(max(self._breaker.retry_after_s() if self._breaker else 1.0, 0.05))
                continue
            except _StaleSocket:
                failures = 1 if self._conn_messages else failures + 1
                self.stats.stale_sockets += 1
                self.stats.last_error = "no message within the heartbeat timeout"
                log.warning(
                    "Kraken WS: no message for %.1fs; reconnecting", self.config.ws_heartbeat_timeout_s
                )
            except Exception as exc:  # noqa: BLE001 - any other failure of the connection: reconnect, error kept in stats
                failures = 1 if self._conn_messages else failures + 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Kraken WS: %s; reconnecting", self.stats.last_error)
            finally:
                if self.stats.connected:
                    self.stats.connected = False
                    self._down_since = self._clock.monotonic()
                await self._close_socket()
            self.stats.reconnects += 1
            await self._clock.sleep(self._backoff(max(failures, 1)))

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        host = self.config.ws_url.split("//", 1)[-1].split("/", 1)[0].split(":")[0]
        try:
            return await self._session().ws_connect(
                self.config.ws_url,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                heartbeat=None,
                autoping=True,
                max_msg_size=4 * 1024 * 1024,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise ConnectionFailed(
                f"Kraken ws/connect: WebSocket upgrade refused (HTTP {exc.status})",
                endpoint="ws/connect",
                host=host,
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_transport_error(exc, endpoint="ws/connect", host=host) from exc

    async def _connect_within_timeout(self) -> aiohttp.ClientWebSocketResponse:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation of its caller
        async with asyncio.timeout(self.config.connect_timeout_s):
            return await self._connect()

    async def _run_socket(self) -> None:
        if self._breaker is not None:
            ticket = self._breaker.acquire()
            try:
                self._ws = await self._connect_within_timeout()
            except TimeoutError as exc:
                err = RequestTimeout("Kraken ws/connect: timed out", endpoint="ws/connect")
                self._breaker.record(ticket, err)
                raise err from exc
            except BaseException as exc:
                self._breaker.record(ticket, exc)
                raise
            self._breaker.record(ticket, None)
        else:
            self._ws = await self._connect_within_timeout()
        ws = self._ws
        self.stats.connects += 1
        self.stats.connected = True
        self._down_since = None
        self.stats.using_fallback = False
        log.info("Kraken WS connected to %s", self.config.ws_url)
        await self._subscribe(ws)
        timeout = self.config.ws_heartbeat_timeout_s
        while True:
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                raise _StaleSocket() from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise ConnectionFailed("Kraken ws: socket closed by the server", endpoint="ws")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionFailed(
                    f"Kraken ws: socket error ({type(ws.exception()).__name__})", endpoint="ws"
                )

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        subs: list[dict[str, Any]] = [{"channel": "ticker", "symbol": self.pairs}]
        if self.ohlc_interval:
            subs.append({"channel": "ohlc", "symbol": self.pairs, "interval": self.ohlc_interval})
        for params in subs:
            self._req_id += 1
            await ws.send_str(json.dumps({"method": "subscribe", "params": params, "req_id": self._req_id}))
            self.stats.subscriptions_sent += 1

    def _on_text(self, text: str) -> None:
        self.stats.messages += 1
        self._conn_messages += 1
        self.stats.last_message_at = self._clock.monotonic()
        try:
            msg = json.loads(text, parse_float=Decimal)
        except ValueError:
            self.stats.bad_messages += 1
            log.warning("Kraken WS: message is not JSON (%d bytes)", len(text))
            return
        if not isinstance(msg, dict):
            self.stats.bad_messages += 1
            return
        if msg.get("method") == "subscribe":
            if msg.get("success") is False:
                self.stats.last_error = f"subscription refused: {str(msg.get('error'))[:200]}"
                log.error("Kraken WS: %s", self.stats.last_error)
            return
        channel = msg.get("channel")
        if channel not in ("ticker", "ohlc"):
            return  # heartbeat, status, pong: liveness only
        data = msg.get("data")
        if not isinstance(data, list):
            self.stats.bad_messages += 1
            return
        now = self._clock.now()
        for item in data:
            try:
                if channel == "ticker":
                    self._emit(parse_ws_ticker(item, self._registry, now))
                else:
                    candle = parse_ws_ohlc(item, self._registry)
                    self._last_candle[candle.pair] = max(
                        candle.open_time, self._last_candle.get(candle.pair, candle.open_time)
                    )
                    self._emit(candle)
            except TradebotError as exc:
                self.stats.bad_messages += 1
                self.stats.last_error = str(exc)
                log.warning("Kraken WS: dropped a bad %s message: %s", channel, exc)

    # --- REST fallback --------------------------------------------------------------

    async def _fallback_loop(self) -> None:
        cfg = self.config
        while True:
            down = self._down_since
            if (
                self.stats.connected
                or down is None
                or self._clock.monotonic() - down < cfg.rest_fallback_after_s
            ):
                self.stats.using_fallback = False
                await self._clock.sleep(min(cfg.rest_fallback_poll_s, max(cfg.rest_fallback_after_s, 0.05)))
                continue
            if not self.stats.using_fallback:
                log.warning("Kraken WS down for %.1fs; polling REST", self._clock.monotonic() - down)
            self.stats.using_fallback = True
            await self._poll_once()
            await self._clock.sleep(cfg.rest_fallback_poll_s)

    async def _poll_once(self) -> None:
        self.stats.fallback_polls += 1
        try:
            for ticker in await self._poll_tickers(self.pairs):
                self._emit(ticker)
            if self.ohlc_interval:
                for pair in self.pairs:
                    candles = await self._poll_ohlc(pair, self.ohlc_interval)
                    last = self._last_candle.get(pair)
                    fresh = [c for c in candles if last is None or c.open_time >= last][-2:]
                    for candle in fresh:
                        self._emit(candle)
                    if candles:
                        self._last_candle[pair] = candles[-1].open_time
        except asyncio.CancelledError:
            raise
        except TradebotError as exc:
            self.stats.fallback_errors += 1
            self.stats.last_error = str(exc)
            log.warning("Kraken REST fallback poll failed: %s", exc)
