"""Every stop path of a real ``tradebot run`` process is bounded and ends the process.

The bot trades live (the Kraken path) against the built-in simulator, which runs in the test
and records when each AddOrder reached it. Each test drives the process into one stop path
and checks: the process ended within the grace period plus a small margin, with the right
exit code; no order reached the exchange after the stop began; the journal and the exchange
agree (after the reconcile a next start performs) and the state database is sound.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tradebot.app.bot import HARD_EXIT_MARGIN_S, STOP_BOUND_S
from tradebot.core.healing import EXIT_ESCALATE
from tradebot.drill import DRILL_PLUGINS, DrillSettings, bot_config, to_toml, write_secrets
from tradebot.simulator import run_simulator

pytestmark = pytest.mark.timeout(120)

GRACE_S = 2.0
SLACK_S = 2.5  # process teardown and a loaded machine
BOUND_S = GRACE_S + STOP_BOUND_S + SLACK_S
PLUGIN = Path(__file__).parent / "stop_plugin" / "tb_stop_faults.py"


class ArrivalLog(collections.Counter):  # type: ignore[type-arg]
    """The simulator's AddOrder counter, also noting when (wall clock) each call arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str]] = []

    def __setitem__(self, key: str, value: int) -> None:
        self.arrivals.append((time.time(), key))
        super().__setitem__(key, value)


def _plugin_site(root: Path) -> Path:
    """The test plugin, installed as a distribution with an entry point (no pip needed)."""
    site = root / "site"
    dist = site / "tb_stop_faults-0.1.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(PLUGIN, site / PLUGIN.name)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tb-stop-faults\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tradebot]\nstop-faults = tb_stop_faults\n")
    return site


