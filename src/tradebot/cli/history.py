"""``tradebot trades`` and ``tradebot report``: what the bot traded and how it went, from its state."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tradebot.cli._common import config_option
from tradebot.cli.health import _state_dir, state_dir_option

__all__ = ["report", "trades"]


def _fail(exc: Exception) -> None:
    click.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
    sys.exit(1)


@click.command("trades")
@click.option(
    "--since", default=None, help="Only trades from then on: an ISO date/date-time or an age (24h, 7d)."
)
@click.option("--pair", default=None, help="Only this pair (e.g. BTC/USD).")
@click.option("--strategy", default=None, help="Only this strategy instance.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header line.")
@state_dir_option
@config_option
def trades(
    since: str | None,
    pair: str | None,
    strategy: str | None,
    as_json: bool,
    as_csv: bool,
    state_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Every execution: time, pair, side, volume, price, fee, strategy, realised PnL.

    PNL is what a fill realised by reducing its strategy's position (before fees); TRIP is
    the net PnL of the round trip the fill closed.
    """
    from tradebot.core.errors import StateError
    from tradebot.services.history import parse_since, read_trades

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    try:
        start = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        records = read_trades(_state_dir(config_path, state_dir))
    except StateError as exc:
        _fail(exc)
        return
    rows = [
        r
        for r in records
        if (start is None or r.time >= start)
        and (pair is None or r.pair == pair)
        and (strategy is None or r.strategy == strategy)
    ]
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    if as_csv:
        buf = io.StringIO()
        fields = [
            "time",
            "pair",
            "side",
            "volume",
            "price",
            "fee",
            "strategy",
            "realized_pnl",
            "round_trip_pnl",
            "position_after",
            "client_order_id",
            "trade_id",
        ]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in r.as_json().items()})
        click.echo(buf.getvalue(), nl=False)
        return
    if not rows:
        click.echo("no trades")
        return
    table: list[tuple[str, ...]] = [
        ("TIME", "PAIR", "SIDE", "VOLUME", "PRICE", "FEE", "STRATEGY", "PNL", "TRIP")
    ]
    table.extend(
        (
            r.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.pair,
            r.side,
            f"{r.volume:f}",
            f"{r.price:f}",
            f"{r.fee:.4f}",
            r.strategy,
            "" if r.realized_pnl is None else f"{r.realized_pnl:+.4f}",
            "" if r.round_trip_pnl is None else f"{r.round_trip_pnl:+.4f}",
        )
        for r in rows
    )
    _print_table(table)


@click.command("report")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@state_dir_option
@config_option
def report(as_json: bool, state_dir: Path | None, config_path: Path | None) -> None:
    """Per strategy and pair: trades, win rate, PnL gross and net of fees, fees, max drawdown and
    time in a position; since the state was created, and per run."""
    from tradebot.core.errors import StateError
    from tradebot.services.history import report as build

    try:
        data = build(_state_dir(config_path, state_dir))
    except StateError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo("since the state was created")
    _print_books(data["lifetime"])
    for run in data["runs"]:
        started = _short_time(run["started"])
        until = _short_time(run["ended"]) if run["ended"] else "now"
        click.echo(f"\nrun {run['run']}: {started} .. {until}")
        _print_books(run["books"])


def _short_time(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_books(books: list[dict[str, Any]]) -> None:
    if not books:
        click.echo("  no trades")
        return
    table: list[tuple[str, ...]] = [
        ("STRATEGY", "PAIR", "TRADES", "TRIPS", "WIN%", "PNL GROSS", "FEES", "PNL NET", "MAX DD", "EXPOSURE")
    ]
    for b in books:
        rate = "-" if b["win_rate"] is None else f"{100 * b['win_rate']:.0f}"
        table.append(
            (
                b["strategy"],
                b["pair"],
                str(b["trades"]),
                str(b["round_trips"]),
                rate,
                _money(b["pnl_gross"]),
                _money(b["fees"]),
                _money(b["pnl_net"]),
                _money(b["max_drawdown"]),
                _duration(b["exposure_s"]),
            )
        )
    _print_table(table, indent="  ")


def _money(text: str) -> str:
    from decimal import Decimal

    return f"{Decimal(text):.2f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _print_table(rows: list[tuple[str, ...]], indent: str = "") -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo(indent + "  ".join(r[c].ljust(widths[c]) for c in range(len(r))).rstrip())
