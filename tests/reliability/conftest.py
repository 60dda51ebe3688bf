"""Reliability suite: short versions run always; long ones only with TRADEBOT_LONG_TESTS=1."""

from __future__ import annotations

import os

import pytest

LONG = os.environ.get("TRADEBOT_LONG_TESTS") == "1"

long_only = pytest.mark.skipif(not LONG, reason="long reliability run: set TRADEBOT_LONG_TESTS=1")
