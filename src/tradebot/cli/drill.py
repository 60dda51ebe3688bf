"""``tradebot drill``: rehearse failures against the built-in simulator before going live."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from tradebot.cli._common import event_loop_or_exit
from tradebot.core import loop as event_loop


@click.command()
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    default=("all",),
    show_default=True,
    help="Scenario to run (repeat for several), or 'all'. See --list.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file: a [drill] table with the drill's timings, plus a base bot config to rehearse with.",
)
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep state, configs and logs of every scenario here, in a new drill-<time> folder per run (default: a temporary folder).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the bot's warnings while the drill runs.")
def drill(
    scenarios: tuple[str, ...],
    config_path: Path | None,
    list_only: bool,
    as_json: bool,
    workdir: Path | None,
    verbose: bool,
) -> None:
    """Run the real bot against the simulator while injecting faults; judge what happened.

    Exits 0 when every expectation held, 1 when one failed, 2 on bad input.
    """
    from tradebot.core.errors import ConfigError
    from tradebot.drill import SCENARIOS, load_drill_config, render_reports, run_drill, scenario_names

    if list_only:
        width = max(len(s.name) for s in SCENARIOS)
        for s in SCENARIOS:
            click.echo(f"{s.name.ljust(width)}  [{s.exchange}]  {s.title}: {s.expected}")
        return
    unknown = [n for n in scenarios if n != "all" and n not in scenario_names()]
    if unknown:
        click.echo(
            f"error: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(scenario_names())}, all",
            err=True,
        )
        sys.exit(2)
    try:
        settings, base = load_drill_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for issue in exc.issues:
            click.echo(f"  - {issue}", err=True)
        sys.exit(2)
    logging.basicConfig(
        level=logging.WARNING if verbose else logging.CRITICAL + 1,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if workdir is not None:
        # each drill in a folder of its own: a scenario must start from an empty state, and a
        # reused --workdir must neither mix old orders into the verdict nor lose earlier runs
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = workdir / f"drill-{stamp}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = workdir / f"drill-{stamp}-{suffix}"
        try:
            run_dir.mkdir(parents=True)
        except OSError as exc:
            click.echo(f"error: cannot use --workdir {workdir}: {exc.strerror or exc}", err=True)
            sys.exit(2)
        workdir = run_dir
        if not as_json:
            click.echo(f"state, configs and logs of this drill: {workdir}", err=True)

    def progress(report: object) -> None:
        if not as_json:
            r = report  # ScenarioReport
            click.echo(
                f"  {r.scenario.name}: {'PASS' if r.passed else 'FAIL'} ({r.duration_s:.1f}s)",  # type: ignore[attr-defined]
                err=True,
            )

    event_loop_or_exit()
    reports = event_loop.run(
        run_drill(list(scenarios), settings, base=base, workdir=workdir, on_report=progress)
    )
    if as_json:
        click.echo(json.dumps([r.as_json() for r in reports], indent=2))
    else:
        click.echo(render_reports(reports))
    sys.exit(0 if all(r.passed for r in reports) else 1)
