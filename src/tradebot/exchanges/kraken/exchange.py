"""The Kraken exchange: :class:`tradebot.core.exchange.Exchange` over REST and WebSocket v2."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from tradebot.api import (
    BadDataError,
    Balances,
    Candle,
    Clock,
    ConfigError,
    Fill,
    InvalidOrder,
    MarketRules,
    OrderInfo,
    OrderNotFound,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderStatus,
    OrderType,
    PairStatus,
    RateLimited,
    SystemClock,
    SystemStatus,
    Ticker,
    TradebotError,
)
from tradebot.api.resilience import (
    BreakerListener,
    CircuitBreakers,
    RequestRateLimiter,
    ResilienceStats,
    RetryListener,
    RetryStats,
    TradingRateLimiter,
    call_with_retry,
    snapshot,
)
from tradebot.exchanges.kraken.balances import BalanceManager
from tradebot.exchanges.kraken.client import ENDPOINT_GROUPS, Credentials, KrakenRestClient
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.deadman import DeadMansSwitch
from tradebot.exchanges.kraken.errors import definitely_not_placed
from tradebot.exchanges.kraken.executions import ExecutionsStream
from tradebot.exchanges.kraken.nonce import NonceSource
from tradebot.exchanges.kraken.pairs import PairRegistry
from tradebot.exchanges.kraken.parse import (
    parse_add_order,
    parse_asset_decimals,
    parse_balance,
    parse_cancel,
    parse_history_page,
    parse_market_rules,
    parse_ohlc,
    parse_order,
    parse_orders,
    parse_system_status,
    parse_ticker,
    parse_time,
    parse_trade_volume,
    parse_trades,
)
from tradebot.exchanges.kraken.ws import MarketDataStats, MarketDataStream

__all__ = ["KrakenExchange"]

log = logging.getLogger(__name__)

MarketEvent = Ticker | Candle

FEE_IN_QUOTE = "fciq"
"""AddOrder's ``oflags``: every fee is charged in the quote currency, the one the portfolio books it in."""
_HISTORY_MAX_PAGES = 200  # 50 entries a page: 10,000 orders or trades

# Kraken's extra cost for cancelling a young order (seconds since placement -> cost).
_CANCEL_COST = ((5.0, 8), (10.0, 6), (15.0, 5), (45.0, 4), (90.0, 2), (300.0, 1))


