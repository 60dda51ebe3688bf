"""``hello-file``: a notifier that appends every notification as one JSON line to a file.

``[notifiers.hello-file] file`` is taken relative to the bot's state directory. A notifier
only delivers; what to say and when is the bot's business (and a slow notifier never slows
trading).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from tradebot.api import ComponentSpec, Notification, PermanentError, PluginContext, hookimpl, non_empty

__all__ = ["FileConfig", "FileNotifier", "tradebot_register_notifiers"]


@attrs.frozen
class FileConfig:
    """``[notifiers.hello-file]``"""

    file: str = attrs.field(default="hello-notifications.jsonl", validator=non_empty)
    """Where to append; relative paths are inside the state directory."""


class FileNotifier:
    """Appends ``notification.as_json()`` lines."""

    def __init__(self, config: FileConfig | None, context: Any) -> None:
        config = config or FileConfig()
        path = Path(config.file).expanduser()
        self.path = path if path.is_absolute() else PluginContext.of(context).state_dir / path

    async def send(self, notification: Notification) -> None:
        line = json.dumps(notification.as_json(), ensure_ascii=False)
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            raise PermanentError(f"hello-file: cannot write {self.path}: {exc.strerror or exc}") from None

    def _append(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


@hookimpl
def tradebot_register_notifiers() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="hello-file",
            factory=FileNotifier,
            config_cls=FileConfig,
            description="Append every notification to a JSON-lines file",
        )
    ]
