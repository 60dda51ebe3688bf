"""The ``telegram`` notifier: messages to a chat through the Telegram Bot API ``sendMessage``.

Secrets ``telegram_bot_token`` and ``telegram_chat_id`` (env ``TRADEBOT_TELEGRAM_BOT_TOKEN``,
``TRADEBOT_TELEGRAM_CHAT_ID`` or the secrets file). The token is part of the request path,
so it never appears in an error, a log line or a span attribute raised from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import ComponentSpec, ConfigError, HttpPoster, check_url, gt, hookimpl, one_of

__all__ = ["TelegramConfig", "TelegramNotifier", "tradebot_register_notifiers"]

MAX_TEXT = 4096  # Telegram's limit for one message
_ORDER = {"info": 0, "warning": 1, "critical": 2}


@attrs.frozen
class TelegramConfig:
    """``[notifiers.telegram]``.

    ``silent_below``: messages below this level arrive without a sound.
    """

    base_url: str = attrs.field(default="https://api.telegram.org", validator=check_url)
    timeout_s: float = attrs.field(default=10.0, validator=gt(0))
    silent_below: str = attrs.field(default="warning", validator=one_of(tuple(_ORDER)))


class TelegramNotifier:
    """Sends each notification as one chat message."""

    def __init__(self, config: TelegramConfig, *, bot_token: str, chat_id: str) -> None:
        self.config = config
        self._token = bot_token
        self._chat_id = chat_id
        self._http = HttpPoster("Telegram sendMessage", timeout_s=config.timeout_s)

    def __repr__(self) -> str:
        return f"<TelegramNotifier {self.config.base_url}>"

    async def send(self, notification: Any) -> None:
        url = f"{self.config.base_url.rstrip('/')}/bot{self._token}/sendMessage"
        payload = {
            "chat_id": self._chat_id,
            "text": notification.render()[:MAX_TEXT],
            "disable_notification": _ORDER[notification.level.value] < _ORDER[self.config.silent_below],
        }
        status, body = await self._http.post_json(url, payload)
        retry_after = None
        if isinstance(body, dict):
            retry_after = (body.get("parameters") or {}).get("retry_after")
            if status == 200 and body.get("ok") is not True:
                status = int(body.get("error_code") or 502)
        self._http.raise_for_status(
            status, body, retry_after_s=float(retry_after) if retry_after is not None else None
        )

    async def close(self) -> None:
        await self._http.close()


def create(config: TelegramConfig | None, context: Any) -> TelegramNotifier:
    """Factory: needs the ``telegram_bot_token`` and ``telegram_chat_id`` secrets."""
    secrets = (getattr(context, "extras", None) or {}).get("secrets") or {}
    token, chat = secrets.get("telegram_bot_token"), secrets.get("telegram_chat_id")
    if not token or not chat:
        raise ConfigError(
            "the telegram notifier needs the secrets telegram_bot_token and telegram_chat_id "
            "(set TRADEBOT_TELEGRAM_BOT_TOKEN and TRADEBOT_TELEGRAM_CHAT_ID, or put them in the secrets file)"
        )
    return TelegramNotifier(config or TelegramConfig(), bot_token=token, chat_id=chat)


@hookimpl
def tradebot_register_notifiers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="telegram",
            factory=create,
            config_cls=TelegramConfig,
            secrets=("telegram_bot_token", "telegram_chat_id"),
            description="Telegram chat messages (Bot API sendMessage)",
        )
    ]
