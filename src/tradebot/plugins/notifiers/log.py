"""The ``log`` notifier: notifications as log lines (logger ``tradebot.notify.log``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import ComponentSpec, hookimpl, non_empty

__all__ = ["LogNotifier", "LogNotifierConfig", "tradebot_register_notifiers"]

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


@attrs.frozen
class LogNotifierConfig:
    """``[notifiers.log]``: the logger notifications are written to."""

    logger: str = attrs.field(default="tradebot.notify.log", validator=non_empty)


class LogNotifier:
    """Writes each notification as one log line at the notification's level."""

    def __init__(self, config: LogNotifierConfig | None = None) -> None:
        self.config = config or LogNotifierConfig()
        self._log = logging.getLogger(self.config.logger)

    async def send(self, notification: Any) -> None:
        self._log.log(
            _LEVELS.get(notification.level.value, logging.INFO),
            "%s: %s",
            notification.title,
            notification.text,
            extra={"notification": notification.kind, "key": notification.key},
        )


def create(config: LogNotifierConfig | None, context: Any) -> LogNotifier:
    """Factory called by the core as ``factory(config, context)``."""
    return LogNotifier(config)


@hookimpl
def tradebot_register_notifiers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="log",
            factory=create,
            config_cls=LogNotifierConfig,
            description="Notifications as log lines",
        )
    ]
