"""WebSocket v2 private side: ``executions`` and ``balances`` channels and the trading methods.

Trading methods translate their WebSocket parameters into the REST handlers' parameters and run
the very same handlers, so REST and WebSocket see one account, one rate limiter and one set of
error strings; ``executions`` reports every order event and fill of the account as they happen.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tradebot.simulator._account import SimOrder
from tradebot.simulator._catalog import PairInfo
from tradebot.simulator._protocol import KrakenRejection, fmt_decimal, rfc3339

if TYPE_CHECKING:
    from tradebot.simulator._server import Simulator
    from tradebot.simulator._ws import WebSocketHub, _Client

__all__ = ["PrivateChannels", "book_checksum"]

log = logging.getLogger(__name__)

INVALID = "EGeneral:Invalid arguments"
INVALID_SESSION = "ESession:Invalid session"
_STATUS = {
    "open": "new",
    "pending": "pending_new",
    "closed": "filled",
    "canceled": "canceled",
    "expired": "expired",
}


def _num(value: Decimal | None) -> float:
    return float(value or 0)


def book_checksum(
    pair: PairInfo, asks: Iterable[tuple[Decimal, Decimal]], bids: Iterable[tuple[Decimal, Decimal]]
) -> int:
    """Kraken's book checksum: CRC32 of the top ten asks then the top ten bids, each level as
    price and quantity at the pair's precisions with the decimal point and leading zeros removed."""

    def level(price: Decimal, qty: Decimal) -> str:
        p = fmt_decimal(price, pair.pair_decimals).replace(".", "").lstrip("0")
        q = fmt_decimal(qty, pair.lot_decimals).replace(".", "").lstrip("0")
        return p + q

    text = "".join(level(p, q) for p, q in list(asks)[:10]) + "".join(level(p, q) for p, q in list(bids)[:10])
    return zlib.crc32(text.encode())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return str(value)


def _signed(value: Any, percent: bool, *, force_plus: bool = False) -> str:
    number = Decimal(_text(value))
    sign = "+" if number >= 0 or force_plus else "-"
    return f"{sign}{format(abs(number), 'f')}{'%' if percent else ''}"


