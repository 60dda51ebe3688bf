"""The simulator: one object that owns the market, the account, the faults and the HTTP server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
from aiohttp import web

from tradebot.core.clock import Clock, SystemClock
from tradebot.core.tasks import cancel_and_wait
from tradebot.core.validate import ge, gt, one_of
from tradebot.exchanges.kraken.fees import KRAKEN_FEES
from tradebot.simulator._account import Account, OrderParams, SimOrder
from tradebot.simulator._admin import admin_routes
from tradebot.simulator._catalog import default_catalog
from tradebot.simulator._faults import FaultInjector, load_scenario
from tradebot.simulator._market import Market, PairMarket
from tradebot.simulator._protocol import fmt_decimal
from tradebot.simulator._ratelimit import RATE_TIERS, DecayCounter
from tradebot.simulator._rest import ENDPOINTS, Encoded, RestApi
from tradebot.simulator._ws import WebSocketHub

__all__ = ["DEFAULT_BALANCES", "SimStats", "Simulator", "SimulatorConfig", "run_simulator"]

DEFAULT_BALANCES: Mapping[str, Decimal] = {
    "USD": Decimal("100000"),
    "BTC": Decimal("1"),
    "ETH": Decimal("10"),
}


def _known_balances(_inst: Any, attribute: attrs.Attribute[Any], value: Mapping[str, Decimal]) -> None:
    catalog = default_catalog()
    for code, amount in value.items():
        if catalog.asset(code) is None:
            known = ", ".join(sorted(catalog.assets))
            raise ValueError(f"{attribute.name}: unknown asset {code!r} (known: {known})")
        if not Decimal(amount).is_finite() or Decimal(amount) < 0:
            raise ValueError(f"{attribute.name}: {code} must be a number >= 0 (got {amount!r})")


@attrs.frozen
class SimulatorConfig:
    """How to run the simulator. Every field has a safe default (loopback, seeded, no faults).

    ``tick_interval_s = 0`` turns the market clock off: prices then move only through
    :meth:`Simulator.step` (deterministic tests). ``faults`` is a spec string and
    ``scenario`` a TOML file (see :mod:`tradebot.simulator._faults`).
    ``api_key``/``api_secret`` left empty are generated at random.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=ge(0))
    seed: int = 1
    api_key: str | None = None
    api_secret: str | None = attrs.field(default=None, repr=False)
    faults: str | None = None
    scenario: str | None = None
    tick_interval_s: float = attrs.field(default=0.2, validator=ge(0))
    rate_tier: str = attrs.field(default="intermediate", validator=one_of(tuple(RATE_TIERS)))
    balances: Mapping[str, Decimal] = attrs.field(
        factory=lambda: dict(DEFAULT_BALANCES), validator=_known_balances
    )
    heartbeat_s: float = attrs.field(default=1.0, validator=gt(0))
    volatility: float = attrs.field(default=0.0006, validator=ge(0))
    trend: float = attrs.field(default=0.00015, validator=ge(0))
    fee_volume: Decimal = attrs.field(default=Decimal(0), converter=Decimal, validator=ge(Decimal(0)))
    """30-day traded volume (USD) the account is deemed to have: its tier of Kraken's fee
    schedule, reported by ``TradeVolume`` and charged on every fill."""


@attrs.define
class SimStats:
    """Request counters: per endpoint, and AddOrder requests per ``cl_ord_id``."""

    requests: Counter[str] = attrs.Factory(Counter)
    add_order_calls: Counter[str] = attrs.Factory(Counter)

    def total(self) -> int:
        return sum(self.requests.values())


def generate_credentials() -> tuple[str, str]:
    """A random API key and base64 secret shaped like Kraken's (test credentials only)."""
    key = base64.b64encode(secrets.token_bytes(42)).decode()
    secret = base64.b64encode(secrets.token_bytes(64)).decode()
    return key, secret


