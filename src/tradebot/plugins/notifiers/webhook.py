"""The ``webhook`` notifier: each notification POSTed as JSON to a URL of the user's.

Optional bearer token from the secret ``webhook_token`` (env ``TRADEBOT_WEBHOOK_TOKEN``).
The body is :meth:`tradebot.services.notify.Notification.as_json`:
``{"bot", "kind", "level", "title", "text", "time", "key"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import ComponentSpec, HttpPoster, check_url, gt, hookimpl

__all__ = ["WebhookConfig", "WebhookNotifier", "tradebot_register_notifiers"]


@attrs.frozen
class WebhookConfig:
    """``[notifiers.webhook]``: where to POST (required) and how long to wait."""

    url: str = attrs.field(validator=check_url)
    timeout_s: float = attrs.field(default=10.0, validator=gt(0))


class WebhookNotifier:
    """POSTs each notification as JSON."""

    def __init__(self, config: WebhookConfig, *, bearer: str | None = None) -> None:
        self.config = config
        self._bearer = bearer
        self._http = HttpPoster("webhook", timeout_s=config.timeout_s)

    def __repr__(self) -> str:
        return f"<WebhookNotifier auth={'bearer' if self._bearer else 'none'}>"

    async def send(self, notification: Any) -> None:
        headers = {"Authorization": f"Bearer {self._bearer}"} if self._bearer else None
        status, body = await self._http.post_json(self.config.url, notification.as_json(), headers=headers)
        self._http.raise_for_status(status, body)

    async def close(self) -> None:
        await self._http.close()


def create(config: WebhookConfig, context: Any) -> WebhookNotifier:
    """Factory: ``url`` from ``[notifiers.webhook]``, optional secret ``webhook_token``."""
    secrets = (getattr(context, "extras", None) or {}).get("secrets") or {}
    return WebhookNotifier(config, bearer=secrets.get("webhook_token") or None)


@hookimpl
def tradebot_register_notifiers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="webhook",
            factory=create,
            config_cls=WebhookConfig,
            optional_secrets=("webhook_token",),
            description="JSON POST of every notification to a URL",
        )
    ]
