"""A Kraken-compatible exchange simulator for tests, benchmarks, chaos drills and paper trading.

Speaks Kraken's spot REST (``/0/public``, ``/0/private``, signed with API-Key/API-Sign) and
WebSocket v2 (``/v2``) on 127.0.0.1, with a seeded price path, a simulated account, Kraken's
rate limits and error strings, and fault injection (see :mod:`._faults` for the spec format
and :mod:`._admin` for the ``/_sim`` admin API)::

    async with run_simulator(seed=1, faults="error=EService:Unavailable,on=AddOrder,n=1") as sim:
        client = MyKrakenClient(base_url=sim.base_url, ws_url=sim.ws_url,
                                key=sim.api_key, secret=sim.api_secret)
        ...
        sim.faults.add("drop_response,on=AddOrder,n=1")
        assert sim.state()["orders_created"]["my-cl-ord-id"] == 1
"""

from tradebot.simulator._account import DUPLICATE_ORDER
from tradebot.simulator._faults import (
    FaultInjector,
    FaultRule,
    FaultSpecError,
    load_scenario,
    parse_faults,
)
from tradebot.simulator._ratelimit import RATE_TIERS, RateTier
from tradebot.simulator._server import (
    DEFAULT_BALANCES,
    Simulator,
    SimulatorConfig,
    generate_credentials,
    run_simulator,
)

__all__ = [
    "DEFAULT_BALANCES",
    "DUPLICATE_ORDER",
    "RATE_TIERS",
    "FaultInjector",
    "FaultRule",
    "FaultSpecError",
    "RateTier",
    "Simulator",
    "SimulatorConfig",
    "generate_credentials",
    "load_scenario",
    "parse_faults",
    "run_simulator",
]