class Simulator:
    """A Kraken-compatible exchange on 127.0.0.1: REST, WebSocket v2, faults and an admin API.

    Use :func:`run_simulator` in tests; call :meth:`start`/:meth:`stop` to manage it by hand.
    ``clock`` drives rate-limit decay, fault windows and timestamps (pass a
    :class:`~tradebot.core.clock.FakeClock` to test limits without waiting).
    """

    def __init__(self, config: SimulatorConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config = config or SimulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self.catalog = default_catalog()
        self.market = Market(
            self.catalog, config.seed, self.clock.now(), volatility=config.volatility, trend=config.trend
        )
        self.account = Account(
            self.catalog,
            config.balances,
            random.Random(f"{config.seed}:ids"),
            opened_at=self.clock.now().timestamp(),
            taker_fee=KRAKEN_FEES.taker_pct(config.fee_volume) / 100,
            maker_fee=KRAKEN_FEES.maker_pct(config.fee_volume) / 100,
        )
        self.faults = FaultInjector(config.seed, self.clock, known_targets=ENDPOINTS)
        if config.faults:
            self.faults.add(config.faults)
        if config.scenario:
            self.faults.add(load_scenario(config.scenario))
        self.credentials_generated = not (config.api_key and config.api_secret)
        if self.credentials_generated:
            self.api_key, self.api_secret = generate_credentials()
        else:
            self.api_key, self.api_secret = str(config.api_key), str(config.api_secret)
        self.last_nonce: dict[str, int] = {}
        self.stats = SimStats()
        # each pair's Ticker member as JSON, with the market version it shows (see public_ticker)
        self.ticker_rows: dict[str, tuple[tuple[int, int], bytes]] = {}
        # whole Ticker answers per ``pair`` text: (markets, (second, their ticks), answer)
        self.ticker_answers: dict[str, tuple[list[PairMarket], tuple[int, list[int]], Encoded]] = {}
        self.tier = RATE_TIERS[config.rate_tier]
        self._rest_limiters: dict[str, DecayCounter] = {}
        self._order_limiters: dict[str, DecayCounter] = {}
        self.ws = WebSocketHub(self, heartbeat_s=config.heartbeat_s)
        self._rest = RestApi(self)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._status_seen = self.status
        self.dead_mans_switch: float | None = None  # unix time CancelAllOrdersAfter fires at
        self.dead_mans_switch_fired = 0
        self._ws_tokens: dict[str, float] = {}  # token -> unix time it stops being accepted
        self._ids = random.Random(f"{config.seed}:sim-ids")

    def __repr__(self) -> str:
        return f"<Simulator {self.base_url if self._port else 'stopped'} seed={self.config.seed}>"

    # --- addresses ------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` — use in place of ``https://api.kraken.com``."""
        return f"http://{self.config.host}:{self._port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT/v2`` — use in place of ``wss://ws.kraken.com/v2``."""
        return f"ws://{self.config.host}:{self._port}/v2"

    # --- lifecycle ------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("GET", "/v2", self.ws.handle)
        app.router.add_routes(self._rest.routes())
        app.router.add_routes(admin_routes(self))
        return app

    async def start(self) -> None:
        """Bind the server and start the market clock."""
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        if self.config.tick_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._tick_loop(), name="sim-market"))
        self._tasks.append(asyncio.create_task(self._fault_loop(), name="sim-faults"))

    async def stop(self) -> None:
        """Close every connection and stop. Safe to call twice."""
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        await self.ws.disconnect_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait(self, seconds: float) -> None:
        """Sleep (real time) unless the simulator stops first: used for latency and hangs."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for: it can lose a cancellation
                await self._closing.wait()

    async def _tick_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.tick_interval_s)
            self.step()

    async def _fault_loop(self) -> None:
        while True:
            await self.sync_faults()
            self.housekeeping()
            await asyncio.sleep(0.05)

    def housekeeping(self) -> None:
        """Time-driven exchange behaviour between ticks: GTD expiry and the dead man's switch."""
        now = self.clock.now().timestamp()
        self.account.expire(now=now)
        deadline = self.dead_mans_switch
        if deadline is not None and now >= deadline:
            self.dead_mans_switch = None
            self.dead_mans_switch_fired += 1
            for order in self.account.open_orders():
                self.account.cancel(order, now=now)

    def arm_dead_mans_switch(self, timeout_s: int) -> datetime | None:
        """CancelAllOrdersAfter: (re)start the countdown, or with 0 disarm it; returns the trigger time."""
        if timeout_s == 0:
            self.dead_mans_switch = None
            return None
        now = self.clock.now()
        self.dead_mans_switch = now.timestamp() + timeout_s
        return now + timedelta(seconds=timeout_s)

    def issue_ws_token(self) -> str:
        """A WebSocket token (GetWebSocketsToken): must be used to connect within 15 minutes."""
        token = base64.b64encode(secrets.token_bytes(30)).decode()
        now = self.clock.now().timestamp()
        self._ws_tokens = {t: exp for t, exp in self._ws_tokens.items() if exp > now}
        self._ws_tokens[token] = now + 900
        return token

    def ws_token_valid(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        expires = self._ws_tokens.get(token)
        return expires is not None and expires > self.clock.now().timestamp()

    def new_id(self, prefix: str) -> str:
        chars = "".join(self._ids.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
        return f"{prefix}{chars[:5]}-{chars[5:10]}-{chars[10:]}"

    def price_in(self, code: str, target: str) -> Decimal:
        """The value of one ``code`` in ``target`` at the current mid (through USD if need be)."""
        if code == target:
            return Decimal(1)
        for pair in self.catalog.pairs.values():
            pm = self.market[pair.key]
            mid = (pm.bid + pm.ask) / 2
            if pair.base.code == code and pair.quote.code == target:
                return mid
            if pair.quote.code == code and pair.base.code == target:
                return 1 / mid
        if "USD" not in (code, target):
            return self.price_in(code, "USD") * self.price_in("USD", target)
        if code == "USD":  # e.g. USD -> EUR through BTC
            return self.price_in("BTC", target) / self.price_in("BTC", "USD")
        return self.price_in(code, "BTC") * self.price_in("BTC", target)

    async def sync_faults(self) -> None:
        """Act on fault changes: fire ``ws_disconnect`` rules, announce status changes."""
        for refuse_s in self.faults.take_disconnects():
            await self.ws.disconnect_all(refuse_s)
        status = self.status
        if status != self._status_seen:
            self._status_seen = status
            self.ws.broadcast_status()

    # --- exchange behaviour ---------------------------------------------------

    @property
    def status(self) -> str:
        """``online`` unless a ``status`` fault is active."""
        return self.faults.status()

    def step(self, ticks: int = 1) -> int:
        """Move the market ``ticks`` ticks (filling crossed limit orders); 0 while a ``stale`` fault holds."""
        taken = 0
        for _ in range(ticks):
            if self.faults.stale():
                break
            now = self.clock.now()
            self.market.step(now)
            self.account.match(self.market, now=now.timestamp())
            self.ws.broadcast_tick()
            taken += 1
        return taken

    def place_order(self, params: OrderParams) -> SimOrder | None:
        return self.account.place(
            params, self.market, now=self.clock.now().timestamp(), mono=self.clock.monotonic()
        )

    def admit_rest_call(self, api_key: str, cost: int) -> bool:
        """Kraken's per-key REST counter (tier limits, or a ``ratelimit`` fault's)."""
        limiter = self._rest_limiters.get(api_key)
        if limiter is None:
            limiter = self._rest_limiters[api_key] = DecayCounter(
                self.tier.rest_max, self.tier.rest_decay, self.clock
            )
        override = self.faults.rest_limit()
        if override is None:
            return limiter.try_add(cost, decay=self.tier.rest_decay)
        return limiter.try_add(cost, maximum=override[0], decay=override[1] or self.tier.rest_decay)

    def admit_order_call(self, pair_key: str, cost: float, *, force: bool = False) -> bool:
        """Kraken's per-pair matching-engine counter for AddOrder/CancelOrder.

        ``force`` counts the cost even past the limit (a batch cancel is never refused).
        """
        limiter = self._order_limiters.get(pair_key)
        if limiter is None:
            limiter = self._order_limiters[pair_key] = DecayCounter(
                self.tier.order_max, self.tier.order_decay, self.clock
            )
        override = self.faults.order_limit()
        if force:
            limiter.force_add(cost)
            return True
        if override is None:
            return limiter.try_add(cost, decay=self.tier.order_decay)
        return limiter.try_add(cost, maximum=override[0], decay=override[1] or self.tier.order_decay)

    # --- inspection -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON-ready picture of the exchange (what ``GET /_sim/state`` returns). No secrets."""
        catalog = self.catalog
        holds = self.account.holds(self.market)

        def amount(code: str, value: Decimal) -> str:
            return fmt_decimal(value, catalog.assets[code].decimals)

        def order(o: SimOrder) -> dict[str, Any]:
            return {"txid": o.txid, "pair": o.pair.wsname, **o.to_kraken(with_trades=True)}

        return {
            "time": self.clock.now().isoformat(),
            "seed": self.config.seed,
            "status": self.status,
            "stale": self.faults.stale(),
            "ticks": {p.pair.wsname: p.ticks for p in self.market.pairs.values()},
            "prices": {
                p.pair.wsname: {"bid": str(p.bid), "ask": str(p.ask), "last": str(p.last)}
                for p in self.market.pairs.values()
            },
            "balances": {code: amount(code, v) for code, v in self.account.balances.items()},
            "holds": {code: amount(code, v) for code, v in holds.items()},
            "open_orders": [order(o) for o in self.account.open_orders()],
            "closed_orders": [order(o) for o in self.account.closed_orders()],
            "trades": len(self.account.trades),
            "add_order_calls": dict(self.stats.add_order_calls),
            "orders_created": dict(self.account.orders_created),
            "requests": dict(self.stats.requests),
            "rest_counter": {
                "max": self.tier.rest_max,
                "level": max((lim.level for lim in self._rest_limiters.values()), default=0.0),
            },
            "ws": {
                "connected": self.ws.connected,
                "connections_total": self.ws.connections_total,
                "refusing_for_s": max(0.0, self.ws.refuse_until - self.clock.monotonic()),
            },
            "faults": self.faults.describe(),
            "dead_mans_switch": {"trigger_at": self.dead_mans_switch, "fired": self.dead_mans_switch_fired},
        }


@contextlib.asynccontextmanager
async def run_simulator(
    config: SimulatorConfig | None = None, *, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the block.

    ``overrides`` are :class:`SimulatorConfig` fields, e.g.
    ``run_simulator(seed=7, faults="latency=0.1", tick_interval_s=0.05, rate_tier="pro")``.
    """
    cfg = attrs.evolve(config or SimulatorConfig(), **overrides)
    sim = Simulator(cfg, clock=clock)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