class PrivateChannels:
    """Authenticated channels and methods of the simulator's WebSocket v2."""

    METHODS = frozenset(
        {
            "add_order",
            "amend_order",
            "edit_order",
            "cancel_order",
            "cancel_all",
            "cancel_all_orders_after",
            "batch_add",
            "batch_cancel",
        }
    )

    def __init__(self, sim: Simulator, hub: WebSocketHub) -> None:
        self._sim = sim
        self._hub = hub
        sim.account.listeners.append(self.on_account_event)

    # --- requests ---------------------------------------------------------------

    def _reply(
        self, method: str, req_id: Any, time_in: str, *, result: Any = None, error: str | None = None
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {"method": method}
        if error is None:
            reply["result"] = result
            reply["success"] = True
        else:
            reply["error"] = error
            reply["success"] = False
        reply["time_in"] = time_in
        reply["time_out"] = rfc3339(self._sim.clock.now())
        if req_id is not None:
            reply["req_id"] = req_id
        return reply

    def call(self, method: str, params: dict[str, Any], req_id: Any, time_in: str) -> list[dict[str, Any]]:
        """Run one trading method; the replies to send (cancel_order answers once per order)."""
        if not self._sim.ws_token_valid(params.get("token")):
            return [self._reply(method, req_id, time_in, error=INVALID_SESSION)]
        self._sim.housekeeping()
        try:
            handler = getattr(self, f"_m_{method}")
            results = handler(params)
        except KrakenRejection as rejection:
            return [self._reply(method, req_id, time_in, error=rejection.error)]
        except (TypeError, ValueError, ArithmeticError, AttributeError):
            return [self._reply(method, req_id, time_in, error=INVALID)]
        except Exception:  # a simulator bug must look like an exchange error, not a dead socket
            log.exception("simulator failed on WebSocket %s", method)
            return [self._reply(method, req_id, time_in, error="EGeneral:Internal error")]
        if method == "cancel_order":
            return [self._reply(method, req_id, time_in, result=r) for r in results]
        return [self._reply(method, req_id, time_in, result=results)]

    def _rest(self, name: str, fields: dict[str, Any], structured: dict[str, Any] | None = None) -> Any:
        from tradebot.simulator._rest import ENDPOINTS, ParamDict

        params = ParamDict({k: _text(v) for k, v in fields.items() if v is not None})
        params.structured = structured or {}
        self._sim.stats.requests[f"ws:{name}"] += 1
        return ENDPOINTS[name].handler(self._sim, params)

    def _order_fields(self, params: dict[str, Any], symbol: Any) -> dict[str, Any]:
        """WebSocket add_order parameters as AddOrder's."""
        if not isinstance(symbol, str) or self._sim.catalog.pair_by_wsname(symbol) is None:
            raise KrakenRejection("EQuery:Unknown asset pair")
        kind = params.get("order_type")
        fields: dict[str, Any] = {
            "pair": symbol,
            "type": params.get("side"),
            "ordertype": kind,
            "volume": params.get("order_qty"),
        }
        if not isinstance(kind, str) or not isinstance(fields["type"], str):
            raise KrakenRejection(INVALID)
        triggers = params.get("triggers")
        trailing = kind.startswith("trailing-stop")
        if kind == "limit":
            fields["price"] = params.get("limit_price")
        elif kind != "market":
            if not isinstance(triggers, dict) or "price" not in triggers:
                raise KrakenRejection(f"{INVALID}:triggers")
            price_type = triggers.get("price_type", "static")
            if price_type == "static" and not trailing:
                fields["price"] = triggers["price"]
            elif price_type in ("pct", "quote"):
                fields["price"] = _signed(triggers["price"], price_type == "pct", force_plus=trailing)
            else:
                raise KrakenRejection(f"{INVALID}:price_type")
            fields["trigger"] = triggers.get("reference", "last")
            if kind.endswith("-limit"):
                limit_type = params.get("limit_price_type", "static")
                if trailing:
                    if limit_type not in ("pct", "quote"):
                        raise KrakenRejection(f"{INVALID}:limit_price_type")
                    fields["price2"] = _signed(params.get("limit_price"), limit_type == "pct")
                else:
                    fields["price2"] = params.get("limit_price")
        tif = params.get("time_in_force")
        if tif is not None:
            fields["timeinforce"] = str(tif).upper()
        if params.get("expire_time") is not None:
            try:
                when = datetime.fromisoformat(str(params["expire_time"]).replace("Z", "+00:00"))
            except ValueError:
                raise KrakenRejection(f"{INVALID}:expire_time") from None
            fields["expiretm"] = str(when.timestamp())
        flags = []
        if params.get("post_only") is True:
            flags.append("post")
        pref = params.get("fee_preference")
        if pref is not None:
            if pref not in ("base", "quote"):
                raise KrakenRejection(f"{INVALID}:fee_preference")
            flags.append("fcib" if pref == "base" else "fciq")
        if params.get("no_mpp") is True:
            flags.append("nompp")
        if flags:
            fields["oflags"] = ",".join(flags)
        if params.get("cl_ord_id") is not None:
            fields["cl_ord_id"] = params["cl_ord_id"]
        if params.get("order_userref") is not None:
            fields["userref"] = params["order_userref"]
        if params.get("reduce_only") is True:
            fields["reduce_only"] = "true"
        if params.get("display_qty") is not None:
            fields["displayvol"] = params["display_qty"]
        if params.get("validate") is True:
            fields["validate"] = "true"
        return fields

    def _m_add_order(self, params: dict[str, Any]) -> dict[str, Any]:
        fields = self._order_fields(params, params.get("symbol"))
        answer = self._rest("AddOrder", fields)
        result: dict[str, Any] = {}
        if "txid" in answer:
            result["order_id"] = answer["txid"][0]
        if params.get("cl_ord_id") is not None:
            result["cl_ord_id"] = params["cl_ord_id"]
        if params.get("order_userref") is not None:
            result["order_userref"] = params["order_userref"]
        return result

    def _m_batch_add(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        orders = params.get("orders")
        symbol = params.get("symbol")
        if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
            raise KrakenRejection(f"{INVALID}:orders")
        if not isinstance(symbol, str) or self._sim.catalog.pair_by_wsname(symbol) is None:
            raise KrakenRejection("EQuery:Unknown asset pair")
        converted = []
        for order in orders:
            fields = self._order_fields(order, symbol)
            del fields["pair"]
            converted.append(fields)
        top = {"pair": symbol, "validate": "true" if params.get("validate") is True else "false"}
        answer = self._rest("AddOrderBatch", top, {"orders": converted})
        result = []
        for entry, order in zip(answer["orders"], orders, strict=True):
            if "error" in entry:
                raise KrakenRejection(entry["error"])
            item: dict[str, Any] = {}
            if "txid" in entry:
                item["order_id"] = entry["txid"]
            if order.get("cl_ord_id") is not None:
                item["cl_ord_id"] = order["cl_ord_id"]
            if order.get("order_userref") is not None:
                item["order_userref"] = order["order_userref"]
            result.append(item)
        return result

    def _ref_fields(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("order_id") is not None and params.get("cl_ord_id") is not None:
            raise KrakenRejection(INVALID)
        if params.get("cl_ord_id") is not None:
            return {"cl_ord_id": params["cl_ord_id"]}
        if not isinstance(params.get("order_id"), str):
            raise KrakenRejection(f"{INVALID}:order_id")
        return {"txid": params["order_id"]}

    def _m_amend_order(self, params: dict[str, Any]) -> dict[str, Any]:
        fields = self._ref_fields(params)
        for name in ("order_qty", "limit_price", "trigger_price", "display_qty", "post_only"):
            if params.get(name) is not None:
                fields[name] = params[name]
        answer = self._rest("AmendOrder", fields)
        result = {"amend_id": answer["amend_id"]}
        result.update(
            {"order_id": params["order_id"]} if "txid" in fields else {"cl_ord_id": params["cl_ord_id"]}
        )
        return result

    def _m_edit_order(self, params: dict[str, Any]) -> dict[str, Any]:
        symbol = params.get("symbol")
        if not isinstance(params.get("order_id"), str):
            raise KrakenRejection(f"{INVALID}:order_id")
        fields: dict[str, Any] = {"txid": params["order_id"], "pair": symbol}
        for ws_name, rest_name in (
            ("order_qty", "volume"),
            ("limit_price", "price"),
            ("order_userref", "userref"),
        ):
            if params.get(ws_name) is not None:
                fields[rest_name] = params[ws_name]
        if params.get("post_only") is True:
            fields["oflags"] = "post"
        if params.get("validate") is True:
            fields["validate"] = "true"
        answer = self._rest("EditOrder", fields)
        return {"order_id": answer.get("txid"), "original_order_id": params["order_id"]}

    def _m_cancel_order(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        results = []
        for name, rest_name in (("order_id", "txid"), ("cl_ord_id", "cl_ord_id"), ("order_userref", "txid")):
            refs = params.get(name)
            if refs is None:
                continue
            if not isinstance(refs, list) or not refs:
                raise KrakenRejection(f"{INVALID}:{name}")
            for ref in refs:
                answer = self._rest("CancelOrder", {rest_name: ref})
                if answer["count"] == 0:
                    raise KrakenRejection("EOrder:Unknown order")
                results.append({name: ref})
        if not results:
            raise KrakenRejection(f"{INVALID}:order_id")
        return results

    def _m_cancel_all(self, params: dict[str, Any]) -> dict[str, Any]:
        answer = self._rest("CancelAll", {})
        return {"count": answer["count"]}

    def _m_cancel_all_orders_after(self, params: dict[str, Any]) -> dict[str, Any]:
        answer = self._rest("CancelAllOrdersAfter", {"timeout": params.get("timeout")})
        return dict(answer)

    def _m_batch_cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        structured: dict[str, Any] = {}
        if params.get("orders") is not None:
            structured["orders"] = params["orders"]
        if params.get("cl_ord_id") is not None:
            structured["cl_ord_ids"] = params["cl_ord_id"]
        answer = self._rest("CancelOrderBatch", {}, structured)
        return {"count": answer["count"]}

    # --- subscriptions ---------------------------------------------------------

    def subscribe(
        self, client: _Client, method: str, params: dict[str, Any], req_id: Any, time_in: str
    ) -> None:
        channel = params["channel"]
        if not self._sim.ws_token_valid(params.get("token")):
            client.send(
                self._reply(method, req_id, time_in, error=INVALID_SESSION) | {"result": {"channel": channel}}
            )
            return
        subscribed = client.executions is not None if channel == "executions" else client.balances
        if method == "unsubscribe":
            if not subscribed:
                client.send(self._reply(method, req_id, time_in, error="Subscription Not Found"))
                return
            if channel == "executions":
                client.executions = None
            else:
                client.balances = False
            client.send(self._reply(method, req_id, time_in, result={"channel": channel}))
            return
        if subscribed:
            client.send(self._reply(method, req_id, time_in, error="Already subscribed"))
            return
        snapshot = params.get("snapshot", True) is not False
        if channel == "balances":
            client.balances = True
            client.send(
                self._reply(method, req_id, time_in, result={"channel": channel, "snapshot": snapshot})
            )
            if snapshot:
                client.sequence += 1
                client.send(
                    {
                        "channel": "balances",
                        "type": "snapshot",
                        "data": self._balances(),
                        "sequence": client.sequence,
                    }
                )
            return
        options = {
            "snap_orders": params.get("snap_orders", True) is not False,
            "snap_trades": params.get("snap_trades", False) is True,
            "order_status": params.get("order_status", True) is not False,
        }
        client.executions = options
        result = {"channel": channel, "snapshot": options["snap_orders"] or options["snap_trades"]}
        if params.get("ratecounter") is True:
            result["maxratecount"] = self._sim.tier.order_max
        client.send(self._reply(method, req_id, time_in, result=result))
        data: list[dict[str, Any]] = []
        if options["snap_orders"]:
            data += [self._order_report(o, "new") for o in self._sim.account.open_orders()]
        if options["snap_trades"]:
            trades = sorted(self._sim.account.trades.items(), key=lambda kv: kv[1]["time"], reverse=True)[:50]
            for txid, trade in trades:
                order = self._sim.account.orders[trade["ordertxid"]]
                data.append(self._trade_report(order, {"txid": txid, **trade}))
        if options["snap_orders"] or options["snap_trades"]:
            client.sequence += 1
            client.send(
                {"channel": "executions", "type": "snapshot", "data": data, "sequence": client.sequence}
            )

    def _balances(self) -> list[dict[str, Any]]:
        out = []
        for code, amount in self._sim.account.balances.items():
            out.append(
                {
                    "asset": code,
                    "asset_class": "currency",
                    "balance": _num(amount),
                    "wallets": [{"type": "spot", "id": "main", "balance": _num(amount)}],
                }
            )
        return out

    # --- account events ---------------------------------------------------------

    def _stamp(self, when: float | None = None) -> str:
        if when is None:
            return rfc3339(self._sim.clock.now())
        return rfc3339(datetime.fromtimestamp(when, UTC))

    def _order_report(self, order: SimOrder, exec_type: str) -> dict[str, Any]:
        status = _STATUS[order.status]
        if status == "new" and order.vol_exec > 0:
            status = "partially_filled"
        if exec_type == "pending_new":
            status = "pending_new"
        report: dict[str, Any] = {
            "order_id": order.txid,
            "symbol": order.pair.wsname,
            "order_qty": _num(order.volume),
            "cum_qty": _num(order.vol_exec),
            "cum_cost": _num(order.cost),
            "avg_price": _num(order.avg_price),
            "fee_usd_equiv": _num(order.fee * self._sim.price_in(order.pair.quote.code, "USD")),
            "time_in_force": order.timeinforce,
            "exec_type": exec_type,
            "side": order.side,
            "order_type": order.ordertype,
            "order_userref": order.userref,
            "order_status": status,
            "post_only": order.post_only,
            "fee_ccy_pref": "fcib" if order.fee_in_base else "fciq",
            "timestamp": self._stamp(),
        }
        if order.cl_ord_id is not None:
            report["cl_ord_id"] = order.cl_ord_id
        limit = order.working_limit() if order.ordertype != "limit" else order.price
        if order.ordertype == "limit" or limit is not None or order.price2 is not None:
            report["limit_price"] = _num(limit if limit is not None else order.price2)
            report["limit_price_type"] = "static"
        if order.stopprice is not None:
            report["stop_price"] = _num(order.stopprice)
            report["triggers"] = {
                "reference": order.trigger,
                "price": _num(order.trail.amount if order.trail is not None else order.price),
                "price_type": ("pct" if order.trail.percent else "quote")
                if order.trail is not None
                else "static",
                "actual_price": _num(order.stopprice),
                "status": "triggered" if order.triggered else "untriggered",
            }
        if order.expiretm is not None:
            report["expire_time"] = self._stamp(order.expiretm)
        if order.reason is not None and order.status in ("canceled", "expired"):
            report["cancel_reason"] = order.reason
            report["reason"] = order.reason
        if order.amends:
            report["amended"] = True
        return report

    def _trade_report(self, order: SimOrder, trade: dict[str, Any]) -> dict[str, Any]:
        pair = order.pair
        fee = Decimal(trade["fee"])
        status = "filled" if order.vol_exec >= order.volume else "partially_filled"
        report: dict[str, Any] = {
            "order_id": order.txid,
            "exec_id": trade["txid"],
            "exec_type": "trade",
            "trade_id": trade["trade_id"],
            "symbol": pair.wsname,
            "side": order.side,
            "last_qty": float(trade["vol"]),
            "last_price": float(trade["price"]),
            "liquidity_ind": "m" if trade["maker"] else "t",
            "cost": float(trade["cost"]),
            "order_userref": order.userref,
            "order_status": status,
            "order_type": order.ordertype,
            "fee_usd_equiv": _num(fee * self._sim.price_in(pair.quote.code, "USD")),
            "fees": [
                {
                    "asset": trade.get("fee_asset", pair.quote.code),
                    "qty": _num(Decimal(trade.get("fee_charged", fee))),
                }
            ],
            "cum_qty": _num(order.vol_exec),
            "cum_cost": _num(order.cost),
            "avg_price": _num(order.avg_price),
            "timestamp": self._stamp(trade["time"]),
        }
        if order.cl_ord_id is not None:
            report["cl_ord_id"] = order.cl_ord_id
        return report

    def on_account_event(self, event: str, order: SimOrder | None, detail: dict[str, Any] | None) -> None:
        clients = self._hub.clients()
        if event == "ledger":
            assert detail is not None
            listeners = [c for c in clients if c.balances]
            if not listeners:
                return
            entry = {
                "ledger_id": detail["id"],
                "ref_id": detail["refid"],
                "timestamp": self._stamp(detail["time"]),
                "type": detail["type"],
                "asset": detail["code"],
                "asset_class": "currency",
                "category": detail["type"],
                "wallet_type": "spot",
                "wallet_id": "main",
                "amount": float(detail["amount"]),
                "fee": float(detail["fee"]),
                "balance": float(detail["balance"]),
            }
            for client in listeners:
                client.sequence += 1
                client.send(
                    {"channel": "balances", "type": "update", "data": [entry], "sequence": client.sequence}
                )
            return
        listeners = [c for c in clients if c.executions is not None]
        if not listeners or order is None:
            return
        reports: list[dict[str, Any]]
        if event == "new":
            reports = [self._order_report(order, "pending_new")]
            if order.status == "open":
                reports.append(self._order_report(order, "new"))
        elif event == "trade":
            assert detail is not None
            reports = [self._trade_report(order, detail)]
        elif event == "triggered":
            reports = [self._order_report(order, "status")]
        else:  # filled, canceled, expired, amended
            reports = [self._order_report(order, event)]
        for client in listeners:
            options = client.executions
            assert options is not None
            for report in reports:
                if report["exec_type"] != "trade" and not options["order_status"]:
                    continue
                client.sequence += 1
                client.send(
                    {"channel": "executions", "type": "update", "data": [report], "sequence": client.sequence}
                )