class KrakenExchange:
    """Kraken spot: market data, balances and idempotent orders, resilient to faults.

    Build it with :func:`tradebot.exchanges.kraken.plugin.create` from config, or directly::

        KrakenExchange(KrakenConfig(), api_key=..., api_secret=..., state_dir=Path("state"))

    Without keys only public calls (market data, time, status) work. Recovery hooks:
    :meth:`reconnect` (new HTTP session, WebSocket reconnect) and :meth:`flush_dns`.
    Counters: :attr:`retry_stats`, :attr:`breakers`, :attr:`market_data_stats`,
    :attr:`balance_manager`, :attr:`orders_resolved_by_lookup`; ``/metrics`` reads
    :meth:`resilience_stats` (the :class:`~tradebot.api.ReportsResilience` capability).
    """

    name = "kraken"
    checks_orders_at_wire = True
    """The REST client reads the trading state again in the turn an AddOrder is sent."""

    def __init__(
        self,
        config: KrakenConfig | None = None,
        *,
        api_key: str | None = None,
        api_secret: str | None = None,
        state_dir: Path | None = None,
        clock: Clock | None = None,
        rate_limiter: RequestRateLimiter | None = None,
        trading_limiter: TradingRateLimiter | None = None,
        breaker_listeners: Iterable[BreakerListener] = (),
        retry_listeners: Iterable[RetryListener] = (),
        pairs: PairRegistry | None = None,
    ) -> None:
        self.config = config = config or KrakenConfig()
        if bool(api_key) != bool(api_secret):
            raise ConfigError("Kraken: give both the API key and the API secret, or neither")
        self._clock: Clock = clock or SystemClock()
        self.pairs = pairs or PairRegistry()
        self.breakers = CircuitBreakers(
            "kraken", ENDPOINT_GROUPS, config.breaker_config(), clock=self._clock, listeners=breaker_listeners
        )
        self.retry_stats = RetryStats(retry_listeners)
        self.rate_limiter = rate_limiter or RequestRateLimiter.build(
            config.rest_tier, min_spacing_s=config.min_spacing_s, clock=self._clock, margin=config.rate_margin
        )
        self.trading_limiter = trading_limiter or TradingRateLimiter(config.trading_tier, clock=self._clock)
        nonce_path = Path(state_dir) / config.nonce_file if state_dir is not None else None
        credentials = Credentials(api_key, api_secret) if api_key and api_secret else None
        self.rest = KrakenRestClient(
            config,
            credentials=credentials,
            nonces=NonceSource(nonce_path),
            breakers=self.breakers,
            limiter=self.rate_limiter,
            retry_stats=self.retry_stats,
            clock=self._clock,
        )
        self.balance_manager = BalanceManager(
            self._fetch_balances, clock=self._clock, cache_s=config.balance_cache_s
        )
        self._placed_at: dict[str, tuple[str, float]] = {}  # cl_ord_id -> (pair, monotonic placement time)
        self._streams: list[MarketDataStream] = []
        self.orders_resolved_by_lookup = 0
        self.order_resends = 0
        # started with the first order (or the first open order seen): "while trading"
        self.dead_mans_switch: DeadMansSwitch | None = None
        if credentials is not None and config.dead_mans_switch_s > 0:
            self.dead_mans_switch = DeadMansSwitch(
                self.rest.private,
                timeout_s=config.dead_mans_switch_s,
                refresh_s=config.dead_mans_switch_refresh_s,
                clock=self._clock,
            )
        self.executions: ExecutionsStream | None = None
        if credentials is not None and config.executions_channel:
            self.executions = ExecutionsStream(
                config=config,
                registry=self.pairs,
                session=lambda: self.rest.session,
                token=self._ws_token,
                clock=self._clock,
            )
        self._markets: dict[str, MarketRules] = {}
        self._markets_at = float("-inf")
        self._rule_problems_seen: set[str] = set()

    def resilience_stats(self) -> ResilienceStats:
        """Breakers, request and trading rate-limit levels, calls per endpoint, latencies."""
        return snapshot(
            breakers=self.breakers,
            rate_limiter=self.rate_limiter,
            trading_limiter=self.trading_limiter,
            retry_stats=self.retry_stats,
            request_timings=self.rest.request_timings,
            queue_timings=self.rest.queue_timings,
        )

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        """Hear every transition of this exchange's circuit breakers."""
        self.breakers.add_listener(listener)

    def add_retry_listener(self, listener: RetryListener) -> None:
        """Hear every retry of this exchange's calls."""
        self.retry_stats.add_listener(listener)

    def __repr__(self) -> str:
        return (
            f"<KrakenExchange {self.config.base_url} private={'yes' if self.rest.has_credentials else 'no'}>"
        )

    # --- lifecycle and recovery ------------------------------------------------------

    async def start(self) -> None:
        await self.rest.start()

    async def close(self) -> None:
        if self.executions is not None:
            await self.executions.stop()
        if self.dead_mans_switch is not None and self.dead_mans_switch.running:
            # a clean stop: the shutdown policy has cancelled (or chosen to leave) the orders
            await self.dead_mans_switch.stop(disarm=True, timeout_s=self.config.request_timeout_s)
        for stream in self._streams:
            await stream.stop()
        await self.rest.close()

    def _start_trading_guards(self) -> None:
        """Arm the dead man's switch and follow executions (idempotent)."""
        if self.dead_mans_switch is not None and not self.dead_mans_switch.running:
            self.dead_mans_switch.start()
        if self.executions is not None and not self.executions.running:
            self.executions.start()

    async def _ws_token(self) -> str:
        result = await self.rest.private("GetWebSocketsToken")
        token = result.get("token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            raise BadDataError(
                "Kraken private/GetWebSocketsToken: the answer has no token",
                endpoint="private/GetWebSocketsToken",
            )
        return token

    async def reconnect(self) -> None:
        """New HTTP session (fresh connections) and a reconnect of every WebSocket."""
        await self.rest.reconnect()
        for stream in self._streams:
            await stream.force_reconnect()

    def flush_dns(self) -> None:
        """Forget cached DNS answers (call after a DNS failure or a suspected DNS change)."""
        self.rest.flush_dns()

    @property
    def market_data_stats(self) -> MarketDataStats | None:
        """Counters of the most recent market-data stream (None before the first)."""
        return self._streams[-1].stats if self._streams else None

    # --- public data --------------------------------------------------------------------

    async def server_time(self) -> datetime:
        return parse_time(await self.rest.public("Time"))

    async def system_status(self) -> SystemStatus:
        return parse_system_status(await self.rest.public("SystemStatus"))

    async def ticker(self, pairs: Sequence[str]) -> list[Ticker]:
        """Tickers of ``pairs`` over REST."""
        names = ",".join([self.pairs.info(p).altname for p in pairs])  # a list joins faster than a generator
        return parse_ticker(await self.rest.public("Ticker", {"pair": names}), self.pairs, self._clock.now())

    async def ohlc(self, pair: str, interval: int = 1) -> list[Candle]:
        """Candles of ``pair`` over REST, oldest first; the last one is still open."""
        if interval not in (1, 5, 15, 30, 60, 240, 1440, 10080, 21600):
            raise ConfigError(f"Kraken OHLC: interval must be one of Kraken's intervals (got {interval})")
        info = self.pairs.info(pair)
        result = await self.rest.public("OHLC", {"pair": info.altname, "interval": interval})
        return parse_ohlc(result, self.pairs, interval)

    async def refresh_pairs(self) -> int:
        """Learn every pair from ``AssetPairs``. Returns how many were read."""
        return self.pairs.load_asset_pairs(await self.rest.public("AssetPairs"))

    async def markets(self) -> Mapping[str, MarketRules]:
        """Every pair's rules from ``AssetPairs``, re-read every ``markets_refresh_s``.

        Fees are the account's tier (its 30-day volume from ``TradeVolume``) when keys are
        given, else the first tier. A pair whose entry cannot be read keeps its last good
        rules (logged); when the whole request fails the last good rules are returned, and
        the error is raised only while none are known.
        """
        now = self._clock.monotonic()
        if self._markets and now - self._markets_at < self.config.markets_refresh_s:
            return dict(self._markets)
        try:
            await self._refresh_markets()
        except TradebotError as exc:
            if not self._markets:
                raise
            log.warning("Kraken market rules not refreshed (%s); keeping the last good ones", exc)
        self._markets_at = now
        return dict(self._markets)

    async def _refresh_markets(self) -> None:
        result = await self.rest.public("AssetPairs")
        self.pairs.load_asset_pairs(result)
        try:
            decimals: dict[str, int] | None = parse_asset_decimals(await self.rest.public("Assets"))
        except TradebotError as exc:
            log.warning("Kraken Assets not read (%s): fees are not rounded to the quote's decimals", exc)
            decimals = None
        volume = Decimal(0)
        if self.rest.has_credentials:
            try:
                volume = parse_trade_volume(await self.rest.private("TradeVolume"))
            except TradebotError as exc:
                log.warning("Kraken TradeVolume not read (%s): fees assumed at the first tier", exc)
        rules, problems = parse_market_rules(result, self.pairs, fee_volume=volume, asset_decimals=decimals)
        for problem in problems:
            # the same bad entry comes back on every refresh: said loudly once
            level = logging.DEBUG if str(problem) in self._rule_problems_seen else logging.ERROR
            if len(self._rule_problems_seen) < 10_000:  # bounded, whatever the exchange sends
                self._rule_problems_seen.add(str(problem))
            log.log(level, "Kraken market rules: %s; that pair keeps its last good rules", problem)
        listed = {info.pair for name in result if (info := self.pairs.from_kraken(str(name))) is not None}
        for pair, known in list(self._markets.items()):
            if pair not in listed and known.status is not PairStatus.DELISTED:
                log.warning(
                    "Kraken no longer lists %s in AssetPairs: treated as delisted, no new orders", pair
                )
                self._markets[pair] = attrs.evolve(known, status=PairStatus.DELISTED)
        self._markets.update(rules)

    # --- account ----------------------------------------------------------------------

    async def _fetch_balances(self) -> dict[str, Decimal]:
        return parse_balance(await self.rest.private("Balance"))

    async def balances(self) -> Balances:
        return await self.balance_manager.get()

    async def open_orders(self) -> Sequence[OrderInfo]:
        result = await self.rest.private("OpenOrders")
        orders = parse_orders(result, self.pairs, "private/OpenOrders", "open")
        if orders:
            self._start_trading_guards()  # orders left from before are guarded too
        return orders

    async def _history(self, method: str, key: str, since: datetime | None) -> list[tuple[str, Any]]:
        """Every entry of a paged history call (newest first), up to ``_HISTORY_MAX_PAGES`` pages."""
        params: dict[str, Any] = {} if since is None else {"start": int(since.timestamp())}
        entries: list[tuple[str, Any]] = []
        for _ in range(_HISTORY_MAX_PAGES):
            result = await self.rest.private(method, {**params, "ofs": len(entries)})
            page, count = parse_history_page(result, f"private/{method}", key)
            entries.extend(page.items())
            if not page or len(entries) >= count:
                return entries
        log.warning(
            "Kraken %s: history longer than %d pages; only the newest were read", method, _HISTORY_MAX_PAGES
        )
        return entries

    async def closed_orders(self, since: datetime | None = None) -> Sequence[OrderInfo]:
        """Orders closed (filled, cancelled, expired) after ``since`` (all when None), newest first.

        Orders in pairs this client does not know are left out: they are none of this bot's."""
        orders = []
        for txid, data in await self._history("ClosedOrders", "closed", since):
            try:
                orders.append(parse_order(txid, data, self.pairs, "private/ClosedOrders"))
            except TradebotError as exc:
                if "pair this client does not know" not in str(exc):
                    raise
        return orders

    async def trades(self, since: datetime | None = None) -> Sequence[Fill]:
        """The account's trades after ``since`` (all when None), newest first; in pairs this client knows."""
        fills: list[Fill] = []
        for trade_id, data in await self._history("TradesHistory", "trades", since):
            try:
                fills.extend(parse_trades({trade_id: data}, self.pairs, "private/TradesHistory"))
            except TradebotError as exc:
                if "pair this client does not know" not in str(exc):
                    raise
        return fills

    async def order_by_client_id(self, client_order_id: str) -> OrderInfo | None:
        if self.executions is not None:
            streamed = self.executions.lookup(client_order_id)
            if streamed is not None:
                return streamed
        for method, key in (("OpenOrders", "open"), ("ClosedOrders", "closed")):
            result = await self.rest.private(method, {"cl_ord_id": client_order_id})
            for order in parse_orders(result, self.pairs, f"private/{method}", key):
                # filter here too: an answer listing other orders must not be taken for ours
                if order.client_order_id == client_order_id:
                    return order
        return None

    # --- orders ---------------------------------------------------------------------------

    def _order_params(self, request: OrderRequest) -> dict[str, Any]:
        info = self.pairs.info(request.pair)
        if not request.client_order_id:
            raise InvalidOrder(
                "Kraken AddOrder: an order needs a client order id", endpoint="private/AddOrder"
            )
        if request.volume <= 0 or not request.volume.is_finite():
            raise InvalidOrder(
                f"Kraken AddOrder: volume must be > 0 (got {request.volume})", endpoint="private/AddOrder"
            )
        params: dict[str, Any] = {
            "cl_ord_id": request.client_order_id,
            "ordertype": request.order_type.value,
            "pair": info.altname,
            "type": request.side.value,
            "volume": format(request.volume, "f"),
            # the fee in the quote currency on every order: without it Kraken takes a sell's fee
            # in the base currency, and the bot's cash and positions would drift from the balances
            "oflags": FEE_IN_QUOTE,
        }
        if request.order_type is OrderType.LIMIT:
            if request.price is None or request.price <= 0 or not request.price.is_finite():
                raise InvalidOrder(
                    f"Kraken AddOrder: a limit order needs a positive price (got {request.price})",
                    endpoint="private/AddOrder",
                    client_order_id=request.client_order_id,
                )
            params["price"] = format(request.price, "f")
        return params

    async def _send_add_order(self, request: OrderRequest, params: dict[str, Any]) -> list[str]:
        """One AddOrder, retried only while it certainly did not reach the exchange."""

        pair = self.pairs.info(request.pair).pair

        async def send() -> list[str]:
            await self.trading_limiter.acquire(pair, 1)
            try:
                return parse_add_order(await self.rest.private("AddOrder", params, idempotent=False))
            except TradebotError as exc:
                if isinstance(exc, RateLimited):
                    self.trading_limiter.penalize(pair)
                if definitely_not_placed(exc):
                    raise
                raise OrderOutcomeUnknown(
                    f"Kraken private/AddOrder: outcome unknown after {type(exc).__name__}",
                    endpoint="private/AddOrder",
                    client_order_id=request.client_order_id,
                ) from exc

        return await call_with_retry(
            send,
            endpoint="private/AddOrder",
            policy=self.rest.retry_policy,
            stats=self.retry_stats,
            idempotent=True,
        )

    async def _lookup_after_unknown(self, request: OrderRequest, cause: BaseException) -> OrderInfo | None:
        """Find the order by its client id after an unknown outcome; raise if we cannot tell."""
        await self._clock.sleep(self.config.order_lookup_delay_s)  # let a late request land first
        try:
            return await self.order_by_client_id(request.client_order_id)
        except TradebotError as exc:
            raise OrderOutcomeUnknown(
                f"Kraken private/AddOrder: outcome unknown and the lookup failed ({type(exc).__name__});"
                " resolve by client order id before resending",
                endpoint="private/AddOrder",
                client_order_id=request.client_order_id,
            ) from cause

    async def place_order(self, request: OrderRequest) -> OrderInfo:
        params = self._order_params(request)
        self._start_trading_guards()
        if self.executions is not None and request.order_type is OrderType.MARKET:
            # a market order is done at once: the stream answers once it has said so
            self.executions.expect_final(request.client_order_id)
        last_unknown: BaseException | None = None
        for send_no in range(1, self.config.max_order_sends + 1):
            try:
                txids = await self._send_add_order(request, params)
            except OrderOutcomeUnknown as exc:
                last_unknown = exc
                found = await self._lookup_after_unknown(request, exc)
                if found is not None:
                    self.orders_resolved_by_lookup += 1
                    log.info("AddOrder %s: outcome was unknown; lookup found it", request.client_order_id)
                    self._remember(request)
                    return found
                log.warning(
                    "AddOrder %s: outcome unknown, lookup proves absent; resending", request.client_order_id
                )
                self.order_resends += 1
                continue
            except TradebotError as exc:
                if send_no > 1 and not exc.transient:
                    # a resend was refused: maybe because the earlier send landed after all
                    found = await self._lookup_after_unknown(request, exc)
                    if found is not None:
                        self.orders_resolved_by_lookup += 1
                        self._remember(request)
                        return found
                raise
            self._remember(request)
            return OrderInfo(
                client_order_id=request.client_order_id,
                exchange_order_id=txids[0],
                pair=self.pairs.info(request.pair).pair,
                side=request.side,
                order_type=request.order_type,
                volume=request.volume,
                filled_volume=Decimal(0),
                status=OrderStatus.OPEN,
                price=request.price,
                created_at=self._clock.now(),
            )
        raise OrderOutcomeUnknown(
            f"Kraken private/AddOrder: no answer after {self.config.max_order_sends} sends; the last lookup"
            " found no order, retry later with the same client order id",
            endpoint="private/AddOrder",
            client_order_id=request.client_order_id,
        ) from last_unknown

    def _remember(self, request: OrderRequest) -> None:
        self._placed_at[request.client_order_id] = (
            self.pairs.info(request.pair).pair,
            self._clock.monotonic(),
        )
        if len(self._placed_at) > 10_000:  # only young orders matter for the cancel cost
            oldest = next(iter(self._placed_at))
            del self._placed_at[oldest]

    def _cancel_cost(self, client_order_id: str) -> tuple[str, int]:
        pair, placed = self._placed_at.get(client_order_id, ("*", float("-inf")))
        age = self._clock.monotonic() - placed
        return pair, next((cost for limit, cost in _CANCEL_COST if age < limit), 0)

    async def cancel_order(self, client_order_id: str) -> bool:
        if self.executions is not None:
            self.executions.expect_final(client_order_id)
        pair, cost = self._cancel_cost(client_order_id)
        await self.trading_limiter.acquire(pair, cost)
        attempts_before = self.retry_stats.of("private/CancelOrder").attempts
        try:
            count = parse_cancel(await self.rest.private("CancelOrder", {"cl_ord_id": client_order_id}))
        except OrderNotFound:
            if self.retry_stats.of("private/CancelOrder").attempts - attempts_before > 1:
                # an earlier attempt may have cancelled it before its answer was lost
                order = await self.order_by_client_id(client_order_id)
                return order is not None and order.status is OrderStatus.CANCELED
            return False
        return count > 0

    # --- market data -------------------------------------------------------------------------

    def market_data(
        self, pairs: Sequence[str], *, ohlc_interval: int | None = None
    ) -> AsyncIterator[MarketEvent]:
        async def poll_ohlc(pair: str, interval: int) -> Sequence[Candle]:
            return await self.ohlc(pair, interval)

        stream = MarketDataStream(
            pairs=pairs,
            ohlc_interval=ohlc_interval,
            config=self.config,
            registry=self.pairs,
            session=lambda: self.rest.session,
            poll_tickers=self.ticker,
            poll_ohlc=poll_ohlc,
            breaker=self.breakers["websocket"],
            clock=self._clock,
        )
        self._streams = [s for s in self._streams if not s.finished] + [stream]
        return stream.events()