class BotUnderTest:
    def __init__(self, tmp: Path, sim: Any, *, extra: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.sim = sim
        self.state_dir = tmp / "state"
        self.log_path = tmp / "bot.log"
        secrets = write_secrets(tmp / "secrets.toml", sim.api_key, sim.api_secret)
        raw = bot_config(
            DrillSettings(),
            exchange="kraken",
            base_url=sim.base_url,
            ws_url=sim.ws_url,
            state_dir=self.state_dir,
            secrets_file=secrets,
        )
        raw["plugins"]["enabled"] = [*DRILL_PLUGINS, "stop-faults"]
        raw["strategies"]["drill"]["params"] = {"fast": 2, "slow": 3, "volume": "0.001"}
        raw["supervisor"] = {"restart_delay_s": 0.05, "stop_grace_s": GRACE_S, "max_restarts": 3}
        for key, table in (extra or {}).items():
            raw.setdefault(key, {}).update(table)
        self.config = tmp / "bot.toml"
        self.config.write_text(to_toml(raw))
        self.site = _plugin_site(tmp)
        self.proc: asyncio.subprocess.Process | None = None
        self.ended_at: float | None = None

    async def start(self, faults: str = "", *args: str, env_extra: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
        env["PYTHONPATH"] = str(self.site)
        env["TB_STOP_FAULTS"] = faults
        env.update(env_extra or {})
        with self.log_path.open("ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tradebot",
                "run",
                "--config",
                str(self.config),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
            )

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            pytest.fail(f"the bot did not exit within {timeout:g}s; log:\n{self.log()[-4000:]}")
        self.ended_at = time.time()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop_began(self) -> float:
        """Wall time of the bot's own "stopping: ..." log line."""
        for line in self.log().splitlines():
            if line.startswith("{") and '"stopping: ' in line:
                rec = json.loads(line)
                if rec.get("message", "").startswith("stopping: "):
                    return datetime.fromisoformat(rec["time"]).timestamp()
        pytest.fail(f"the bot never logged that it was stopping; log:\n{self.log()[-4000:]}")


async def until(cond: Callable[[], bool], timeout: float, what: str, bot: BotUnderTest) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline or (bot.proc is not None and bot.proc.returncode is not None):
            pytest.fail(f"{what}: not seen within {timeout:g}s; log:\n{bot.log()[-4000:]}")
        await asyncio.sleep(0.02)


def assert_no_order_after(bot: BotUnderTest, arrivals: ArrivalLog, stop_at: float) -> None:
    late = [(t - stop_at, cid) for t, cid in arrivals.arrivals if t > stop_at + 0.05]
    assert not late, f"orders reached the exchange after the stop began: {late}"


async def assert_consistent(bot: BotUnderTest, *, settled: Callable[[str], bool] | None = None) -> None:
    """Journal == exchange: each order on the exchange once, and journalled as sent (the next
    start reconciles its state); each journalled exchange id exists there; a sound database.
    ``settled``: the orders a later start must have reconciled (by client order id)."""
    import sqlite3

    from tradebot.core.store import StateStore

    db = sqlite3.connect(bot.state_dir / "tradebot.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    store = StateStore(bot.state_dir)
    try:
        assert store.restored is None
        journal = {e.client_order_id: e for e in store.orders()}
        unfinished = store.non_final_orders()
    finally:
        store.close()
    created = {cid: n for cid, n in bot.sim.account.orders_created.items() if n}
    assert all(n == 1 for n in created.values()), f"duplicates on the exchange: {created}"
    state = bot.sim.state()
    txids = {o["txid"] for o in state["open_orders"] + state["closed_orders"]}
    missing = sorted(set(created) - set(journal))
    assert not missing, f"orders on the exchange the journal does not know: {missing}"
    for cid in created:
        entry = journal[cid]
        assert entry.attempts >= 1 and entry.status.value not in ("rejected",), entry
    for cid, entry in journal.items():
        if entry.exchange_order_id is not None:
            assert entry.exchange_order_id in txids, entry
        if cid not in created and entry.status.is_final:
            assert entry.status.value == "rejected" or entry.filled_volume == 0, entry
    if settled is not None:
        left = [e for e in unfinished if settled(e.client_order_id)]
        assert not left, left


async def _sim(**kw: Any) -> Any:
    return run_simulator(seed=7, tick_interval_s=0.05, heartbeat_s=0.2, rate_tier="pro", **kw)


async def test_escalation_from_a_component_that_keeps_failing(tmp_path: Path) -> None:
    async with await _sim() as sim:
        arrivals = sim.stats.add_order_calls = ArrivalLog()
        bot = BotUnderTest(tmp_path, sim)
        await bot.start("crash")
        code = await bot.wait(60)
        stop_at = bot.stop_began()
        assert code == EXIT_ESCALATE, bot.log()[-3000:]
        assert "escalating (exit code 75)" in bot.log()
        assert bot.ended_at is not None and bot.ended_at - stop_at < BOUND_S, bot.ended_at - stop_at
        assert arrivals.arrivals, "the bot placed no order before escalating"
        assert_no_order_after(bot, arrivals, stop_at)
        await assert_consistent(bot)


class LivenessWatch:
    """What a watchdog sees of the bot: systemd WATCHDOG=1 datagrams, the heartbeat file, /healthz."""

    def __init__(self, tmp: Path) -> None:
        import socket

        self.heartbeat = tmp / "heartbeat"
        self.socket_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.socket_path)
        self.sock.setblocking(False)
        self.watchdog: list[float] = []
        self.beats: list[float] = []
        self.healthz: list[tuple[float, int]] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def env(self) -> dict[str, str]:
        return {
            "NOTIFY_SOCKET": self.socket_path,
            "WATCHDOG_USEC": "200000",
            "TRADEBOT_HEARTBEAT_FILE": str(self.heartbeat),
        }

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            if b"WATCHDOG=1" in data:
                self.watchdog.append(time.time())

    async def poll(self, bot: BotUnderTest) -> None:
        import re

        import aiohttp

        port = None
        async with aiohttp.ClientSession() as http:
            while bot.proc is None or bot.proc.returncode is None:
                with_beat = self.heartbeat.stat().st_mtime if self.heartbeat.exists() else None
                if with_beat is not None and (not self.beats or self.beats[-1] != with_beat):
                    self.beats.append(with_beat)
                if port is None:
                    found = re.search(r"HTTP health/control server on http://127\.0\.0\.1:(\d+)", bot.log())
                    port = int(found.group(1)) if found else None
                else:
                    asked = time.time()
                    try:
                        async with http.get(
                            f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=1)
                        ) as r:
                            self.healthz.append((asked, r.status))
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                await asyncio.sleep(0.03)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def assert_silent_after(self, stop_at: float) -> None:
        assert any(t < stop_at for t in self.watchdog), "no WATCHDOG=1 while trading"
        assert any(t < stop_at for t in self.beats), "no heartbeat while trading"
        assert any(t < stop_at and code == 200 for t, code in self.healthz), (
            f"/healthz never 200: {self.healthz}"
        )
        eps = 0.15  # a beat or an answer already on its way when the stop began
        assert not [t - stop_at for t in self.watchdog if t > stop_at + eps], (
            "WATCHDOG=1 sent after the stop began"
        )
        assert not [t - stop_at for t in self.beats if t > stop_at + eps], (
            "heartbeat touched after the stop began"
        )
        late = [(t - stop_at, c) for t, c in self.healthz if t > stop_at + eps and c == 200]
        assert not late, f"/healthz said alive after the stop began: {late}"
        assert any(t > stop_at and c == 503 for t, c in self.healthz), (
            f"/healthz did not say stopping: {self.healthz}"
        )


@pytest.mark.parametrize("stuck", ["swallow,thread", "blockloop"])
async def test_escalation_while_another_task_ignores_cancellation(tmp_path: Path, stuck: str) -> None:
    async with await _sim() as sim:
        arrivals = sim.stats.add_order_calls = ArrivalLog()
        bot = BotUnderTest(tmp_path, sim, extra={"http": {"enabled": True, "port": 0}})
        watch = LivenessWatch(tmp_path)
        await bot.start(f"{stuck},crash", env_extra=watch.env())
        poller = asyncio.ensure_future(watch.poll(bot))
        try:
            code = await bot.wait(60)
        finally:
            poller.cancel()
            watch.close()
        stop_at = bot.stop_began()
        log = bot.log()
        if stuck != "blockloop":  # liveness ends with the stop (a blocked loop proves none anyway)
            watch.assert_silent_after(stop_at)
        assert code == EXIT_ESCALATE, log[-3000:]
        assert bot.ended_at is not None and bot.ended_at - stop_at < BOUND_S, bot.ended_at - stop_at
        if stuck == "blockloop":  # the event loop itself is stuck: the last resort ends the process
            assert "did not end within" in log and "ending the process with exit code 75" in log
            assert "tb_stop_faults" in log  # where the main thread was stuck is logged
        else:  # named in the log, in the summary and in the state store
            assert "fault-swallow did not end within the grace period" in log, log[-3000:]
            assert "not stopped within the grace period: fault-swallow" in log
        assert_no_order_after(bot, arrivals, stop_at)
        await assert_consistent(bot)


async def test_sigterm_during_a_long_start_up_reconcile(tmp_path: Path) -> None:
    from tradebot.core.models import OrderStatus, OrderType, Side
    from tradebot.core.store import JournalEntry, StateStore

    async with await _sim(faults="latency=0.5,on=private") as sim:
        arrivals = sim.stats.add_order_calls = ArrivalLog()
        bot = BotUnderTest(tmp_path, sim)
        bot.state_dir.mkdir()
        store = StateStore(bot.state_dir)
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        for i in range(12):  # sent an hour ago, never acknowledged: each needs lookups at the exchange
            store.journal_order(
                JournalEntry(
                    client_order_id=f"stale-{i:03d}",
                    pair="BTC/USD",
                    side=Side.BUY,
                    order_type=OrderType.MARKET,
                    volume=Decimal("0.001"),
                    status=OrderStatus.PENDING,
                    created_at=long_ago,
                    updated_at=long_ago,
                    attempts=1,
                    sent_at=long_ago,
                )
            )
        store.close()
        await bot.start()
        # the stop comes once the reconcile has settled its first order, and long before its last
        await until(lambda: "order stale-000: not placed" in bot.log(), 40, "the start-up reconcile", bot)
        sent = time.time()
        assert bot.proc is not None
        bot.proc.send_signal(signal.SIGTERM)
        code = await bot.wait(30)
        log = bot.log()
        assert code == 0, log[-3000:]
        assert bot.ended_at is not None and bot.ended_at - sent < BOUND_S, bot.ended_at - sent
        assert "start-up interrupted by the stop (signal SIGTERM)" in log
        assert not arrivals.arrivals, "no order may be sent by a bot stopped during start-up"
        store = StateStore(bot.state_dir)
        left = len(store.non_final_orders())
        store.close()
        assert 0 < left < 12, f"{left} unreconciled: the stop should have cut the reconcile short"
        # the next start reconciles what was left
        sim.faults.clear()
        await sim.sync_faults()
        await bot.start("", "--duration", "3")
        assert await bot.wait(60) == 0, bot.log()[-3000:]
        await assert_consistent(bot, settled=lambda cid: cid.startswith("stale-"))


async def test_sigterm_while_an_order_is_in_flight(tmp_path: Path) -> None:
    async with await _sim(faults="latency=1.5,on=AddOrder") as sim:
        arrivals = sim.stats.add_order_calls = ArrivalLog()
        bot = BotUnderTest(tmp_path, sim)
        await bot.start()
        await until(lambda: bool(arrivals.arrivals), 40, "an order on its way", bot)
        in_flight = arrivals.arrivals[0][1]
        assert bot.proc is not None
        bot.proc.send_signal(signal.SIGTERM)
        sent = time.time()
        code = await bot.wait(30)
        log = bot.log()
        assert code == 0, log[-3000:]
        assert bot.ended_at is not None and bot.ended_at - sent < BOUND_S, bot.ended_at - sent
        assert_no_order_after(bot, arrivals, bot.stop_began())
        await asyncio.sleep(1.6)  # the order in flight is created by the exchange after its latency
        sim.faults.clear()
        await sim.sync_faults()
        await bot.start("", "--duration", "2")
        assert await bot.wait(60) == 0, bot.log()[-3000:]
        await assert_consistent(bot, settled=lambda cid: cid == in_flight)


async def test_auto_restart_kills_a_bot_that_stopped_heartbeating_and_a_fresh_one_trades(
    tmp_path: Path,
) -> None:
    async with await _sim() as sim:
        sim.stats.add_order_calls = ArrivalLog()
        bot = BotUnderTest(tmp_path, sim)
        marker = tmp_path / "freeze-once"
        marker.write_text("")
        await bot.start(
            "freeze",
            "--auto-restart",
            "--restart-delay",
            "0.2",
            "--heartbeat-timeout",
            "7",
            env_extra={"TB_FREEZE_ONCE": str(marker)},
        )
        await until(lambda: not marker.exists(), 40, "the first bot freezing", bot)
        frozen = time.monotonic()
        await until(
            lambda: (
                "started the bot (pid" in bot.log().split("no heartbeat for", 1)[-1]
                and "no heartbeat for" in bot.log()
            ),
            7 + 5 + GRACE_S + HARD_EXIT_MARGIN_S + 1 + SLACK_S + 5,
            "the hung bot killed and a fresh one started",
            bot,
        )
        replaced = time.monotonic() - frozen
        log = bot.log()
        assert "(it had stopped heartbeating); sending SIGKILL" in log, log[-3000:]
        # heartbeat timeout (plus one 5 s beat interval) + SIGTERM..SIGKILL (grace + margin + 1)
        assert replaced < 7 + 5 + GRACE_S + HARD_EXIT_MARGIN_S + 1 + SLACK_S, replaced
        at_restart = sum(sim.account.orders_created.values())
        await until(
            lambda: sum(sim.account.orders_created.values()) > at_restart, 40, "the fresh bot trading", bot
        )
        assert bot.proc is not None
        bot.proc.send_signal(signal.SIGTERM)
        assert await bot.wait(30) == 0, bot.log()[-3000:]
        await assert_consistent(bot)


async def test_duration_ends_the_run_although_a_task_ignores_cancellation(tmp_path: Path) -> None:
    from tradebot.core.store import StateStore

    async with await _sim() as sim:
        arrivals = sim.stats.add_order_calls = ArrivalLog()
        bot = BotUnderTest(tmp_path, sim)
        await bot.start("swallow", "--duration", "3")
        code = await bot.wait(60)
        stop_at = bot.stop_began()
        log = bot.log()
        assert code == 0, log[-3000:]
        assert "stopping: duration 3s reached" in log
        assert bot.ended_at is not None and bot.ended_at - stop_at < BOUND_S, bot.ended_at - stop_at
        assert "not stopped within the grace period: fault-swallow" in log
        assert_no_order_after(bot, arrivals, stop_at)
        await assert_consistent(bot)
        store = StateStore(bot.state_dir)
        try:
            record = json.loads(store.get_kv("last_stop") or "{}")
            assert record["not_stopped"] == ["fault-swallow"] and record["exit_code"] == 0
            assert store.get_counter("unclean_stops") == 1
        finally:
            store.close()
