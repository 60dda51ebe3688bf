"""--auto-restart with real child processes: crash, hang, Ctrl+C, limits, state across restarts."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tradebot.app.autorestart import (
    AutoRestarter,
    RestartPolicy,
    backoff_delay,
    child_argv_from,
    run_with_auto_restart,
)
from tradebot.core.models import Alert

pytestmark = pytest.mark.timeout(30)


def script(tmp_path: Path, name: str, code: str) -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return [sys.executable, str(path)]


def policy(**kw: object) -> RestartPolicy:
    base: dict[str, object] = dict(
        restart_delay_s=0.1,
        jitter=0.0,
        backoff_cap_s=10,
        heartbeat_timeout_s=None,
        term_timeout_s=2,
        poll_interval_s=0.02,
    )
    base.update(kw)
    return RestartPolicy(**base)  # type: ignore[arg-type]


def test_child_argv_strips_parent_options() -> None:
    argv = child_argv_from(
        ["run", "--paper", "--auto-restart", "--max-restarts", "5", "--restart-delay=2", "--infinite"]
    )
    assert argv == [sys.executable, "-m", "tradebot", "run", "--paper", "--infinite"]


def test_backoff_doubles_to_cap_with_bounded_jitter() -> None:
    p = RestartPolicy(restart_delay_s=30, backoff_cap_s=3600, jitter=0)
    assert [backoff_delay(n, p) for n in (1, 2, 3, 4, 8, 20)] == [30, 60, 120, 240, 3600, 3600]
    pj = RestartPolicy(restart_delay_s=30, jitter=0.1)
    import random

    rng = random.Random(1)
    delays = [backoff_delay(1, pj, rng) for _ in range(200)]
    assert all(27 <= d <= 33 for d in delays) and len(set(delays)) > 100


def test_crashing_child_is_restarted_with_backoff_until_max_restarts(tmp_path: Path) -> None:
    alerts: list[Alert] = []
    argv = script(tmp_path, "crash.py", "import sys; sys.exit(3)")
    r = AutoRestarter(argv, policy(max_restarts=3), state_dir=tmp_path / "state", alert=alerts.append)
    t0 = time.monotonic()
    code = r.run()
    elapsed = time.monotonic() - t0
    assert code == 1
    assert len(r.runs) == 4 and r.restarts == 3
    assert [run.delay_before_s for run in r.runs] == [0.0, 0.1, 0.2, 0.4]
    gaps = [b.started - a.ended for a, b in itertools.pairwise(r.runs)]  # type: ignore[operator]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        # the gap also holds counting the restart in the state store and starting a process,
        # which on a machine with every CPU busy takes a good part of a second
        assert expected <= gap < expected + 3.0
    assert elapsed >= 0.7
    assert all(run.exit_code == 3 for run in r.runs)
    assert "limit of 3 restarts" in r.final_message
    assert [a.title for a in alerts].count("bot restarting") == 3
    assert alerts[-1].title == "bot stopped: restart limit" and alerts[-1].level.value == "critical"
    from tradebot.core.store import StateStore

    with StateStore(tmp_path / "state") as store:
        assert store.get_counter("restarts") == 3


def test_consecutive_failure_limit_ends_parent(tmp_path: Path) -> None:
    alerts: list[Alert] = []
    argv = script(tmp_path, "crash.py", "import os; os.kill(os.getpid(), 9)")
    r = AutoRestarter(argv, policy(max_consecutive_failures=2, restart_delay_s=0.01), alert=alerts.append)
    assert r.run() == 1
    assert len(r.runs) == 3 and r.consecutive_failures == 3
    assert "killed by SIGKILL" in r.runs[0].reason
    assert "3 consecutive failures (limit 2)" in r.final_message
    assert alerts[-1].level.value == "critical"


def test_stable_run_resets_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "n"
    argv = script(
        tmp_path,
        "flaky.py",
        f"""
        import pathlib, sys, time
        p = pathlib.Path({str(marker)!r})
        n = int(p.read_text()) if p.exists() else 0
        p.write_text(str(n + 1))
        if n == 1:
            time.sleep(0.4)   # this life is long enough to count as stable
        sys.exit(0 if n == 3 else 1)
        """,
    )
    r = AutoRestarter(argv, policy(stable_period_s=0.3, restart_delay_s=0.05))
    assert r.run() == 0
    assert [run.delay_before_s for run in r.runs] == [0.0, 0.05, 0.05, 0.1]
    assert r.final_message == "the bot finished (exit code 0)"


def test_hung_child_is_killed_and_restarted(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "hang.py",
        """
        import os, pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # hung for real: ignores SIGTERM too
        pathlib.Path(os.environ["TRADEBOT_HEARTBEAT_FILE"]).write_text("alive")
        time.sleep(60)
        """,
    )
    r = AutoRestarter(argv, policy(heartbeat_timeout_s=0.5, term_timeout_s=0.3, max_restarts=1))
    t0 = time.monotonic()
    assert r.run() == 1
    assert time.monotonic() - t0 < 10
    assert len(r.runs) == 2
    for run in r.runs:
        assert run.ready_at is not None  # it beat once
        assert "stopped heartbeating" in run.reason
        assert run.exit_code == -signal.SIGKILL


def test_sigint_stops_child_and_parent_without_restart(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    child = script(
        tmp_path,
        "beat.py",
        f"""
        import os, pathlib, signal, sys, time
        pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()))
        def bye(*_):
            pathlib.Path({str(tmp_path / "graceful")!r}).write_text("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        while True:
            pathlib.Path(os.environ["TRADEBOT_HEARTBEAT_FILE"]).write_text("alive")
            time.sleep(0.05)
        """,
    )
    parent_code = textwrap.dedent(
        f"""
        import sys
        from tradebot.app.autorestart import run_with_auto_restart
        sys.exit(run_with_auto_restart({child!r}, restart_delay_s=0.05, heartbeat_timeout_s=5, jitter=0,
                                       term_timeout_s=3, alert=lambda a: print("ALERT", a.title, flush=True)))
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.02)
    time.sleep(0.2)
    parent.send_signal(signal.SIGINT)
    out, _ = parent.communicate(timeout=10)
    assert parent.returncode == 0, out
    assert (tmp_path / "graceful").read_text() == "yes"
    assert b"ALERT" not in out and b"not restarted" in out
    child_pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_state_survives_crash_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    argv = script(
        tmp_path,
        "bot.py",
        f"""
        import sys
        from datetime import datetime, timezone
        from decimal import Decimal
        from tradebot.core.store import StateStore, Position
        with StateStore({str(state)!r}) as store:
            boots = store.incr_counter("boots")
            if boots == 1:
                store.save_trading_state("halted", "drawdown 12%", "drawdown", datetime.now(timezone.utc))
                with store.transaction() as tx:
                    tx.set_position(Position(pair="BTC/USD", volume=Decimal("0.5"), avg_price=Decimal("30000")),
                                    datetime.now(timezone.utc))
        if boots == 1:
            import os
            os.kill(os.getpid(), 9)      # crash hard, nothing flushed by hand
        sys.exit(0)
        """,
    )
    r = AutoRestarter(argv, policy(restart_delay_s=0.01), state_dir=state)
    assert r.run() == 0 and len(r.runs) == 2
    from tradebot.core.store import StateStore

    with StateStore(state) as store:
        assert store.get_counter("boots") == 2
        assert store.get_counter("restarts") == 1
        rec = store.load_trading_state()
        assert rec is not None and rec.state.value == "halted" and rec.reason == "drawdown 12%"
        assert store.positions()["BTC/USD"].volume == 0.5


def test_config_error_exit_code_is_not_restarted(tmp_path: Path) -> None:
    argv = script(tmp_path, "bad.py", "import sys; sys.exit(2)")
    alerts: list[Alert] = []
    assert (
        run_with_auto_restart(argv, restart_delay_s=0.01, heartbeat_timeout_s=None, alert=alerts.append) == 2
    )
    assert alerts[-1].title == "bot not restarted"
