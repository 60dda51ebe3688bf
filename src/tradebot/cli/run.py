"""``tradebot run``: trade (paper or live), with pre-flight checks and supervision options."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tradebot.cli._common import config_option, echo_problem, event_loop_or_exit
from tradebot.core import loop as event_loop


@click.command()
@config_option
@click.option(
    "--paper",
    is_flag=True,
    help="Paper-trade: orders fill on paper over the market data of [bot] exchange (none reaches an exchange).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop gracefully after S seconds.",
)
@click.option("--dry-run", is_flag=True, help="Run the pre-flight checks, print a report, exit 0 or 1.")
@click.option("--infinite", is_flag=True, help="Run until a critical condition; heal everything else.")
@click.option(
    "--auto-restart",
    is_flag=True,
    help="Run the bot as a child process and restart it when it crashes or hangs.",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="With --auto-restart: give up after N restarts.",
)
@click.option(
    "--restart-delay",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="With --auto-restart: first backoff delay in seconds (doubles up to the cap).",
)
@click.option(
    "--heartbeat-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="With --auto-restart: kill and restart a bot whose heartbeat is older than S seconds.",
)
def run(
    config_path: Path | None,
    paper: bool,
    duration: float | None,
    dry_run: bool,
    infinite: bool,
    auto_restart: bool,
    max_restarts: int,
    restart_delay: float,
    heartbeat_timeout: float,
) -> None:
    """Run the bot. With no config file and no network, `tradebot run --paper --duration 30`
    trades on the paper exchange against the built-in simulator."""
    import math

    from tradebot.core.errors import ConfigError, PluginError

    for option, value in (("--duration", duration), ("--restart-delay", restart_delay)):
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"must be a finite number of seconds (got {value})", param_hint=option)
    if infinite and duration is not None:
        raise click.UsageError(
            "--infinite runs until a critical condition; it cannot also stop after --duration"
        )
    if dry_run and (infinite or duration is not None or auto_restart):
        raise click.UsageError(
            "--dry-run only checks the setup and exits; drop --infinite, --duration and --auto-restart"
        )
    if auto_restart:
        from tradebot.app.autorestart import child_argv_from, run_with_auto_restart

        argv = child_argv_from(sys.argv[1:])
        sys.exit(
            run_with_auto_restart(
                argv,
                max_restarts=max_restarts,
                restart_delay_s=restart_delay,
                config_path=config_path,
                heartbeat_timeout_s=heartbeat_timeout,
            )
        )

    from tradebot.app.bootstrap import prepare
    from tradebot.core.files import raise_open_file_limit, restrict_umask
    from tradebot.services.logs import configure_logging

    restrict_umask()  # state, backups, logs and control files: the bot's user's only
    raise_open_file_limit()  # connections to the HTTP server never leave trading without descriptors

    try:
        prepared = prepare(config_path)
    except (ConfigError, PluginError) as exc:
        if dry_run:
            from tradebot.app.preflight import PreflightReport

            report = PreflightReport()
            details = [exc.message, *exc.issues] if isinstance(exc, ConfigError) else [str(exc)]
            report.add("config", False, "\n      ".join(details))
            click.echo(report.render())
            sys.exit(1)
        echo_problem(exc)
        sys.exit(2)
    configure_logging(prepared.settings.section("logging"), state_dir=prepared.settings.state_path)
    event_loop_or_exit()  # a bad TRADEBOT_EVENT_LOOP stops here, named, before anything starts
    if dry_run:
        from tradebot.app.preflight import run_preflight

        report = event_loop.run(run_preflight(prepared, paper=paper))
        click.echo(report.render())
        sys.exit(0 if report.ok else 1)

    from tradebot.app.bot import RunOptions, run_bot
    from tradebot.core import telemetry

    telemetry.configure_tracing()
    options = RunOptions(
        paper=paper, duration_s=duration, infinite=infinite, status_line=sys.stderr.isatty(), hard_exit=True
    )
    try:
        summary = run_bot(prepared, options)
    finally:
        telemetry.shutdown_tracing()
    click.echo(summary.render())
    sys.exit(summary.exit_code)
