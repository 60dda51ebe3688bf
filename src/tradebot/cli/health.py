"""``tradebot health``, ``tradebot halt`` and ``tradebot resume``.

They work on the state directory of the configured bot: health and the trading state
come from its state store (which a running bot keeps current); halt and resume reach a
running bot within a second through :mod:`tradebot.services.control`, or change the saved
state when no bot runs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from tradebot.cli._common import config_option

__all__ = ["halt", "health", "read_health", "resume"]

_STATUS_ORDER = {"ok": 0, "degraded": 1, "critical": 2}


def _state_dir(config_path: Path | None, state_dir: Path | None) -> Path:
    """The state directory to work on (exit 2 listing the problems of a bad config)."""
    return _located_state_dir(config_path, state_dir)[0]


def _located_state_dir(config_path: Path | None, state_dir: Path | None) -> tuple[Path, str]:
    """The state directory to work on, and where that choice came from (for messages)."""
    if state_dir is not None:
        return state_dir, "given with --state-dir"
    from tradebot.app.config import find_config, load_settings
    from tradebot.core.errors import ConfigError

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        from tradebot.cli._common import echo_problem

        echo_problem(exc)
        sys.exit(2)
    found = find_config(config_path)
    if found is None:
        how = "the default [bot] state_dir, as no config file was found (./tradebot.toml, $TRADEBOT_CONFIG)"
    elif settings.is_written("$.bot.state_dir"):
        how = f"[bot] state_dir of {found}"
    else:
        how = f"the default [bot] state_dir of {found}"
    return settings.state_path, how


def _existing_state(config_path: Path | None, state_dir: Path | None) -> Path:
    """The state directory of a bot that has run; exit 2 naming where it looked otherwise.

    ``halt``, ``resume`` and ``health`` never create state: a command aimed at the wrong
    folder must fail, not report success for a bot that does not read that folder.
    """
    from tradebot.core.store import DB_NAME

    directory, how = _located_state_dir(config_path, state_dir)
    if directory.is_dir() and (directory / DB_NAME).is_file():
        return directory
    if not directory.exists():
        what = "does not exist"
    elif not directory.is_dir():
        what = "is not a directory"
    else:
        what = f"holds no bot state ({DB_NAME})"
    click.echo(
        f"error: no bot state at {directory.resolve()} ({how}): it {what}\n"
        "  point the command at the bot's state with --state-dir DIR, or at its config with "
        "--config FILE (or $TRADEBOT_CONFIG)",
        err=True,
    )
    sys.exit(2)


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (default: the config's bot.state_dir).",
)


def read_health(state_dir: Path, *, limit: int = 2000) -> dict[str, Any]:
    """Health per check (newest result of each) and the trading state, from the state store."""
    from tradebot.core.errors import StateError
    from tradebot.core.store import DB_NAME, StateStore
    from tradebot.services.control import BotLock, bot_running

    if state_dir.exists() and not state_dir.is_dir():
        raise StateError(f"the state directory {state_dir} is not a directory", path=str(state_dir))
    running = bot_running(state_dir)
    out: dict[str, Any] = {
        "state_dir": str(state_dir),
        "running": running,
        "pid": BotLock(state_dir).holder_pid() if running else None,
        "trading": None,
        "status": "unknown",
        "checks": {},
        "dust": {},
    }
    if not (state_dir / DB_NAME).exists():
        return out
    store = StateStore(state_dir)
    try:
        rec = store.load_trading_state()
        records = store.recent_health(limit)
        dust_json = store.get_kv("dust")
    finally:
        store.close()
    out["trading"] = (
        {"state": "active", "reason": "never changed", "source": "core", "since": None}
        if rec is None
        else {
            "state": rec.state.value,
            "reason": rec.reason,
            "source": rec.source,
            "since": rec.time.isoformat(),
        }
    )
    checks: dict[str, Any] = {}
    for r in records:  # newest first: the first seen per check is its latest
        if r.check in checks:
            continue
        try:
            metrics = json.loads(r.metrics_json) if r.metrics_json else {}
        except ValueError:
            metrics = {}
        checks[r.check] = {
            "status": r.status,
            "message": r.message,
            "time": r.time.isoformat(),
            "metrics": metrics,
        }
    out["checks"] = dict(sorted(checks.items()))
    try:
        out["dust"] = json.loads(dust_json) if dust_json else {}
    except ValueError:
        out["dust"] = {}
    if checks:
        out["status"] = max((c["status"] for c in checks.values()), key=lambda s: _STATUS_ORDER.get(s, 3))
    return out


def _age(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(data: dict[str, Any]) -> str:
    """The readable table ``tradebot health`` prints."""
    from tradebot.core.models import utc_now

    now = utc_now()
    bot = f"bot running (pid {data['pid']})" if data["running"] else "no bot running"
    lines = [f"state dir {data['state_dir']}: {bot}"]
    trading = data["trading"]
    if trading is None:
        lines.append("no saved state yet (the bot has never run here)")
        return "\n".join(lines)
    lines.append(
        f"trading  {trading['state'].upper()} ({trading['reason']}; by {trading['source']}"
        + (f", {_age(trading['since'], now)} ago)" if trading["since"] else ")")
    )
    lines.append(f"health   {data['status'].upper()}")
    if data.get("dust"):
        shown = ", ".join(f"{pair} {volume}" for pair, volume in data["dust"].items())
        lines.append(f"dust     {shown} (below the pair's minimum order: cannot be traded)")
    checks = data["checks"]
    if not checks:
        lines.append("no health results recorded yet")
        return "\n".join(lines)
    width = max(len("CHECK"), *(len(n) for n in checks))
    lines.append("")
    lines.append(f"{'CHECK'.ljust(width)}  {'STATUS':<9} {'AGE':>5}  MESSAGE")
    for name, c in checks.items():
        lines.append(f"{name.ljust(width)}  {c['status']:<9} {_age(c['time'], now):>5}  {c['message']}")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@state_dir_option
def health(as_json: bool, config_path: Path | None, state_dir: Path | None) -> None:
    """Health per check and the trading state (from the running bot or the saved state).

    Exit status: 0 ok, 1 degraded (or nothing measured yet, or REDUCING), 2 critical or
    HALTED; 2 also when there is no bot state where it looked."""
    from tradebot.core.errors import StateError

    directory = _existing_state(config_path, state_dir)
    try:
        data = read_health(directory)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(data, indent=2) if as_json else render(data))
    sys.exit(exit_code(data))


def exit_code(data: dict[str, Any]) -> int:
    """For monitoring tools: 0 ok, 1 degraded (or nothing measured yet), 2 critical or HALTED."""
    trading = (data.get("trading") or {}).get("state")
    status = data.get("status")
    if trading == "halted" or status == "critical":
        return 2
    if status == "ok" and trading in (None, "active"):
        return 0
    return 1


def _non_empty_reason(value: str) -> str:
    if not value.strip():
        raise click.BadParameter(
            "say why trading stops: the reason is kept with the state and shown in alerts"
        )
    return value


def _send(action: str, reason: str, config_path: Path | None, state_dir: Path | None, timeout: float) -> None:
    from tradebot.core.errors import StateError
    from tradebot.services.control import send_command

    directory = _existing_state(config_path, state_dir)
    # the command prints the outcome itself; the state machine's own log lines would repeat it
    logging.getLogger("tradebot").addHandler(logging.NullHandler())
    try:
        result = send_command(directory, action, reason, timeout_s=timeout)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"trading {result.state.upper()}: {result.message}")
    if not result.ok:
        sys.exit(1)


@click.command()
@click.option(
    "--reason",
    required=True,
    callback=lambda _ctx, _param, value: _non_empty_reason(value),
    help="Why trading stops (kept with the state and shown in alerts).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for a running bot to answer.",
)
@config_option
@state_dir_option
def halt(reason: str, timeout: float, config_path: Path | None, state_dir: Path | None) -> None:
    """HALT trading on the running bot, or for the next start when none runs."""
    _send("halt", reason, config_path, state_dir, timeout)


@click.command()
@click.option("--reason", default="operator resume", show_default=True, help="Why trading may go on.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for a running bot to answer.",
)
@config_option
@state_dir_option
def resume(reason: str, timeout: float, config_path: Path | None, state_dir: Path | None) -> None:
    """Resume trading (back to ACTIVE) on the running bot, or for the next start."""
    _send("resume", reason, config_path, state_dir, timeout)
