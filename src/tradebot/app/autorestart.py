"""``tradebot run --auto-restart``: run the bot as a child process and restart it.

The parent (this module; no event loop) starts ``python -m tradebot run ...`` and watches
it. A child that exits non-zero, is killed, or stops heartbeating (its heartbeat file,
``$TRADEBOT_HEARTBEAT_FILE``, not touched within ``heartbeat_timeout_s``) is restarted
after an exponential backoff: ``restart_delay_s`` doubling per consecutive failure up to
``backoff_cap_s``, with jitter; a child that ran for ``stable_period_s`` resets the count.
The parent gives up after ``max_restarts`` restarts or more than
``max_consecutive_failures`` failures in a row, with a final message and an alert.
Exit code 0 (the bot finished, e.g. a HALT that closed positions) and 2 (bad
configuration) end the parent too: restarting cannot help.

A child that stops heartbeating (a bot beats only while it trades: not once its stop or
an escalation began, nor while its event loop is stuck) gets SIGTERM, then SIGKILL after
``term_timeout_s`` (by default the bot's ``[supervisor] stop_grace_s`` plus the time the bot
itself takes to end a stop by force), and is restarted.
Ctrl+C / SIGTERM stop the child gracefully (SIGTERM, then SIGKILL after
``term_timeout_s``) and never restart it. Under systemd the parent sends READY=1 when the
child first beats and WATCHDOG=1 on every beat. Restarts are counted in the state store
(``restarts``); positions, trading state and metrics live there and survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from tradebot.core import sdnotify
from tradebot.core.models import Alert, AlertLevel
from tradebot.core.validate import ge, gt, in_range

if TYPE_CHECKING:
    from types import FrameType

    # what signal.signal() returns and accepts back
    _SignalHandler = Callable[[int, FrameType | None], Any] | int | None

__all__ = [
    "AutoRestarter",
    "ChildRun",
    "RestartPolicy",
    "backoff_delay",
    "child_argv_from",
    "run_with_auto_restart",
]

log = logging.getLogger("tradebot.autorestart")

_PARENT_FLAGS = {"--auto-restart": 0, "--max-restarts": 1, "--restart-delay": 1, "--heartbeat-timeout": 1}

AlertSink = Callable[[Alert], None]


def child_argv_from(argv: Sequence[str]) -> list[str]:
    """The child's command line: ``argv`` (after the program name) minus the parent's options."""
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in _PARENT_FLAGS:
            skip = _PARENT_FLAGS[name] if "=" not in arg else 0
            continue
        out.append(arg)
    return [sys.executable, "-m", "tradebot", *out]


@attrs.frozen
class RestartPolicy:
    """How the parent restarts the child; every knob is small-able for tests."""

    max_restarts: int = attrs.field(default=1000, validator=ge(0))
    restart_delay_s: float = attrs.field(default=30.0, validator=ge(0))
    backoff_cap_s: float = attrs.field(default=3600.0, validator=ge(0))
    jitter: float = attrs.field(default=0.1, validator=in_range(0, 1))
    """Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    stable_period_s: float = attrs.field(default=600.0, validator=gt(0))
    """A child that ran this long before failing resets the consecutive-failure count."""
    max_consecutive_failures: int = attrs.field(default=10, validator=ge(0))
    heartbeat_timeout_s: float | None = attrs.field(default=120.0)
    """Kill and restart a child whose heartbeat is older than this (None: no hang check)."""
    term_timeout_s: float = attrs.field(default=30.0, validator=gt(0))
    poll_interval_s: float = attrs.field(default=0.1, validator=gt(0))
    no_restart_exit_codes: frozenset[int] = frozenset({0, 2})

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_timeout_s is not None and self.heartbeat_timeout_s <= 0:
            raise ValueError(f"heartbeat_timeout_s must be > 0 or None (got {self.heartbeat_timeout_s})")


def backoff_delay(
    consecutive_failures: int, policy: RestartPolicy, rng: random.Random | None = None
) -> float:
    """The wait before restart number ``consecutive_failures`` (1-based) of a streak."""
    base = min(policy.restart_delay_s * 2 ** max(0, consecutive_failures - 1), policy.backoff_cap_s)
    if policy.jitter <= 0:
        return base
    factor = (rng or random).uniform(1 - policy.jitter, 1 + policy.jitter)
    return max(0.0, base * factor)


