"""Logs (JSON, trace ids, redaction) and the notification path to a local fake Telegram Bot API."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tradebot.core import telemetry
from tradebot.core.clock import FakeClock
from tradebot.core.models import Alert, AlertLevel, TradingState, TradingStateChange
from tradebot.core.secrets import SecretStore
from tradebot.plugins.notifiers.telegram import TelegramConfig, TelegramNotifier, create
from tradebot.services.logs import LoggingSettings, configure_logging
from tradebot.services.notify import Notification, NotificationDispatcher, NotificationSettings

from .fake_telegram import FakeBotApi

TOKEN = "777000:TELEGRAM-secret-token-value"


@pytest.fixture
def log_stream() -> io.StringIO:
    stream = io.StringIO()
    handlers = configure_logging(LoggingSettings(format="json", level="DEBUG"), stream=stream)
    yield stream
    for h in handlers:
        logging.getLogger().removeHandler(h)


def test_json_lines_carry_trace_ids_and_extras_and_hide_secrets(log_stream: io.StringIO) -> None:
    SecretStore({"kraken_api_secret": "KRAKEN-very-secret-value"})
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing(span_processor=SimpleSpanProcessor(exporter))
    try:
        log = logging.getLogger("tradebot.test")
        with telemetry.get_tracer().start_as_current_span("outer") as span:
            log.info("placing %s with key %s", "order", "KRAKEN-very-secret-value", extra={"pair": "BTC/USD"})
            try:
                raise RuntimeError("boom KRAKEN-very-secret-value")
            except RuntimeError:
                log.exception("failed")
        ctx = span.get_span_context()
    finally:
        telemetry.shutdown_tracing()
    text = log_stream.getvalue()
    assert "KRAKEN-very-secret-value" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    lines = [line for line in lines if line["logger"] == "tradebot.test"]
    first, second = lines[0], lines[1]
    assert first["message"] == "placing order with key ***"
    assert first["pair"] == "BTC/USD" and first["level"] == "INFO" and first["logger"] == "tradebot.test"
    assert first["trace_id"] == format(ctx.trace_id, "032x")
    assert first["span_id"] == format(ctx.span_id, "016x")
    assert "RuntimeError: boom ***" in second["exception"]


def test_text_format_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    handlers = configure_logging(LoggingSettings(), stream=stream)
    try:
        logging.getLogger("tradebot.x").warning("hello %d", 5, extra={"check": "staleness"})
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
    line = stream.getvalue().strip()
    assert " WARNING  tradebot.x: hello 5  check=staleness" in line
    assert not line.startswith("{")


def _change(to: TradingState, reason: str) -> TradingStateChange:
    return TradingStateChange(
        previous=TradingState.ACTIVE,
        current=to,
        reason=reason,
        source="check:drawdown",
        time=datetime.now(UTC),
    )


async def test_telegram_gets_the_right_messages_and_an_outage_never_blocks() -> None:
    fake = FakeBotApi(TOKEN)
    await fake.start()
    notifier = create(
        TelegramConfig(base_url=fake.base_url, timeout_s=1.0),
        type(
            "Ctx",
            (),
            {"extras": {"secrets": SecretStore({"telegram_bot_token": TOKEN, "telegram_chat_id": "4242"})}},
        )(),
    )
    clock = FakeClock()
    settings = NotificationSettings(
        heartbeat_interval_s=3600, retry_wait_s=0.01, queue_size=5, rate_per_minute=60, drain_timeout_s=2.0
    )
    dispatcher = NotificationDispatcher({"telegram": notifier}, settings, clock=clock, bot_name="bot-1")
    await dispatcher.start()
    await asyncio.sleep(0)  # let the heartbeat task start sleeping on the fake clock
    try:
        dispatcher.tradebot_trading_state_changed(_change(TradingState.HALTED, "drawdown 12% > 10%"))
        # the bot's matching alert right after is not sent twice
        dispatcher.tradebot_alert(
            Alert(
                AlertLevel.CRITICAL,
                "trading HALTED",
                "active -> halted",
                "check:drawdown",
                key="trading-state:halted",
            )
        )
        dispatcher.tradebot_alert(
            Alert(AlertLevel.WARNING, "healing burst", "5 reconnects in 60s", "healer", key="healing-burst")
        )
        dispatcher.tradebot_alert(
            Alert(AlertLevel.WARNING, "healing burst", "6 reconnects in 60s", "healer", key="healing-burst")
        )
        await clock.advance(3600)  # heartbeat
        assert await dispatcher.outboxes["telegram"].drain(2.0)
        texts = fake.texts()
        assert len(texts) == 3, texts
        assert "trading HALTED" in texts[0] and "drawdown 12% > 10%" in texts[0] and "[bot-1]" in texts[0]
        assert "healing burst" in texts[1] and "5 reconnects" in texts[1]
        assert "heartbeat" in texts[2] and "uptime 1h00m" in texts[2]
        assert all(m["chat_id"] == "4242" for m in fake.messages)
        assert fake.messages[2]["disable_notification"] is True  # info is silent
        assert dispatcher.deduplicated == 2

        # a 429 is retried after retry_after
        fake.answer_429 = 1
        dispatcher.tradebot_trading_state_changed(_change(TradingState.ACTIVE, "operator resume"))
        for _ in range(20):
            await asyncio.sleep(0.01)
            await clock.advance(1)  # retry waits run on the bot's clock
        assert fake.answer_429 == 0
        assert await dispatcher.outboxes["telegram"].drain(2.0)
        assert "trading resumed" in fake.texts()[-1]

        # outage: hooks return at once, the queue stays bounded, the oldest are dropped
        await fake.stop()
        started = time.perf_counter()
        for i in range(20):
            dispatcher.notify(Notification("alert", AlertLevel.CRITICAL, f"alert {i}", "x", key=f"k{i}"))
        assert time.perf_counter() - started < 0.05
        box = dispatcher.outboxes["telegram"]
        assert len(box.queue) <= settings.queue_size
        assert box.stats.dropped >= 20 - settings.queue_size - 1
        for _ in range(10):
            await asyncio.sleep(0.02)
            await clock.advance(1)
        assert box.stats.failed + box.stats.retries > 0
    finally:
        await dispatcher.stop()
        await fake.stop()
    assert TOKEN not in repr(notifier)


async def test_missing_telegram_secrets_is_a_clear_config_error() -> None:
    from tradebot.core.errors import ConfigError

    with pytest.raises(ConfigError, match="TRADEBOT_TELEGRAM_BOT_TOKEN"):
        create(TelegramConfig(), type("Ctx", (), {"extras": {"secrets": SecretStore({})}})())


async def test_wrong_token_is_permanent_and_the_error_never_shows_the_token() -> None:
    from tradebot.core.errors import PermanentError

    fake = FakeBotApi("another:token")
    await fake.start()
    notifier = TelegramNotifier(TelegramConfig(base_url=fake.base_url), bot_token=TOKEN, chat_id="1")
    try:
        with pytest.raises(PermanentError) as info:
            await notifier.send(Notification("alert", AlertLevel.INFO, "t", "x"))
        assert TOKEN not in str(info.value) and "401" in str(info.value)
    finally:
        await notifier.close()
        await fake.stop()
