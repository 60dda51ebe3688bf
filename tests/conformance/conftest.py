"""Real third-party Kraken clients (ccxt, python-kraken-sdk), unchanged but for their base URLs,
against the simulator. Both are test-only dependencies (the ``dev`` extra)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tradebot.simulator import Simulator, run_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # a live market (ticks every 50 ms) on the "pro" tier: each test stays under its REST counter
    async with run_simulator(tick_interval_s=0.05, heartbeat_s=0.5, rate_tier="pro", seed=3) as simulator:
        yield simulator
