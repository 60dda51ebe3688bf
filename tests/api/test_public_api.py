"""The public plugin API: its names are pinned, documented, typed strictly, and the old paths still work."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import tradebot.api as api

ROOT = Path(__file__).resolve().parents[2]

PINNED = {
    "API_VERSION",
    "PRICE_SOURCES",
    "ComponentSpec",
    "hookimpl",
    "Check",
    "Exchange",
    "Notifier",
    "PositionPolicy",
    "RecoveryAction",
    "Strategy",
    "ActionBase",
    "BaseCheck",
    "HttpPoster",
    "PriceSampler",
    "check_url",
    "format_positions",
    "probe_exchange",
    "CheckResult",
    "Failure",
    "HealthReport",
    "HealthStatus",
    "MarketEvent",
    "MarketRules",
    "PairStatus",
    "Notification",
    "PolicyOutcome",
    "RecoveryLimits",
    "StrategyContext",
    "TriggerOptions",
    "Clock",
    "FakeClock",
    "PluginContext",
    "PortfolioView",
    "TradingView",
    "ge",
    "gt",
    "in_range",
    "le",
    "lt",
    "non_empty",
    "one_of",
    "AuthError",
    "BadDataError",
    "ConfigError",
    "ConnectionFailed",
    "DNSError",
    "ExchangeError",
    "ExchangeUnavailable",
    "InsufficientFunds",
    "InvalidNonce",
    "InvalidOrder",
    "MarketClosed",
    "NetworkError",
    "OPT_IN_GROUP",
    "OrderNotFound",
    "OrderOutcomeUnknown",
    "PermanentError",
    "RateLimited",
    "RequestTimeout",
    "TradebotError",
    "TransientError",
    "UnknownPair",
    "describe",
    "Alert",
    "AlertLevel",
    "Balances",
    "Candle",
    "Fill",
    "OrderInfo",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "Position",
    "PositionClosed",
    "Side",
    "Signal",
    "SystemStatus",
    "Ticker",
    "TradingState",
    "TradingStateChange",
    "utc_now",
    # 1.1: what the built-in plugins used from private modules, so that they import only the API
    "EXIT_ESCALATE",
    "is_core_module",
    "buy_volume",
    "CircuitOpen",
    "StateError",
    "FeeSchedule",
    "MarketRuleError",
    "fit_order",
    "OrderHeld",
    "order_at_wire",
    "SystemClock",
    "cancel_and_wait",
    "FLATTEN_STRATEGY",
    "ListsMarkets",
    "MarketDataSource",
    # 1.2: an exchange's resilience figures, one public capability read by /metrics
    "ReportsResilience",
    "ResilienceStats",
}
"""Every public name of API 1.x. Adding one: add it here and raise the minor version; removing
or changing one breaks plugins: raise the major version (and write it in CHANGELOG.md)."""


def test_the_public_names_are_exactly_the_pinned_ones() -> None:
    exported = set(api.__all__)
    assert len(api.__all__) == len(exported), "a name is listed twice in tradebot.api.__all__"
    assert exported - PINNED == set(), "new public names: pin them here and raise API_VERSION's minor version"
    assert PINNED - exported == set(), "public names were removed: that breaks plugins (major version)"
    for name in exported:
        assert hasattr(api, name), name


RESILIENCE_PINNED = {
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakers",
    "LatencyHistograms",
    "RateTier",
    "RequestRateLimiter",
    "RetryEvent",
    "RetryListener",
    "RetryPolicy",
    "RetryStats",
    "TradingRateLimiter",
    "Turns",
    "call_with_retry",
    "is_retryable",
    "retry_after_failure",
    # 1.2
    "BreakerStats",
    "EndpointStats",
    "Histogram",
    "LimitLevel",
    "ReportsResilience",
    "ResilienceStats",
    "TimingSeries",
    "snapshot",
}
"""The resilience toolkit for exchange plugins (``tradebot.api.resilience``, since API 1.1)."""


def test_the_resilience_toolkit_names_are_pinned_and_documented() -> None:
    from tradebot.api import resilience

    assert set(resilience.__all__) == RESILIENCE_PINNED
    for name in resilience.__all__:
        obj = getattr(resilience, name)
        if name in {"BreakerListener", "RetryListener"}:
            continue  # type aliases, documented in the module
        assert (vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__ or "").strip(), name


def test_the_api_version_is_semantic_and_pinned() -> None:
    major, minor, patch = (int(part) for part in api.API_VERSION.split("."))
    assert (major, minor) == (1, 2), "the API changed: update PINNED and this test with the new version"
    assert patch >= 0


COMPONENT_KINDS = {
    "Check",
    "Exchange",
    "Notifier",
    "PositionPolicy",
    "RecoveryAction",
    "Strategy",
    "PortfolioView",
    "TradingView",
    "PluginContext",
    "ActionBase",
    "HttpPoster",
}


def test_every_public_name_is_documented() -> None:
    """Every name, and every member of what a plugin implements or calls, has a docstring:
    the reference in docs/ is generated from them."""
    missing = []
    for name in api.__all__:
        obj = getattr(api, name)
        if name in {"API_VERSION", "EXIT_ESCALATE", "OPT_IN_GROUP", "PRICE_SOURCES", "MarketEvent"}:
            continue  # values, documented in the module (the reference renders the module's text)
        own = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__  # not one inherited from Enum
        if not (own or "").strip():
            missing.append(name)
        if name in COMPONENT_KINDS:
            for member, value in vars(obj).items():
                if member.startswith("_") or (not callable(value) and not isinstance(value, property)):
                    continue
                if not (inspect.getdoc(value) or "").strip():
                    missing.append(f"{name}.{member}")
    assert missing == [], f"public names without a docstring: {missing}"


def test_the_api_module_imports_only_the_core_and_its_own_helpers() -> None:
    """A plugin that imports the API loads no other plugin (no built-in exchange, no notifier)."""
    code = (
        "import sys, tradebot.api, tradebot.api.resilience; "
        "print(sorted(m for m in sys.modules if m.startswith(('tradebot.exchanges', 'tradebot.plugins', "
        "'tradebot.strategies', 'tradebot.checks', 'tradebot.cli'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_old_import_paths_still_work() -> None:
    from tradebot.plugins.notifiers._http import HttpPoster, check_url
    from tradebot.plugins.recovery._base import ActionBase, probe_exchange

    assert (ActionBase, probe_exchange, HttpPoster, check_url) == (
        api.ActionBase,
        api.probe_exchange,
        api.HttpPoster,
        api.check_url,
    )


@pytest.mark.timeout(180)
def test_mypy_strict_finds_no_error_in_the_api(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            "src/tradebot/api",
            "src/tradebot/core/plugin_context.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout
