"""What a component may do is declared on it, never read from its name: a third-party policy that
flattens, recovery step that escalates and notifier that is opt-in behave exactly like the
built-in ``close``, ``escalate`` and ``telegram``, through the assembled bot."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_dist
from tradebot.app.bootstrap import prepare
from tradebot.app.bot import Bot, RunOptions
from tradebot.app.config import settings_from_dict

POLICIES = '''
from tradebot.api import ComponentSpec, PolicyOutcome, hookimpl


class WindDown:
    """Flattens like the built-in close, under another name."""

    name = "wind-down"
    allows_reducing_while_halted = False
    flattens = True

    def __init__(self, config, context):
        self.context = context

    async def apply(self, change):
        portfolio, executor = self.context.portfolio, self.context.executor
        for _ in range(100):
            if not any(p.volume for p in portfolio.positions().values()) and not executor.working_orders():
                return PolicyOutcome(self.name, True, "every position closed")
            await executor.flatten_all(reason="wind-down")
            await self.context.clock.sleep(0.1)
        return PolicyOutcome(self.name, False, "not flat")


class NotClose(WindDown):
    """Named like the built-in close, but declares nothing: a finished HALT does not end the run."""

    name = "close"
    flattens = False


@hookimpl
def tradebot_register_position_policies():
    return [ComponentSpec(name="wind-down", factory=WindDown), ComponentSpec(name="close", factory=NotClose)]
'''

STEP = '''
from tradebot.api import ActionBase, ComponentSpec, RecoveryLimits, hookimpl


class PageMe(ActionBase):
    """Hands the failure to a process restart, like the built-in escalate, under another name."""

    name = "page-me"
    escalates = True

    def applies_to(self, failure):
        return True

    async def recover(self, failure):
        self.context.supervisor.escalate(f"paged: {failure.describe()}", 77)
        return True

    async def verify(self, failure):
        return True


@hookimpl
def tradebot_register_recovery_actions():
    return [ComponentSpec(name="page-me", factory=PageMe, config_cls=RecoveryLimits)]
'''

NOTIFIER = """
from tradebot.api import ComponentSpec, hookimpl

SENT = []


class Jot:
    name = "jot"

    def __init__(self, config, context):
        pass

    async def send(self, notification):
        SENT.append(notification)


@hookimpl
def tradebot_register_notifiers():
    return [ComponentSpec(name="jot", factory=Jot)]
"""

CONFIG: dict[str, Any] = {
    "bot": {"state_dir": "state", "pairs": ["BTC/USD"]},
    "http": {"enabled": False},
    "risk": {"accept_unprotected": True},
    "strategies": {"sma": {"plugin": "sma-crossover", "params": {"fast": 2, "slow": 3}}},
}
BUILT_INS = ["paper", "kraken", "sma-crossover", "maintain", "log", "escalate", "reconnect"]


def _bot(tmp_path: Path, extra: dict[str, Any], **options: Any) -> Bot:
    settings = settings_from_dict({**CONFIG, **extra}, source=str(tmp_path / "tradebot.toml"))
    return Bot(prepare(settings=settings), RunOptions(paper=True, **options))


async def _halt_with_a_position(bot: Bot, run: asyncio.Task[Any]) -> None:
    for _ in range(400):
        ctx = bot.context
        if (
            ctx is not None
            and ctx.portfolio is not None
            and any(p.volume for p in ctx.portfolio.positions().values())
        ):
            break
        assert not run.done(), run.result()
        await asyncio.sleep(0.05)
    ctx = bot.context
    assert ctx is not None and any(p.volume for p in ctx.portfolio.positions().values()), (
        "no position was opened"
    )
    await ctx.trading.halt("a person says stop", "operator")


@pytest.mark.timeout(90)
async def test_a_third_party_policy_that_flattens_ends_the_run_like_close(
    tmp_path: Path, extra_site: Path
) -> None:
    make_dist(
        extra_site, "tbtest-policies", {"tbtest_policies": POLICIES}, {"tbtest-policies": "tbtest_policies"}
    )
    plugins = {"enabled": [*BUILT_INS, "tbtest-policies"]}
    bot = _bot(
        tmp_path, {"plugins": plugins, "halt": {"position_policy": "wind-down"}}, duration_s=1, infinite=True
    )
    run = asyncio.create_task(bot.run())
    await _halt_with_a_position(bot, run)
    summary = await asyncio.wait_for(run, 30)
    assert summary.exit_code == 0
    assert "HALT with the wind-down policy completed: every position closed" in summary.stop_reason
    assert bot.context is not None and not any(p.volume for p in bot.context.portfolio.positions().values())


@pytest.mark.timeout(90)
async def test_a_policy_named_close_that_declares_nothing_does_not_end_the_run(
    tmp_path: Path, extra_site: Path
) -> None:
    make_dist(
        extra_site, "tbtest-policies", {"tbtest_policies": POLICIES}, {"tbtest-policies": "tbtest_policies"}
    )
    plugins = {"enabled": [*BUILT_INS, "tbtest-policies"]}  # the built-in close is not loaded
    bot = _bot(
        tmp_path, {"plugins": plugins, "halt": {"position_policy": "close"}}, duration_s=1, infinite=True
    )
    run = asyncio.create_task(bot.run())
    await _halt_with_a_position(bot, run)
    ctx = bot.context
    assert ctx is not None
    runner = ctx.extras["halt_policy"]
    for _ in range(200):
        if runner.outcomes:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    assert not run.done(), "a policy is not a flattening one because of its name"
    assert runner.outcomes[-1].done and runner.outcomes[-1].policy == "close"
    bot.request_stop("test over")
    summary = await asyncio.wait_for(run, 30)
    assert summary.stop_reason == "test over"


@pytest.mark.timeout(60)
async def test_a_third_party_step_that_escalates_is_taken_as_an_escalation(
    tmp_path: Path, extra_site: Path
) -> None:
    """The exchange plugin keeps failing and is quarantined: the ladder's only step escalates."""
    from tradebot.core.errors import PluginError

    make_dist(extra_site, "tbtest-page", {"tbtest_page": STEP}, {"tbtest-page": "tbtest_page"})
    extra = {"plugins": {"enabled": [*BUILT_INS, "tbtest-page"]}, "healing": {"ladder": ["page-me"]}}
    bot = _bot(tmp_path, extra, duration_s=40)
    run = asyncio.create_task(bot.run())
    for _ in range(400):
        if bot.context is not None and bot.context.exchange is not None and bot.summary.ticks > 3:
            break
        await asyncio.sleep(0.05)
    ctx = bot.context
    assert ctx is not None and ctx.exchange is not None
    exchange = ctx.exchange

    async def broken() -> None:
        raise KeyError("balance")  # a bug, not an operational error

    exchange.unwrapped.balances = broken
    for _ in range(bot.host.quarantine_after):
        with pytest.raises(PluginError):
            await exchange.balances()
    summary = await asyncio.wait_for(run, 20)
    assert summary.exit_code == 77, summary.stop_reason
    assert "paged:" in summary.stop_reason
    # declared: the quarantined exchange's probe is not tried after it, and the watch records an escalation
    assert ctx.extras["critical_plugins"].recoveries == [("paper", "escalated")]


