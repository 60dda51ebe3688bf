"""``plugins list --json`` says per plugin whether it loaded, failed (and why), is quarantined or disabled."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tradebot.cli.main import cli
from tradebot.core.plugins import PluginHost, gather_infos


def test_plugins_list_json_has_state_and_error(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        '[bot]\nexchange = "paper"\n\n[plugins]\nenabled = ["paper", "sma-crossover", "no-such-plugin"]\n'
    )
    result = CliRunner().invoke(cli, ["plugins", "list", "--json", "--all", "--config", str(cfg)])
    infos = {p["name"]: p for p in json.loads(result.stdout)}
    assert infos["paper"]["state"] == "loaded" and infos["paper"]["error"] is None
    assert infos["grid"]["state"] == "disabled" and infos["grid"]["enabled"] is False
    missing = infos["no-such-plugin"]
    assert missing["state"] == "failed" and missing["error"] == "enabled but not installed"
    assert "no-such-plugin" in result.stderr
    table = CliRunner().invoke(cli, ["plugins", "list", "--config", str(cfg)]).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "CATEGORY", "ENABLED", "STATE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["paper"][3] == "loaded" and rows["no-such-plugin"][3] == "failed"


def test_a_quarantined_plugin_is_listed_as_quarantined() -> None:
    host = PluginHost()
    host.load(["paper"])
    host.quarantine("paper", "5 consecutive failures")
    (info,) = gather_infos(host, ["paper"], include_disabled=False)
    assert info.as_json()["state"] == "quarantined"


def test_plugin_loading_and_register_hooks_are_traced() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tradebot.core import telemetry

    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("none", span_processor=SimpleSpanProcessor(exporter))
    try:
        PluginHost().load(["paper", "sma-crossover"])
    finally:
        telemetry.shutdown_tracing()
    spans = exporter.get_finished_spans()
    loads = {s.attributes["tradebot.plugin"]: s for s in spans if s.name == "plugin.load"}
    assert set(loads) == {"paper", "sma-crossover"}
    register = next(s for s in spans if s.name == "paper.tradebot_register_exchanges")
    assert register.parent is not None and register.parent.span_id == loads["paper"].context.span_id
