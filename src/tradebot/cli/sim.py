"""``tradebot sim``: run the Kraken-compatible simulator until Ctrl+C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from decimal import Decimal, InvalidOperation

import click

from tradebot.cli._common import event_loop_or_exit
from tradebot.core import loop as event_loop
from tradebot.simulator import (
    DEFAULT_BALANCES,
    RATE_TIERS,
    FaultSpecError,
    Simulator,
    SimulatorConfig,
    parse_faults,
)

__all__ = ["sim"]


async def _serve(config: SimulatorConfig) -> None:
    simulator = Simulator(config)
    await simulator.start()
    try:
        click.echo(f"Kraken-compatible simulator (seed {config.seed}, tier {config.rate_tier})")
        click.echo(f"  REST       {simulator.base_url}")
        click.echo(f"  WebSocket  {simulator.ws_url}")
        click.echo(f"  admin      {simulator.base_url}/_sim/state  {simulator.base_url}/_sim/faults")
        if simulator.credentials_generated:
            click.echo("  credentials: generated for this run (test credentials, valid only here)")
            click.echo(f"  API key    {simulator.api_key}")
            click.echo(f"  API secret {simulator.api_secret}")
        else:
            click.echo("  credentials: as given with --api-key/--api-secret (neither is shown)")
        for rule in simulator.faults.describe():
            click.echo(f"  fault #{rule['id']}: {rule['spec']}")
        click.echo("Press Ctrl+C to stop.", nl=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await simulator.stop()
        click.echo("simulator stopped")


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it loopback).")
@click.option(
    "--port", default=0, type=click.IntRange(0, 65535), show_default=True, help="0 picks a free port."
)
@click.option("--api-key", default=None, help="API key clients must send (generated when omitted).")
@click.option("--api-secret", default=None, help="Base64 API secret (generated when omitted).")
@click.option(
    "--seed", default=1, type=int, show_default=True, help="Seed of the price path and fault draws."
)
@click.option(
    "--faults",
    "faults",
    default=None,
    metavar="SPEC",
    help="Fault rules, e.g. 'latency=0.2; error=EService:Unavailable,on=AddOrder,p=0.3'.",
)
@click.option(
    "--scenario",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="TOML scenario file with fault rules.",
)
@click.option(
    "--tick-interval",
    default=0.2,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Seconds between price ticks (0: prices only move on POST /_sim/step).",
)
@click.option(
    "--rate-tier",
    default="intermediate",
    type=click.Choice(sorted(RATE_TIERS)),
    show_default=True,
    help="Kraken verification tier whose rate limits apply.",
)
@click.option(
    "--balance",
    "balances",
    multiple=True,
    metavar="ASSET=AMOUNT",
    help="Starting balance, repeatable (default: USD=100000 BTC=1 ETH=10).",
)
@click.option(
    "--fee-volume",
    default=0.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="30-day USD volume the account is deemed to have traded: its tier of Kraken's fee schedule.",
)
def sim(
    host: str,
    port: int,
    api_key: str | None,
    api_secret: str | None,
    seed: int,
    faults: str | None,
    scenario: str | None,
    tick_interval: float,
    rate_tier: str,
    balances: tuple[str, ...],
    fee_volume: float,
) -> None:
    """Run a Kraken-compatible exchange (REST + WebSocket v2) on loopback for tests and paper trading."""
    if (api_key is None) != (api_secret is None):
        raise click.UsageError("give both --api-key and --api-secret, or neither")
    if faults:
        try:
            parse_faults(faults)
        except FaultSpecError as exc:
            raise click.BadParameter(str(exc), param_hint="--faults") from None
    starting = dict(DEFAULT_BALANCES)
    if balances:
        starting = {}
        for item in balances:
            asset, _, amount = item.partition("=")
            try:
                value = Decimal(amount)
            except InvalidOperation:
                raise click.BadParameter(f"{item!r} is not ASSET=AMOUNT", param_hint="--balance") from None
            if not value.is_finite() or value < 0:
                raise click.BadParameter(f"{item!r}: amount must be >= 0", param_hint="--balance")
            starting[asset.strip().upper()] = value
    try:
        config = SimulatorConfig(
            host=host,
            port=port,
            seed=seed,
            api_key=api_key,
            api_secret=api_secret,
            faults=faults,
            scenario=scenario,
            tick_interval_s=tick_interval,
            rate_tier=rate_tier,
            balances=starting,
            fee_volume=Decimal(str(fee_volume)),
        )
    except ValueError as exc:  # e.g. an unknown asset in --balance
        raise click.BadParameter(str(exc), param_hint="--balance") from None
    try:
        event_loop_or_exit()
        event_loop.run(_serve(config))
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