@pytest.mark.timeout(60)
async def test_a_third_party_notifier_declared_opt_in_is_off_until_enabled(
    tmp_path: Path, extra_site: Path
) -> None:
    make_dist(extra_site, "tbtest-jot", {"tbtest_jot": NOTIFIER}, {"tbtest-jot": "tbtest_jot"})
    info = next(extra_site.glob("tbtest_jot-*.dist-info"))
    with open(info / "entry_points.txt", "a", encoding="utf-8") as fh:
        fh.write("\n[tradebot.opt_in]\ntbtest-jot = tbtest_jot\n")
    import tbtest_jot  # type: ignore[import-not-found]

    default = _bot(tmp_path / "a", {"plugins": {"disabled": ["rsi-reversion", "grid"]}}, duration_s=1)
    assert "tbtest-jot" not in default.host.loaded and "telegram" not in default.host.loaded
    assert "log" in default.host.loaded  # not opt-in: on by default
    summary = await default.run()
    assert summary.exit_code == 0, summary.stop_reason
    assert tbtest_jot.SENT == []

    enabled = _bot(tmp_path / "b", {"plugins": {"enabled": [*BUILT_INS, "tbtest-jot"]}}, duration_s=1)
    summary = await enabled.run()
    assert summary.exit_code == 0, summary.stop_reason
    assert tbtest_jot.SENT, "the enabled opt-in notifier was told nothing"


PAGER = '''
from tradebot.api import ComponentSpec, hookimpl

SENT = []


class Pager:
    """A notifier with a secret of its own, declared like the built-in telegram's."""

    name = "pager"

    def __init__(self, config, context):
        self.key = context.extras["secrets"]["pager_key"]

    async def send(self, notification):
        SENT.append((self.key, notification.title))
        import logging

        logging.getLogger("tbtest.pager").warning("paged with key %s", self.key)


def check(secrets):
    return [] if secrets["pager_key"].startswith("pk-") else ["the pager_key does not start with pk-"]


@hookimpl
def tradebot_register_notifiers():
    return [ComponentSpec(name="pager", factory=Pager, secrets=("pager_key",), check_secrets=check)]
'''


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args, "--config", str(tmp_path / "tradebot.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**base, **(env or {})},
        check=False,
    )


@pytest.mark.timeout(90)
def test_a_third_party_plugins_secret_is_declared_checked_loaded_and_redacted(
    tmp_path: Path, extra_site: Path
) -> None:
    """Its secret is known by the secrets file and TRADEBOT_<NAME>, required while the plugin is
    on, checked by the plugin before anything trades, and never shown: as the built-ins' are."""
    make_dist(extra_site, "tbtest-pager", {"tbtest_pager": PAGER}, {"tbtest-pager": "tbtest_pager"})
    (tmp_path / "tradebot.toml").write_text(
        '[bot]\nstate_dir = "state"\npairs = ["BTC/USD"]\nsecrets_file = "secrets.toml"\n\n[http]\nenabled = false\n\n'
        '[risk]\naccept_unprotected = true\n\n[plugins]\nenabled = ["paper", "kraken", "sma-crossover", "maintain",'
        ' "log", "escalate", "reconnect", "tbtest-pager"]\n\n'
        '[strategies.sma]\nplugin = "sma-crossover"\nparams = { fast = 2, slow = 3 }\n'
    )
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("")
    secrets.chmod(0o600)

    missing = _cli(tmp_path, "run", "--paper", "--duration", "1")
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "the notifier pager needs the secret(s) pager_key" in missing.stdout
    assert "TRADEBOT_PAGER_KEY" in missing.stdout and "Traceback" not in missing.stderr
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*.db")), "it started"

    refused = _cli(tmp_path, "config", "check", env={"TRADEBOT_PAGER_KEY": "wrong-key-123"})
    assert (
        refused.returncode != 0 and "the pager_key does not start with pk-" in refused.stdout + refused.stderr
    )
    assert "wrong-key-123" not in refused.stdout + refused.stderr

    secrets.write_text('pager_key = "pk-s3cr3t-value"\n')  # a name no core list knows: the plugin declared it
    ran = _cli(tmp_path, "run", "--paper", "--duration", "2")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "paged with key ***" in ran.stderr, ran.stderr[-2000:]
    assert "pk-s3cr3t-value" not in ran.stdout + ran.stderr
