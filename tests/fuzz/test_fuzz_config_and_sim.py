"""Config loader and simulator fault/admin parsing: bad input gives typed errors with paths."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebot.app.config import (
    BotSettings,
    RiskSettings,
    StrategyInstance,
    load_settings,
    settings_from_dict,
    structure,
)
from tradebot.core.errors import ConfigError
from tradebot.simulator import FaultSpecError, parse_faults

SECTIONS = [
    "bot",
    "plugins",
    "risk",
    "backup",
    "strategies",
    "exchanges",
    "checks",
    "recovery",
    "policies",
    "notifiers",
    "monitoring",
    "halt",
    "healing",
    "supervisor",
    "http",
    "logging",
    "notifications",
    "bogus",
]
KEYS = [
    "name",
    "exchange",
    "pairs",
    "quote",
    "state_dir",
    "market_data",
    "enabled",
    "required",
    "quarantine_after",
    "max_position",
    "max_notional_per_order",
    "max_orders_per_minute",
    "count",
    "interval_s",
    "plugin",
    "params",
    "timeout_s",
    "threshold_s",
    "round_interval_s",
    "ladder",
    "port",
    "host",
    "level",
    "x",
]
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["BTC/USD", "-5", "1e9", "kraken", "paper", "simulator", "nan"]),
)
value = st.recursive(
    scalar,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KEYS), c, max_size=4),
    max_leaves=15,
)
configs = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), value, max_size=5) | value,
    max_size=5,
)


@given(configs)
def test_settings_from_dict_raises_only_config_errors_with_paths(raw: dict[str, Any]) -> None:
    try:
        settings_from_dict(raw)
    except ConfigError as exc:
        assert exc.issues and all(" @ $" in issue for issue in exc.issues), exc.issues


@given(value, st.sampled_from([BotSettings, RiskSettings, StrategyInstance]))
def test_structure_returns_issues_never_raises(raw: Any, cls: type) -> None:
    obj, issues = structure(raw, cls, "$.x")
    assert (obj is None) == bool(issues)
    assert all("@ $.x" in issue for issue in issues)


toml_text = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda sec, key, val: f"[{sec}]\n{key} = {val}\n",
        st.sampled_from(SECTIONS),
        st.sampled_from(KEYS),
        st.sampled_from(
            [
                "1",
                "-5",
                '"x"',
                "true",
                "[1, 2]",
                "{a = 1}",
                "1979-05-27",
                "nan",
                "inf",
                '"BTC/USD"',
                "[",
                '"unterminated',
            ]
        ),
    ),
)


@pytest.mark.timeout(60)
@given(toml_text)
def test_load_settings_on_any_text_gives_settings_or_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tradebot.toml"
        path.write_bytes(text.encode("utf-8", errors="replace"))
        try:
            load_settings(path)
        except ConfigError as exc:
            assert str(path) in exc.message or exc.issues


spec_items = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, v, o: f"{k}{'=' + v if v else ''}{',' + o if o else ''}",
        st.sampled_from(
            [
                "latency",
                "timeout",
                "http5xx",
                "error",
                "malformed",
                "truncated",
                "drop",
                "drop_response",
                "stale",
                "status",
                "ratelimit",
                "order_ratelimit",
                "ws_disconnect",
                "nope",
            ]
        ),
        st.sampled_from(
            [
                "",
                "0.1",
                "-1",
                "503",
                "99",
                "EService:Unavailable",
                "bad",
                "maintenance",
                "3/0.1",
                "1/2/3",
                "nan",
            ]
        ),
        st.sampled_from(["", "on=AddOrder", "on=", "p=0.5", "p=2", "n=0", "n=x", "at=1", "for=0", "zzz=1"]),
    ),
)


@given(st.lists(spec_items, max_size=4).map("; ".join))
def test_fault_specs_parse_or_raise_fault_spec_error(spec: str) -> None:
    try:
        rules = parse_faults(spec)
    except FaultSpecError:
        return
    for rule in rules:  # a parsed rule round-trips through its own spec
        assert parse_faults(rule.to_spec()) == [rule]


@pytest.mark.timeout(60)
async def test_admin_fault_endpoint_answers_400_never_500() -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from hypothesis import HealthCheck, settings

    from tradebot.simulator import Simulator, SimulatorConfig

    sim = Simulator(SimulatorConfig(tick_interval_s=0))
    bodies = st.one_of(
        spec_items,
        st.text(max_size=60),
        st.sampled_from(['{"spec": 1}', '{"faults": [1]}', "[]", '{"faults": [{"kind": "latency"}]}', "{"]),
    )
    async with TestClient(TestServer(sim.build_app(), host="127.0.0.1")) as client:
        examples: list[tuple[str, str]] = []

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bodies, st.sampled_from(["text/plain", "application/json"]))
        def collect(body: str, ctype: str) -> None:
            examples.append((body, ctype))

        collect()
        for body, ctype in examples:
            resp = await client.post(
                "/_sim/faults", data=body.encode("utf-8", "replace"), headers={"Content-Type": ctype}
            )
            assert resp.status in (200, 400), (body, ctype, resp.status)
            await client.delete("/_sim/faults")
