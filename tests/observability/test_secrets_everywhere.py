"""Every secret kind, configured at once, is found nowhere a secret could leak to.

One live ``tradebot run`` against the simulator (Kraken key and secret), with the Telegram
notifier (bot token, chat id) and the webhook notifier (bearer token) both failing to
deliver (so their errors are logged and traced), the control token used over HTTP, the
console span exporter on, a log file and frequent backups. Then every output is searched
for every secret, as is and base64/URL-encoded: stdout (spans), stderr (logs), the log
file, ``/status``, ``/metrics``, ``tradebot health --json``, ``tradebot config show``, the
database with its WAL and every backup. The state folder and its files are the owner's
only (0700 / 0600).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import stat
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import make_dist
from tests.observability.fake_telegram import FakeBotApi
from tradebot.simulator import run_simulator

TELEGRAM_TOKEN = "5550001:TG-tok/en+with=odd&chars"
CHAT_ID = "chat-4242-secret"
WEBHOOK_TOKEN = "wh-bearer/secret+token=="
CONTROL_TOKEN = "control-secret-token-42"


def forms(secret: str) -> set[str]:
    raw = secret.encode()
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _failing_webhook() -> tuple[web.AppRunner, str]:
    async def hook(request: web.Request) -> web.Response:
        return web.json_response({"error": "down for maintenance"}, status=500)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


LEAKY = """
import base64, urllib.parse
import attrs
from tradebot.core.components import ComponentSpec
from tradebot.core.hookspecs import hookimpl


class Leaky:
    # a careless third-party notifier: its errors quote the secrets it was given
    def __init__(self, secrets):
        self.secrets = dict(secrets)

    async def send(self, notification):
        shown = []
        for value in self.secrets.values():
            shown += [value, urllib.parse.quote(value, safe=""), base64.b64encode(value.encode()).decode()]
        raise RuntimeError("refused with " + " ".join(shown))


def create(config, context):
    return Leaky(context.extras["secrets"])


class LeakyCheck:
    # and a careless check: it fails quoting them too (the monitor records why it failed)
    name = "leaky-check"
    interval_s = 0.2
    auto_resume_after_s = None

    def __init__(self, secrets):
        self.leaky = Leaky(secrets)

    async def evaluate(self):
        await self.leaky.send(None)


class WordyCheck(LeakyCheck):
    # and one that answers, quoting them in its message (which goes to the state and /status)
    name = "wordy-check"

    async def evaluate(self):
        from tradebot.core.health import CheckResult, HealthStatus
        from tradebot.core.models import utc_now

        try:
            await self.leaky.send(None)
        except RuntimeError as exc:
            return CheckResult(check=self.name, status=HealthStatus.DEGRADED, message=str(exc), time=utc_now())


@hookimpl
def tradebot_register_notifiers():
    return [ComponentSpec(name="leaky", factory=create, config_cls=None, description="leaks")]


@hookimpl
def tradebot_register_checks():
    return [
        ComponentSpec(name="leaky-check", factory=lambda c, ctx: LeakyCheck(ctx.extras["secrets"]),
                      config_cls=None, description="leaks"),
        ComponentSpec(name="wordy-check", factory=lambda c, ctx: WordyCheck(ctx.extras["secrets"]),
                      config_cls=None, description="leaks"),
    ]
"""


async def _scenario(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    telegram = FakeBotApi("another:token")  # refuses ours: every message fails
    await telegram.start()
    hook_runner, hook_url = await _failing_webhook()
    async with run_simulator(host="127.0.0.1", port=0, tick_interval_s=0.05) as sim:
        secrets = work / "secrets.toml"
        secrets.write_text(
            f'kraken_api_key = "{sim.api_key}"\nkraken_api_secret = "{sim.api_secret}"\n'
            f'telegram_bot_token = "{TELEGRAM_TOKEN}"\ntelegram_chat_id = "{CHAT_ID}"\n'
            f'webhook_token = "{WEBHOOK_TOKEN}"\ncontrol_token = "{CONTROL_TOKEN}"\n'
        )
        secrets.chmod(0o600)
        port = free_port()
        cfg = work / "tradebot.toml"
        cfg.write_text(
            f"""
[bot]
exchange = "kraken"
state_dir = "state"
secrets_file = "secrets.toml"

[plugins]
enabled = ["kraken", "paper", "sma-crossover", "rsi-reversion", "api-connectivity", "staleness", "resources",
  "consecutive-losses", "drawdown", "api-error-rate", "reconnect", "dns", "resync", "restart-component",
  "reload-module", "escalate", "maintain", "close", "reduce", "log", "telegram", "webhook", "tbtest-leaky"]

[exchanges.kraken]
base_url = "{sim.base_url}"
ws_url = "{sim.ws_url}"

