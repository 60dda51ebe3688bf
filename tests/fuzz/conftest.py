"""Hypothesis profiles: modest example counts in CI, many more with TRADEBOT_LONG_TESTS=1."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "tradebot-ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "tradebot-long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("tradebot-long" if os.environ.get("TRADEBOT_LONG_TESTS") == "1" else "tradebot-ci")
