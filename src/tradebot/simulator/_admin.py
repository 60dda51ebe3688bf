"""The admin API under ``/_sim`` (a path Kraken does not use), for tests and chaos drills.

- ``GET /_sim/state``: balances, orders, AddOrder calls and orders created per ``cl_ord_id``,
  request counts, prices, WebSocket connections, faults.
- ``GET /_sim/faults``: the installed fault rules.
- ``POST /_sim/faults``: add rules. Body: a spec string (text/plain), or JSON
  ``{"spec": "..."}`` or ``{"faults": [{"kind": ..., "value": ..., "on": [...], "p": ..., "n": ...}]}``.
- ``DELETE /_sim/faults``: remove every rule; ``DELETE /_sim/faults/{id}``: remove one.
- ``POST /_sim/step?n=N``: move the market N ticks now.
- ``POST /_sim/ws/disconnect?refuse=S``: close every WebSocket, refuse new ones for S seconds.
- ``POST /_sim/pair_status?pair=BTC/USD&status=cancel_only``: change a pair's ``AssetPairs``
  status (``online``, ``cancel_only``, ``post_only``, ``limit_only``, ``reduce_only``,
  ``delisted``); AddOrder refuses what it forbids, as Kraken does.

No authentication: the simulator binds 127.0.0.1 and holds only test money.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tradebot.simulator._faults import FaultRule, FaultSpecError

if TYPE_CHECKING:
    from tradebot.simulator._server import Simulator

__all__ = ["admin_routes"]


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


def _bad(message: str) -> web.Response:
    return _json({"error": message}, status=400)


def _number(request: web.Request, name: str, default: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    value = float(text)  # ValueError is answered with 400 by the caller
    if value < 0 or value != value:
        raise ValueError(name)
    return value


def admin_routes(sim: Simulator) -> list[web.RouteDef]:
    """The ``/_sim`` routes bound to ``sim``."""

    async def get_state(request: web.Request) -> web.Response:
        return _json(sim.state())

    async def get_faults(request: web.Request) -> web.Response:
        return _json({"faults": sim.faults.describe()})

    async def post_faults(request: web.Request) -> web.Response:
        text = (await request.read()).decode("utf-8", errors="replace")
        try:
            if request.content_type == "application/json":
                data = json.loads(text)
                if not isinstance(data, dict):
                    return _bad("expected a JSON object with 'spec' or 'faults'")
                ids: list[int] = []
                if isinstance(data.get("spec"), str):
                    ids += sim.faults.add(data["spec"])
                faults = data.get("faults", [])
                if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
                    return _bad("'faults' must be a list of objects")
                ids += sim.faults.add([FaultRule.from_mapping(f) for f in faults])
            else:
                ids = sim.faults.add(text)
        except (FaultSpecError, ValueError) as exc:
            return _bad(str(exc))
        await sim.sync_faults()
        return _json({"ids": ids, "faults": sim.faults.describe()})

    async def delete_faults(request: web.Request) -> web.Response:
        sim.faults.clear()
        await sim.sync_faults()
        return _json({"faults": []})

    async def delete_fault(request: web.Request) -> web.Response:
        try:
            rule_id = int(request.match_info["id"])
        except ValueError:
            return _bad("fault id must be an integer")
        if not sim.faults.remove(rule_id):
            return _json({"error": f"no fault with id {rule_id}"}, status=404)
        await sim.sync_faults()
        return _json({"faults": sim.faults.describe()})

    async def post_step(request: web.Request) -> web.Response:
        try:
            ticks = int(_number(request, "n", 1))
        except ValueError:
            return _bad("n must be a non-negative integer")
        return _json({"ticks": sim.step(min(ticks, 100_000))})

    async def post_ws_disconnect(request: web.Request) -> web.Response:
        try:
            refuse = _number(request, "refuse", 0.0)
        except ValueError:
            return _bad("refuse must be a non-negative number of seconds")
        closed = await sim.ws.disconnect_all(refuse)
        return _json({"closed": closed, "refuse_s": refuse})

    async def post_pair_status(request: web.Request) -> web.Response:
        try:
            sim.catalog.set_status(request.query.get("pair", ""), request.query.get("status", ""))
        except (KeyError, ValueError) as exc:
            return _bad(str(exc).strip("'\""))
        return _json({"statuses": dict(sim.catalog.statuses)})

    return [
        web.get("/_sim/state", get_state),
        web.post("/_sim/pair_status", post_pair_status),
        web.get("/_sim/faults", get_faults),
        web.post("/_sim/faults", post_faults),
        web.delete("/_sim/faults", delete_faults),
        web.delete("/_sim/faults/{id}", delete_fault),
        web.post("/_sim/step", post_step),
        web.post("/_sim/ws/disconnect", post_ws_disconnect),
    ]
