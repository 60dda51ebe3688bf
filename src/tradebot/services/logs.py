"""Logging set-up: JSON lines for machines, a readable line for people, secrets never shown.

``[logging]`` (:class:`LoggingSettings`) chooses the level, the format (``auto`` picks the
readable format when the stream is a terminal, JSON lines otherwise), an optional file and
per-logger levels. Every line carries ``trace_id``/``span_id`` of the current span (when
tracing is on) and the fields a caller passed with ``extra=``. Every registered secret
(:func:`tradebot.core.secrets.redact`) is replaced by ``***`` in the final line, exception
text included, whatever the formatter.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import attrs

from tradebot.core.secrets import redact
from tradebot.core.validate import ge, gt, one_of

__all__ = [
    "JsonFormatter",
    "LoggingSettings",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "current_trace_ids",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def _upper(value: str) -> str:
    # a named function: mypy's attrs plugin cannot read ``converter=str.upper``
    return str.upper(value)


def _check_levels(_inst: Any, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    for name, level in value.items():
        if level.upper() not in LEVELS:
            raise ValueError(f"{attribute.name}.{name} must be one of {', '.join(LEVELS)} (got {level!r})")


@attrs.frozen
class LoggingSettings:
    """``[logging]``: how the bot logs.

    ``format``: ``auto`` (readable on a terminal, JSON lines otherwise), ``json`` or ``text``.
    ``file``: also write JSON lines to this file, rotated at ``file_max_bytes``.
    ``loggers``: per-logger levels, e.g. ``{"tradebot.exchanges" = "DEBUG"}``.
    """

    level: str = attrs.field(default="INFO", converter=_upper, validator=one_of(LEVELS))
    format: str = attrs.field(default="auto", validator=one_of(("auto", "json", "text")))
    file: str | None = None
    file_max_bytes: int = attrs.field(default=20_000_000, validator=gt(0))
    file_backups: int = attrs.field(default=5, validator=ge(0))
    loggers: dict[str, str] = attrs.field(factory=dict, validator=_check_levels)


def current_trace_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the current span as hex, or (None, None) outside a span."""
    from tradebot.core import telemetry

    if not telemetry.state.enabled:
        return None, None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Renders the message and exception text early and replaces secrets in both.

    Attached to every handler :func:`configure_logging` installs, so even a foreign
    formatter only ever sees redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # noqa: BLE001 - a bad format string must not lose the line
            message = f"{record.msg!r} (unformattable args: {type(exc).__name__})"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids, ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_trace_ids()
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if trace_id is not None:
            data["trace_id"] = trace_id
            data["span_id"] = span_id
        for key, value in _extras(record).items():
            data.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return redact(json.dumps(data, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``12:00:01.123 WARNING tradebot.bot: message  key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        line = f"{stamp} {record.levelname:<8} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return redact(line)


_INSTALLED_ATTR = "_tradebot_handler"


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file readable by its owner only (``0600``), each rotated file too."""

    def _open(self) -> Any:
        from tradebot.core.files import private_files

        stream = super()._open()
        private_files(Path(self.baseFilename))
        return stream


def configure_logging(
    settings: LoggingSettings | None = None,
    *,
    stream: IO[str] | None = None,
    state_dir: Path | None = None,
) -> list[logging.Handler]:
    """Install tradebot's handlers on the root logger (replacing ones installed before).

    ``stream`` defaults to stderr. A relative ``file`` is taken from ``state_dir``.
    Returns the installed handlers.
    """
    settings = settings or LoggingSettings()
    stream = stream if stream is not None else sys.stderr
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _INSTALLED_ATTR, False)]:
        root.removeHandler(handler)
        handler.close()

    fmt = settings.format
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "text" if callable(isatty) and isatty() else "json"
    console = logging.StreamHandler(stream)
    console.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    handlers: list[logging.Handler] = [console]
    if settings.file:
        path = Path(settings.file).expanduser()
        if not path.is_absolute() and state_dir is not None:
            path = state_dir / path
        path.parent.mkdir(parents=True, exist_ok=True)
        rotating = _PrivateRotatingFileHandler(
            path, maxBytes=settings.file_max_bytes, backupCount=settings.file_backups, encoding="utf-8"
        )
        rotating.setFormatter(JsonFormatter())
        handlers.append(rotating)
    for handler in handlers:
        handler.addFilter(RedactingFilter())
        setattr(handler, _INSTALLED_ATTR, True)
        root.addHandler(handler)
    root.setLevel(settings.level)
    for name, level in settings.loggers.items():
        logging.getLogger(name).setLevel(level.upper())
    return handlers
