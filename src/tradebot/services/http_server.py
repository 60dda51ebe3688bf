"""The bot's HTTP server: liveness, readiness, Prometheus metrics, status, and HALT/resume.

``GET /healthz``  200 while the event loop answers and the bot is not stopping (liveness
                  probe); 503 from the moment a stop or an escalation began.
``GET /readyz``   200 when the exchange is reachable and market data is fresh, judged by
                  the health monitor's latest results of ``readiness_checks``; else 503
                  with the reasons (readiness probe).
``GET /metrics``  Prometheus text (:mod:`tradebot.services.metrics`).
``GET /status``   JSON: trading state (reason, source, since), health per check,
                  positions, PnL, uptime, restarts.
``POST /halt``, ``POST /resume``  need ``Authorization: Bearer <control_token>`` (secret
                  ``control_token``, env ``TRADEBOT_CONTROL_TOKEN``). Without a configured
                  token they answer 403 and do nothing. Optional JSON body ``{"reason": "..."}``.

Listens on 127.0.0.1 by default; ``port = 0`` takes any free port (see :attr:`HttpServer.port`).
No answer ever holds a secret: every body passes :func:`tradebot.core.secrets.redact`.

Nobody who can reach the port can hurt trading: at most ``max_connections`` connections
are open at once (further ones are closed at once), one that sends nothing for
``idle_timeout_s`` is closed, a request not answered within ``request_timeout_s`` gets
408, and any malformed credential gets 401. ``auth = "all"`` puts ``/status`` and
``/metrics`` behind the bearer token too. A non-loopback ``host`` needs the control token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from tradebot.core.secrets import redact
from tradebot.core.validate import gt, in_range, non_empty, one_of

if TYPE_CHECKING:
    from aiohttp import web

    from tradebot.core.context import BotContext
    from tradebot.core.health import HealthMonitor
    from tradebot.core.portfolio import Portfolio
    from tradebot.core.supervisor import Supervisor
    from tradebot.services.metrics import BotMetrics

__all__ = ["HttpServer", "HttpSettings", "check_bind", "http_problems", "is_loopback", "readiness"]

log = logging.getLogger("tradebot.http")

_SEVERITY = {"ok": 0, "degraded": 1, "critical": 2}
MAX_REASON = 200


@attrs.frozen
class HttpSettings:
    """``[http]``: the health/metrics/control server.

    ``readiness_checks``: checks whose results decide ``/readyz`` (a check that is not
    loaded is skipped); ``not_ready_at``: the status from which a check makes the bot not
    ready.
    """

    enabled: bool = True
    host: str = attrs.field(default="127.0.0.1", validator=non_empty)
    port: int = attrs.field(default=8765, validator=in_range(0, 65535))
    readiness_checks: list[str] = attrs.field(factory=lambda: ["api-connectivity", "staleness"])
    not_ready_at: str = attrs.field(default="critical", validator=one_of(("degraded", "critical")))
    auth: str = attrs.field(default="control", validator=one_of(("control", "all")))
    """Which endpoints need the bearer token: ``control`` (``/halt``, ``/resume``) or ``all``
    (``/status`` and ``/metrics`` too; ``/healthz`` and ``/readyz`` stay open for probes)."""
    max_connections: int = attrs.field(default=64, validator=gt(0))
    """Connections open at once; more are closed at once (never more than an eighth of the
    process's open-file limit, so trading always has file descriptors)."""
    idle_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    """A connection that sends nothing this long is closed."""
    request_timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    """A request (its body included) not answered within this gets 408."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_problems(settings: HttpSettings, secrets: Any) -> list[str]:
    """What keeps these ``[http]`` settings from running safely with these secrets."""
    if not settings.enabled:
        return []
    token = secrets.get("control_token") if hasattr(secrets, "get") else None
    problems = []
    if not token and not is_loopback(settings.host):
        problems.append(
            f"the HTTP server would listen on {settings.host}, reachable from other hosts, without a control token: "
            'set control_token (TRADEBOT_CONTROL_TOKEN or the secrets file) and [http] auth = "all", or listen on '
            "127.0.0.1 @ $.http.host"
        )
    if not token and settings.auth == "all":
        problems.append(
            '[http] auth = "all" needs a control token: set control_token (TRADEBOT_CONTROL_TOKEN or the secrets '
            "file) @ $.http.auth"
        )
    return problems


def check_bind(settings: HttpSettings) -> str | None:
    """Why the server could not listen on its host and port now (None: it could)."""
    if not settings.enabled or settings.port == 0:
        return None
    try:
        infos = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return f"the HTTP server cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} @ $.http.host"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return _bind_message(settings, exc)
    return None


def _bind_message(settings: HttpSettings, exc: OSError) -> str:
    return (
        f"the HTTP server cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}; stop what uses the "
        "port, choose another [http] port (0 takes any free one), or set [http] enabled = false @ $.http.port"
    )


def open_file_limit() -> int | None:
    """The process's soft open-file limit (None where it cannot be read)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


class _Gate:
    """Counts the server's open connections and refuses those over the cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: set[_GuardedConnection] = set()
        self.refused = 0
        self._warned_at = 0.0

    def admit(self, conn: _GuardedConnection) -> bool:
        if len(self.open) >= self.cap:
            self.refused += 1
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning(
                    "HTTP server: %d connections open, the most it takes: closing new ones (%d so far)",
                    len(self.open),
                    self.refused,
                )
            return False
        self.open.add(conn)
        return True


class _GuardedConnection(asyncio.Protocol):
    """One connection: admitted under the cap, closed when it sends nothing for a while;
    everything else is aiohttp's request handler, which this passes every event to."""

    def __init__(self, gate: _Gate, make: Any, idle_s: float) -> None:
        self._gate = gate
        self._make = make
        self._idle_s = idle_s
        self._inner: Any = None
        self._transport: Any = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        if not self._gate.admit(self):
            transport.abort()
            return
        self._inner = self._make()
        self._inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._idle_s, self._idle)

    def _idle(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._arm()
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gate.open.discard(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return str(value)


class _StopState(Protocol):
    """What ``/healthz`` reads of the bot (``context.extras["bot"]``)."""

    @property
    def stopping(self) -> bool: ...

    @property
    def stop_reason(self) -> str: ...


def readiness(context: BotContext, settings: HttpSettings) -> tuple[bool, list[str]]:
    """(ready, reasons it is not) from the health monitor's latest results."""
    health: HealthMonitor | None = context.health
    if health is None:
        return False, ["no health monitor is running"]
    if context.exchange is None:
        return False, ["no exchange is connected"]
    loaded = set(health.checks)
    results = health.report().results
    limit = _SEVERITY[settings.not_ready_at]
    reasons: list[str] = []
    for name in settings.readiness_checks:
        if name not in loaded:  # not configured in this run: nothing to judge by
            continue
        result = results.get(name)
        if result is None:
            reasons.append(f"{name}: no result yet")
            continue
        status = result.status.value
        if _SEVERITY.get(status, 2) >= limit:
            reasons.append(f"{name}: {status}: {result.message}")
    return not reasons, reasons


class HttpServer:
    """The aiohttp server of one bot. ``await start()`` returns the bound port; ``await stop()``."""

    def __init__(self, context: BotContext, settings: HttpSettings | None = None) -> None:
        self.context = context
        self.settings = settings or HttpSettings()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._gate = _Gate(self.settings.max_connections)
        self._started = time.monotonic()

    @property
    def url(self) -> str | None:
        """``http://host:port`` once started."""
        return None if self.port is None else f"http://{self.settings.host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application (routes only; used by :meth:`start` and by tests)."""
        from aiohttp import web

        timeout_s = self.settings.request_timeout_s

        @web.middleware
        async def bounded(request: web.Request, handler: Any) -> web.StreamResponse:
            try:
                async with asyncio.timeout(timeout_s):
                    return await handler(request)
            except TimeoutError:
                return self._json({"error": f"request not complete within {timeout_s:g}s"}, status=408)

        app = web.Application(middlewares=[bounded])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/status", self.status)
        app.router.add_post("/halt", self.halt)
        app.router.add_post("/resume", self.resume)
        return app

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with ``port = 0``).

        :class:`OSError` naming the host, the port and what to do when it cannot listen.
        """
        from aiohttp import web

        cfg = self.settings
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, keepalive_timeout=cfg.idle_timeout_s
        )
        await runner.setup()
        limit = open_file_limit()
        cap = cfg.max_connections if limit is None else max(1, min(cfg.max_connections, limit // 8))
        self._gate = _Gate(cap)
        make = runner.server
        assert make is not None  # set by setup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _GuardedConnection(self._gate, make, cfg.idle_timeout_s),
                cfg.host,
                cfg.port,
                reuse_address=True,
                backlog=min(128, cap * 2),
            )
        except OSError as exc:
            await runner.cleanup()
            raise OSError(exc.errno, _bind_message(cfg, exc)) from None
        self._runner = runner
        self._started = time.monotonic()
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.context.extras["http_url"] = self.url
        log.info(
            "HTTP server listening on %s (/healthz /readyz /metrics /status; at most %d connections)",
            self.url,
            cap,
        )
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for conn in list(self._gate.open):
            conn.close()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):  # not wait_for: it can lose a cancellation
                    await server.wait_closed()

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._gate.open)

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        from aiohttp import web

        body = redact(json.dumps(data, default=_json_default, indent=1))
        return web.Response(status=status, text=body, content_type="application/json")

    # --- probes ------------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        metrics: BotMetrics | None = self.context.metrics
        bot: _StopState | None = self.context.extras.get("bot")
        supervisor: Supervisor | None = self.context.supervisor
        escalated = supervisor.escalated if supervisor is not None else None
        if (bot is not None and bot.stopping) or escalated is not None:
            # a stopping bot is not alive: a probe that restarts it must not be told otherwise
            reason = (bot.stop_reason if bot is not None else "") or f"escalated: {escalated}"
            return self._json({"status": "stopping", "reason": reason}, status=503)
        return self._json(
            {
                "status": "alive",
                "uptime_s": round(time.monotonic() - self._started, 3),
                "loop_lag_s": metrics.loop_lag_s if metrics is not None else None,
            }
        )

    async def readyz(self, _request: web.Request) -> web.Response:
        try:
            ready, reasons = readiness(self.context, self.settings)
        except Exception as exc:  # noqa: BLE001 - a broken monitor means not ready, never a 500
            ready, reasons = False, [f"readiness could not be judged: {type(exc).__name__}: {exc}"]
        return self._json({"ready": ready, "reasons": reasons}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        from tradebot.services.metrics import CONTENT_TYPE

        if self.settings.auth == "all" and (denied := await self._authorise(request)) is not None:
            return denied
        metrics = self.context.metrics
        if metrics is None:
            return self._json({"error": "metrics are not collected in this run"}, status=503)
        text = redact(metrics.render_prometheus())
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def status(self, request: web.Request) -> web.Response:
        if self.settings.auth == "all" and (denied := await self._authorise(request)) is not None:
            return denied
        return self._json(self.status_data())

    def status_data(self) -> dict[str, Any]:
        """The ``/status`` document."""
        ctx = self.context
        data: dict[str, Any] = {
            "bot": ctx.settings.bot.name,
            "exchange": ctx.settings.bot.exchange,
            "pairs": list(ctx.settings.bot.pairs),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }
        trading = ctx.trading
        if trading is not None:
            data["trading"] = {
                "state": trading.state.value,
                "reason": trading.reason,
                "source": trading.source,
                "since": trading.since,
            }
        health: HealthMonitor | None = ctx.health
        if health is not None:
            report = health.report()
            data["health"] = {
                "status": report.status.value,
                "checks": {name: r.as_json() for name, r in report.results.items()},
            }
        portfolio: Portfolio | None = ctx.portfolio
        if portfolio is not None:
            positions = {}
            for pair, pos in portfolio.positions().items():
                mark = portfolio.mark_price(pair)
                positions[pair] = {"volume": pos.volume, "avg_price": pos.avg_price, "mark": mark}
            data["positions"] = positions
            markets = ctx.extras.get("markets")
            if markets is not None:
                volumes = {pair: p["volume"] for pair, p in positions.items()}
                data["dust"] = markets.dust(volumes, {pair: p["mark"] for pair, p in positions.items()})
            data["pnl"] = {
                "realized": portfolio.realized_pnl,
                "unrealized": portfolio.unrealized_pnl(),
                "equity": portfolio.equity(),
                "cash": portfolio.cash,
            }
        store = ctx.store
        restarts: dict[str, Any] = {}
        if store is not None and hasattr(store, "get_counter"):
            try:
                restarts["process"] = max(0, store.get_counter("starts") - 1)
            except Exception:  # noqa: BLE001 - a store problem must not break /status
                restarts["process"] = None
        supervisor: Supervisor | None = ctx.supervisor
        if supervisor is not None:
            restarts["components"] = {child.name: child.restarts for child in supervisor.status()}
        data["restarts"] = restarts
        data["quarantined_plugins"] = sorted(ctx.plugins.quarantined) if ctx.plugins is not None else []
        dispatcher = ctx.extras.get("notifications")
        if dispatcher is not None:
            data["notifications"] = {
                name: attrs.asdict(box.stats) for name, box in dispatcher.outboxes.items()
            }
        return data

    # --- control -------------------------------------------------------------------------

    def _control_token(self) -> str | None:
        secrets = self.context.extras.get("secrets") or {}
        token = secrets.get("control_token") if hasattr(secrets, "get") else None
        return token or None

    async def _authorise(self, request: web.Request) -> web.Response | None:
        """None when the caller may act, else the error response."""
        expected = self._control_token()
        if expected is None:
            return self._json(
                {
                    "error": "control endpoints are off: no control token is configured "
                    "(set TRADEBOT_CONTROL_TOKEN or control_token in the secrets file)"
                },
                status=403,
            )
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # any bytes a client sends compare as bytes: a malformed header is a wrong token, never an error
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, expected.encode("utf-8"))
        if not ok:
            log.warning(
                "request to %s rejected: %s",
                request.path,
                "missing bearer token" if not header else "wrong or malformed token",
            )
            resp = self._json({"error": "missing or wrong bearer token"}, status=401)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="tradebot"'
            return resp
        return None

    async def _reason(self, request: web.Request, default: str) -> str:
        if not request.can_read_body:
            return default
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return default
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            return default
        return "".join(ch for ch in reason.strip() if ch.isprintable())[:MAX_REASON]

    async def halt(self, request: web.Request) -> web.Response:
        return await self._command(request, "halt", "halted by operator over HTTP")

    async def resume(self, request: web.Request) -> web.Response:
        return await self._command(request, "resume", "resumed by operator over HTTP")

    async def _command(self, request: web.Request, action: str, default_reason: str) -> web.Response:
        """Operator commands go through the one core entry point the CLI uses too."""
        from tradebot.services.control import apply_command

        denied = await self._authorise(request)
        if denied is not None:
            return denied
        trading = self.context.trading
        if trading is None:
            return self._json({"error": "no trading state machine in this run"}, status=503)
        reason = await self._reason(request, default_reason)
        before = trading.state
        result = await apply_command(trading, action, reason, "http")
        return self._json(
            {
                "changed": trading.state is not before,
                "state": trading.state.value,
                "reason": trading.reason,
                "message": result.message,
            },
            status=200 if result.ok else 400,
        )