@attrs.define
class ChildRun:
    """One life of the child process."""

    pid: int
    started: float  # monotonic
    ended: float | None = None
    ready_at: float | None = None  # monotonic time of the first heartbeat
    exit_code: int | None = None
    reason: str = ""
    delay_before_s: float = 0.0


class AutoRestarter:
    """The parent process loop. Build it, then :meth:`run` (blocking) returns the exit code."""

    def __init__(
        self,
        child_argv: Sequence[str],
        policy: RestartPolicy | None = None,
        *,
        state_dir: Path | None = None,
        heartbeat_path: Path | None = None,
        alert: AlertSink | None = None,
        env: dict[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not child_argv:
            raise ValueError("child_argv must name the program to run")
        self.child_argv = list(child_argv)
        self.policy = policy or RestartPolicy()
        self.state_dir = state_dir
        if heartbeat_path is None:
            base = state_dir if state_dir is not None else Path(tempfile.gettempdir())
            heartbeat_path = base / f"tradebot-heartbeat-{os.getpid()}"
        self.heartbeat_path = heartbeat_path
        self._alert = alert
        self._env = dict(os.environ if env is None else env)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._stop_signal: str | None = None
        self.runs: list[ChildRun] = []
        self.restarts = 0
        self.consecutive_failures = 0
        self.final_message = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._notified_ready = False

    # --- control -----------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Stop for good: the child is stopped gracefully and never restarted."""
        if signum is not None and self._stop_signal is None:
            self._stop_signal = signal.Signals(signum).name
        self._stop.set()

    def _install_signals(self) -> list[tuple[signal.Signals, _SignalHandler]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        return [(sig, signal.signal(sig, self.request_stop)) for sig in (signal.SIGINT, signal.SIGTERM)]

    # --- main loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run and restart the child until it finishes, is stopped, or a limit is reached."""
        saved = self._install_signals()
        try:
            return self._loop()
        finally:
            for sig, handler in saved:
                signal.signal(sig, handler)
            self._remove_heartbeat()

    def _loop(self) -> int:
        p = self.policy
        delay = 0.0
        while True:
            run = self._spawn(delay)
            outcome = self._watch(run)
            if outcome == "stopped":
                self.final_message = f"stopped by {self._stop_signal or 'request'}; the bot is not restarted"
                log.warning("auto-restart: %s", self.final_message)
                sdnotify.stopping()
                return 0
            code = run.exit_code
            if outcome == "exited" and code in p.no_restart_exit_codes:
                self.final_message = (
                    "the bot finished (exit code 0)"
                    if code == 0
                    else f"the bot cannot start (exit code {code}); not restarting"
                )
                log.log(logging.INFO if code == 0 else logging.ERROR, "auto-restart: %s", self.final_message)
                if code != 0:
                    self._send(
                        AlertLevel.CRITICAL, "bot not restarted", self.final_message, "autorestart:final"
                    )
                return 0 if code == 0 else int(code or 1)
            assert run.ended is not None
            lived = run.ended - run.started
            if lived >= p.stable_period_s:
                self.consecutive_failures = 0
            self.consecutive_failures += 1
            log.error(
                "auto-restart: the bot %s after %.1fs (consecutive failures %d)",
                run.reason,
                lived,
                self.consecutive_failures,
            )
            if self.restarts >= p.max_restarts:
                return self._give_up(
                    f"reached the limit of {p.max_restarts} restarts; last: the bot {run.reason}"
                )
            if self.consecutive_failures > p.max_consecutive_failures:
                return self._give_up(
                    f"{self.consecutive_failures} consecutive failures (limit {p.max_consecutive_failures});"
                    f" last: the bot {run.reason}"
                )
            delay = backoff_delay(self.consecutive_failures, p, self._rng)
            self._send(
                AlertLevel.WARNING,
                "bot restarting",
                f"the bot {run.reason}; restart {self.restarts + 1} of at most {p.max_restarts}"
                f" in {delay:.1f}s (consecutive failures {self.consecutive_failures})",
                "autorestart:restart",
            )
            if self._stop.wait(delay):
                self.final_message = f"stopped by {self._stop_signal or 'request'} while waiting to restart"
                log.warning("auto-restart: %s", self.final_message)
                return 0
            self.restarts += 1
            self._count_restart()

    def _give_up(self, why: str) -> int:
        self.final_message = f"giving up: {why}. A person must look at the logs and restart the bot."
        log.critical("auto-restart: %s", self.final_message)
        print(f"tradebot: {self.final_message}", file=sys.stderr, flush=True)  # noqa: T201 - the person at the terminal sees it even with logging off
        self._send(AlertLevel.CRITICAL, "bot stopped: restart limit", self.final_message, "autorestart:final")
        return 1

    # --- one child ---------------------------------------------------------------------------

    def _spawn(self, delay: float) -> ChildRun:
        env = dict(self._env)
        env[sdnotify.ENV_HEARTBEAT] = str(self.heartbeat_path)
        env.pop("NOTIFY_SOCKET", None)  # the parent speaks to systemd, not the child
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        self._remove_heartbeat()
        self.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(self.child_argv, env=env, start_new_session=True)  # our own argv
        self._proc = proc
        run = ChildRun(pid=proc.pid, started=time.monotonic(), delay_before_s=delay)
        self.runs.append(run)
        log.info("auto-restart: started the bot (pid %d)", proc.pid)
        return run

    def _heartbeat_mtime(self) -> float | None:
        try:
            return self.heartbeat_path.stat().st_mtime
        except OSError:
            return None

    def _watch(self, run: ChildRun) -> str:
        proc = self._proc
        assert proc is not None
        p = self.policy
        start_wall = time.time()
        last_seen: float | None = None
        while True:
            code = proc.poll()
            if code is not None:
                run.ended = time.monotonic()
                run.exit_code = code
                run.reason = _describe_exit(code)
                return "exited"
            if self._stop.is_set():
                self._terminate(proc)
                run.ended = time.monotonic()
                run.exit_code = proc.returncode
                run.reason = "stopped on request"
                return "stopped"
            mtime = self._heartbeat_mtime()
            if mtime is not None and mtime != last_seen:
                last_seen = mtime
                if run.ready_at is None:
                    run.ready_at = time.monotonic()
                    if not self._notified_ready:
                        self._notified_ready = sdnotify.ready()
                sdnotify.watchdog()
            if p.heartbeat_timeout_s is not None:
                last_beat = max(start_wall, mtime or start_wall)
                if time.time() - last_beat > p.heartbeat_timeout_s:
                    log.error(
                        "auto-restart: no heartbeat for %.1fs; killing the bot (pid %d)",
                        time.time() - last_beat,
                        proc.pid,
                    )
                    self._terminate(proc, hung=True)
                    run.ended = time.monotonic()
                    run.exit_code = proc.returncode
                    run.reason = (
                        f"stopped heartbeating (none within {p.heartbeat_timeout_s:g}s) and was killed"
                    )
                    return "hung"
            self._stop.wait(p.poll_interval_s)

    def _terminate(self, proc: subprocess.Popen[bytes], *, hung: bool = False) -> None:
        """SIGTERM, wait up to ``term_timeout_s``, then SIGKILL."""
        if proc.poll() is not None:
            return
        timeout = self.policy.term_timeout_s
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error(
                "auto-restart: the bot did not stop within %.1fs of SIGTERM%s; sending SIGKILL",
                timeout,
                " (it had stopped heartbeating)" if hung else "",
            )
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    # --- side effects -------------------------------------------------------------------------

    def _remove_heartbeat(self) -> None:
        for path in (self.heartbeat_path, self.heartbeat_path.with_name(self.heartbeat_path.name + ".part")):
            with contextlib.suppress(OSError):
                path.unlink()

    def _count_restart(self) -> None:
        if self.state_dir is None:
            return
        try:
            from tradebot.core.store import StateStore

            store = StateStore(self.state_dir)
            try:
                store.incr_counter("restarts")
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - counting must never stop a restart
            log.warning("auto-restart: could not count the restart in the state store: %s", exc)

    def _send(self, level: AlertLevel, title: str, message: str, key: str) -> None:
        alert = Alert(level=level, title=title, message=message, source="autorestart", key=key)
        if self._alert is None:
            return
        try:
            self._alert(alert)
        except Exception:  # alerting must never break supervision
            log.exception("auto-restart: could not send the alert")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == 75:
        return "asked for a restart (exit code 75: healing escalated)"
    return f"exited with code {code}"


class PluginAlerts:
    """Sends the parent's alerts through the notifier plugins (``tradebot_alert``).

    Plugins are loaded once, from the same config the child uses. The alert is always
    logged too, so a broken notifier never hides it.
    """

    def __init__(self, config_path: str | Path | None) -> None:
        self.config_path = config_path
        self._host: Any = None
        self._failed = False

    def _load(self) -> Any:
        if self._host is None and not self._failed:
            try:
                from tradebot.app.bootstrap import prepare

                self._host = prepare(self.config_path).host
            except Exception as exc:  # noqa: BLE001 - a bad config is reported by the child too
                self._failed = True
                log.warning("auto-restart: notifiers not available (%s); alerts go to the log only", exc)
        return self._host

    def __call__(self, alert: Alert) -> None:
        level = logging.CRITICAL if alert.level is AlertLevel.CRITICAL else logging.WARNING
        log.log(level, "ALERT %s: %s", alert.title, alert.message)
        host = self._load()
        if host is not None:
            asyncio.run(host.broadcast("tradebot_alert", alert=alert))


def _state_dir_from(config_path: str | Path | None) -> Path | None:
    try:
        from tradebot.app.config import load_settings

        return load_settings(config_path).state_path
    except Exception as exc:  # noqa: BLE001 - the child reports config errors itself
        log.warning("auto-restart: could not read the state directory from the config: %s", exc)
        return None


def term_timeout_from(config_path: str | Path | None) -> float:
    """SIGTERM to SIGKILL: the bot's stop grace period plus the time it takes to end a stop
    by force, plus a second (the bot ends itself by then unless it is stuck for good)."""
    from tradebot.app.bot import HARD_EXIT_MARGIN_S
    from tradebot.core.supervisor import SupervisorSettings

    grace = SupervisorSettings().stop_grace_s
    try:
        from tradebot.app.config import load_settings

        grace = load_settings(config_path).section("supervisor").stop_grace_s
    except Exception as exc:  # noqa: BLE001 - the child reports config errors itself
        log.warning("auto-restart: could not read [supervisor] stop_grace_s from the config: %s", exc)
    return float(grace) + HARD_EXIT_MARGIN_S + 1.0


def run_with_auto_restart(
    child_argv: Sequence[str],
    *,
    max_restarts: int = 1000,
    restart_delay_s: float = 30.0,
    config_path: str | Path | None = None,
    backoff_cap_s: float = 3600.0,
    jitter: float = 0.1,
    stable_period_s: float = 600.0,
    max_consecutive_failures: int = 10,
    heartbeat_timeout_s: float | None = 120.0,
    term_timeout_s: float | None = None,
    state_dir: str | Path | None = None,
    alert: AlertSink | None = None,
) -> int:
    """Run ``child_argv`` under the auto-restart parent; return the parent's exit code.

    0 when the bot finished or was stopped by Ctrl+C/SIGTERM; 1 when a restart limit was
    reached; the child's code when it cannot start (2: bad configuration).
    ``term_timeout_s`` unset: from the config (:func:`term_timeout_from`).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy = RestartPolicy(
        max_restarts=max_restarts,
        restart_delay_s=restart_delay_s,
        backoff_cap_s=backoff_cap_s,
        jitter=jitter,
        stable_period_s=stable_period_s,
        max_consecutive_failures=max_consecutive_failures,
        heartbeat_timeout_s=heartbeat_timeout_s,
        term_timeout_s=term_timeout_s if term_timeout_s is not None else term_timeout_from(config_path),
    )
    sdir = Path(state_dir) if state_dir is not None else _state_dir_from(config_path)
    restarter = AutoRestarter(
        child_argv, policy, state_dir=sdir, alert=alert if alert is not None else PluginAlerts(config_path)
    )
    return restarter.run()
