"""Kraken WebSocket v2 ``executions``: the account's order events and fills as they happen.

:class:`ExecutionsStream` keeps one authenticated socket (token from ``GetWebSocketsToken``),
subscribes to ``executions`` with a snapshot of open orders, and keeps the latest state of every
order it has seen. :meth:`ExecutionsStream.lookup` answers from that state only when it is
certainly complete: the socket is live (a message within ``ws_heartbeat_timeout_s``, no gap in
Kraken's sequence numbers since the snapshot) and every fill of the order was seen on it.
Otherwise it answers None and the caller asks REST, so REST stays the fallback for anything
the stream cannot vouch for. A dead socket is reconnected with backoff, with a fresh token and a
fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import attrs

from tradebot.api import (
    Clock,
    OrderInfo,
    OrderStatus,
    OrderType,
    Side,
    SystemClock,
    TradebotError,
    cancel_and_wait,
)
from tradebot.exchanges.kraken.config import KrakenConfig
from tradebot.exchanges.kraken.pairs import PairRegistry
from tradebot.exchanges.kraken.parse import _Where, timestamp

__all__ = ["ExecutionsStats", "ExecutionsStream"]

log = logging.getLogger(__name__)

_JSON = json.JSONDecoder(parse_float=Decimal)
_STATUS = {
    "pending_new": OrderStatus.OPEN,
    "new": OrderStatus.OPEN,
    "partially_filled": OrderStatus.OPEN,
    "filled": OrderStatus.CLOSED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
}
_KEPT = 10_000  # orders remembered (closed ones are dropped oldest first)


@attrs.define
class ExecutionsStats:
    """Counters of the executions stream (for health checks and tests)."""

    connects: int = 0
    reconnects: int = 0
    snapshots: int = 0
    reports: int = 0
    fills: int = 0
    bad_messages: int = 0
    sequence_gaps: int = 0
    lookups_served: int = 0
    lookups_deferred: int = 0
    last_message_at: float | None = None  # monotonic
    last_error: str | None = None


class _Order:
    """What the stream knows of one order: the merged reports and the fills seen."""

    __slots__ = ("complete", "exec_ids", "fee", "fields")

    def __init__(self, complete: bool) -> None:
        self.fields: dict[str, Any] = {}
        self.fee = Decimal(0)
        self.exec_ids: set[str] = set()
        self.complete = complete  # every fill of the order was seen here


class _Restart(Exception):
    pass


class ExecutionsStream:
    """One self-healing ``executions`` subscription; see the module docstring."""

    def __init__(
        self,
        *,
        config: KrakenConfig,
        registry: PairRegistry,
        session: Callable[[], aiohttp.ClientSession],
        token: Callable[[], Awaitable[str]],
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._registry = registry
        self._session = session
        self._token = token
        self._clock: Clock = clock or SystemClock()
        self._orders: OrderedDict[str, _Order] = OrderedDict()  # order_id -> state
        self._by_client_id: dict[str, str] = {}
        self._awaiting_final: set[str] = set()  # client ids this bot just cancelled
        self._snapshot_seen = False
        self._sequence: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.stats = ExecutionsStats()

    # --- life cycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._loop(), name="kraken-executions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if task is not None:
            await cancel_and_wait(task)  # a stop of the caller itself is not swallowed

    @property
    def live(self) -> bool:
        """Connected, snapshot received, and heard from within the heartbeat timeout."""
        last = self.stats.last_message_at
        return (
            self._ws is not None
            and not self._ws.closed
            and self._snapshot_seen
            and last is not None
            and self._clock.monotonic() - last <= self.config.ws_heartbeat_timeout_s
        )

    # --- lookups ----------------------------------------------------------------------

    def expect_final(self, client_order_id: str) -> None:
        """The bot just acted on the order (a cancel): until the stream reports it final, the
        stream's picture of it is older than the action, so lookups go to REST."""
        self._awaiting_final.add(client_order_id)
        if len(self._awaiting_final) > _KEPT:
            self._awaiting_final.pop()

    def lookup(self, client_order_id: str) -> OrderInfo | None:
        """The order's state from the stream, or None when REST must be asked."""
        order_id = self._by_client_id.get(client_order_id)
        state = self._orders.get(order_id) if order_id is not None else None
        if state is None or not state.complete or not self.live:
            self.stats.lookups_deferred += 1
            return None
        if client_order_id in self._awaiting_final:
            if _STATUS.get(str(state.fields.get("order_status"))) in (None, OrderStatus.OPEN):
                self.stats.lookups_deferred += 1
                return None
            self._awaiting_final.discard(client_order_id)
        try:
            info = self._to_info(order_id or "", state)
        except (KeyError, ValueError, InvalidOperation, TradebotError) as exc:
            log.info("executions: order %s not usable from the stream (%s); asking REST", order_id, exc)
            self.stats.lookups_deferred += 1
            return None
        self.stats.lookups_served += 1
        return info

    def _to_info(self, order_id: str, state: _Order) -> OrderInfo:
        f = state.fields
        pair = self._registry.from_kraken(str(f["symbol"]))
        if pair is None:
            raise ValueError(f"unknown symbol {f['symbol']!r}")
        volume = Decimal(str(f["order_qty"]))
        filled = Decimal(str(f.get("cum_qty", 0)))
        cost = Decimal(str(f.get("cum_cost", 0)))
        avg = Decimal(str(f.get("avg_price", 0))) or (cost / filled if filled else Decimal(0))
        limit = f.get("limit_price")
        stamp = f.get("opened")
        return OrderInfo(
            client_order_id=f.get("cl_ord_id"),
            exchange_order_id=order_id,
            pair=pair.pair,
            side=Side(f["side"]),
            order_type=OrderType(f["order_type"]),
            volume=volume,
            filled_volume=filled,
            status=_STATUS[f["order_status"]],
            price=Decimal(str(limit)) if limit not in (None, 0) else None,
            avg_fill_price=avg if filled > 0 else None,
            fee=state.fee,
            created_at=timestamp(stamp, _Where("ws/executions")) if stamp else None,
        )

    # --- the socket -------------------------------------------------------------------

    def _ws_url(self) -> str:
        if self.config.ws_auth_url:
            return self.config.ws_auth_url
        if self.config.ws_url == "wss://ws.kraken.com/v2":
            return "wss://ws-auth.kraken.com/v2"
        return self.config.ws_url  # a simulator serves both on one URL

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
                failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.info("executions stream down (%s); reconnecting", self.stats.last_error)
            self._snapshot_seen = False
            self.stats.reconnects += 1
            cfg = self.config
            delay = min(cfg.ws_reconnect_max_s, cfg.ws_reconnect_initial_s * 2 ** min(failures, 10))
            await self._clock.sleep(delay * random.uniform(0.8, 1.2))

    async def _run_once(self) -> None:
        token = await self._token()
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
        ws = await self._session().ws_connect(self._ws_url(), heartbeat=None, timeout=timeout)
        self._ws = ws
        self.stats.connects += 1
        self._sequence = None
        try:
            await ws.send_str(
                json.dumps(
                    {
                        "method": "subscribe",
                        "params": {
                            "channel": "executions",
                            "token": token,
                            "snap_orders": True,
                            "snap_trades": False,
                        },
                    }
                )
            )
            while True:
                message = await ws.receive(timeout=self.config.ws_heartbeat_timeout_s)
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise _Restart(f"socket ended ({message.type.name})")
                self.stats.last_message_at = self._clock.monotonic()
                self._on_text(message.data)
        finally:
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()

    def _on_text(self, text: str) -> None:
        try:
            message = _JSON.decode(text)
        except ValueError:
            self.stats.bad_messages += 1
            return
        if not isinstance(message, dict):
            self.stats.bad_messages += 1
            return
        if message.get("method") == "subscribe" and message.get("success") is False:
            raise _Restart(f"subscription refused: {message.get('error')}")
        if message.get("channel") != "executions":
            return
        sequence = message.get("sequence")
        if isinstance(sequence, int):
            if self._sequence is not None and sequence != self._sequence + 1:
                self.stats.sequence_gaps += 1
                raise _Restart(f"sequence gap ({self._sequence} -> {sequence})")
            self._sequence = sequence
        data = message.get("data")
        if not isinstance(data, list):
            self.stats.bad_messages += 1
            return
        if message.get("type") == "snapshot":
            self._on_snapshot(data)
            return
        for report in data:
            if isinstance(report, dict) and isinstance(report.get("order_id"), str):
                self._apply(report)
            else:
                self.stats.bad_messages += 1

    def _on_snapshot(self, data: list[Any]) -> None:
        self.stats.snapshots += 1
        # what happened while no socket listened is unknown: only orders the snapshot shows
        # unfilled are known completely; everything else is asked over REST
        fresh: OrderedDict[str, _Order] = OrderedDict()
        self._by_client_id.clear()
        for report in data:
            if not isinstance(report, dict) or not isinstance(report.get("order_id"), str):
                self.stats.bad_messages += 1
                continue
            filled = Decimal(str(report.get("cum_qty", 0) or 0))
            state = _Order(complete=filled == 0)
            state.fields.update(report)
            state.fields.setdefault("opened", report.get("timestamp"))
            fresh[report["order_id"]] = state
            if isinstance(report.get("cl_ord_id"), str):
                self._by_client_id[report["cl_ord_id"]] = report["order_id"]
        self._orders = fresh
        self._snapshot_seen = True

    def _apply(self, report: dict[str, Any]) -> None:
        self.stats.reports += 1
        order_id = report["order_id"]
        state = self._orders.get(order_id)
        if state is None:
            # an order first heard of at its birth is known completely from here on
            state = _Order(complete=report.get("exec_type") in ("pending_new", "new"))
            state.fields["opened"] = report.get("timestamp")
            self._orders[order_id] = state
            while len(self._orders) > _KEPT:
                _, old = self._orders.popitem(last=False)
                self._by_client_id.pop(str(old.fields.get("cl_ord_id")), None)
        if report.get("exec_type") == "trade":
            self.stats.fills += 1
            exec_id = str(report.get("exec_id"))
            if exec_id not in state.exec_ids:
                state.exec_ids.add(exec_id)
                quote = self._quote_of(report.get("symbol") or state.fields.get("symbol"))
                for fee in report.get("fees") or []:
                    if not isinstance(fee, dict) or fee.get("asset") != quote:
                        state.complete = False  # a fee in another asset: REST knows the figure
                        continue
                    state.fee += Decimal(str(fee.get("qty", 0)))
        opened = state.fields.get("opened")
        state.fields.update({k: v for k, v in report.items() if v is not None})
        state.fields["opened"] = opened
        cl_ord_id = state.fields.get("cl_ord_id")
        if isinstance(cl_ord_id, str):
            self._by_client_id[cl_ord_id] = order_id

    def _quote_of(self, symbol: Any) -> str | None:
        if not isinstance(symbol, str) or "/" not in symbol:
            return None
        return symbol.split("/", 1)[1]