[notifiers.telegram]
base_url = "{telegram.base_url}"

[notifiers.webhook]
url = "{hook_url}"

[http]
port = {port}
auth = "all"


[logging]
file = "bot.log"
level = "DEBUG"

[backup]
interval_s = 0.5
"""
        )
        out["secrets"] = [sim.api_key, sim.api_secret, TELEGRAM_TOKEN, CHAT_ID, WEBHOOK_TOKEN, CONTROL_TOKEN]
        site = make_dist(
            work / "site", "tbtest-leaky", {"tbtest_leaky": LEAKY}, {"tbtest-leaky": "tbtest_leaky"}
        )
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "PYTHONPATH": str(site)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tradebot",
            "run",
            "--duration",
            "8",
            "--config",
            str(cfg),
            cwd=work,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        comm = asyncio.ensure_future(proc.communicate())
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {CONTROL_TOKEN}"}
        bodies: list[str] = []
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # wait for the server
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(3)
            for path in ("/status", "/metrics", "/readyz"):
                async with http.get(base + path, headers=auth) as r:
                    bodies.append(await r.text())
                    out.setdefault("codes", {})[path] = r.status
                async with http.get(base + path) as r:
                    out.setdefault("anonymous", {})[path] = r.status
            async with http.post(f"{base}/halt", headers={"Authorization": "Bearer wrong-token"}) as r:
                bodies.append(await r.text())
            async with http.post(f"{base}/halt", headers=auth, json={"reason": "secret test"}) as r:
                bodies.append(await r.text())
            await asyncio.sleep(1)
        stdout, stderr = await comm
    await telegram.stop()
    await hook_runner.cleanup()
    out.update(returncode=proc.returncode, stdout=stdout.decode(), stderr=stderr.decode(), bodies=bodies)
    out["telegram_requests"] = telegram.requests
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("secrets")
    out = asyncio.run(_scenario(work))
    out["work"] = work
    cli = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tradebot", *a], capture_output=True, text=True, cwd=work, timeout=60
    )
    out["health"] = cli("health", "--json", "--config", str(work / "tradebot.toml"))
    out["show"] = cli("config", "show", "--config", str(work / "tradebot.toml"))
    return out


@pytest.mark.timeout(120)
def test_no_secret_in_any_output_file_or_answer(run: dict[str, Any]) -> None:
    work: Path = run["work"]
    state = work / "state"
    assert "run finished" in run["stdout"], run["stdout"][-3000:] + run["stderr"][-3000:]
    assert (
        "Telegram sendMessage: HTTP" in run["stderr"] and "webhook: HTTP 500" in run["stderr"]
    )  # both failed
    assert "refused with ***" in run["stdout"]  # the leaky notifier's error, traced, redacted
    assert (
        '"check": "wordy-check",\n    "status": "degraded",\n    "message": "refused with ***'
        in run["bodies"][0]
    )
    assert (
        "check failed: PluginError: plugin 'tbtest-leaky' failed in evaluate: RuntimeError: refused with ***"
        in (work / "state" / "bot.log").read_text()
    )
    assert '"name":' in run["stdout"]  # spans were exported to the console
    assert run["codes"] == {"/status": 200, "/metrics": 200, "/readyz": run["codes"]["/readyz"]}
    # [http] auth = "all": cash, equity, positions and metrics need the token
    assert run["anonymous"]["/status"] == 401 and run["anonymous"]["/metrics"] == 401
    assert run["health"].returncode == 2, run["health"].stderr  # HALTED by the test
    assert run["show"].returncode == 0, run["show"].stderr
    files = [state / "bot.log", *state.glob("tradebot.db*"), *(state / "backups").glob("*")]
    assert any(p.parent.name == "backups" for p in files), files
    places: dict[str, str] = {
        "stdout (spans, summary)": run["stdout"],
        "stderr (logs)": run["stderr"],
        "HTTP answers": "\n".join(run["bodies"]),
        "health --json": run["health"].stdout + run["health"].stderr,
        "config show": run["show"].stdout + run["show"].stderr,
    }
    for path in files:
        places[str(path.relative_to(work))] = path.read_bytes().decode("latin-1")
    found = []
    for i, secret in enumerate(run["secrets"]):
        for form in forms(secret):
            for where, text in places.items():
                if form in text:
                    found.append(f"secret #{i} ({form[:6]}...) in {where}")
    assert not found, found


@pytest.mark.timeout(120)
def test_state_folder_and_files_are_the_owners_only(run: dict[str, Any]) -> None:
    state: Path = run["work"] / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "backups").stat().st_mode) == 0o700
    files = [state / "bot.log", *state.glob("tradebot.db*"), *(state / "backups").glob("*.db")]
    assert len(files) >= 3
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o600"}, modes
