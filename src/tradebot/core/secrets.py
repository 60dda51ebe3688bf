"""Secrets: loaded only from environment variables or a separate secrets file, never echoed.

Every secret value loaded is registered here so that log formatters, span exporters and
error messages can redact it (:func:`redact`).
"""

from __future__ import annotations

import base64
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from tradebot.core.components import secret_env_var
from tradebot.core.errors import ConfigError

__all__ = [
    "KNOWN_SECRETS",
    "SecretStore",
    "check_private",
    "encoded_forms",
    "has_secrets",
    "load_secrets",
    "redact",
    "register_secret",
]

KNOWN_SECRETS: dict[str, str] = {
    "control_token": "TRADEBOT_CONTROL_TOKEN",
}
"""The core's own secrets, name -> the environment variable that provides it. Plugins declare
theirs on their :class:`~tradebot.core.components.ComponentSpec` (``secrets``), read from
``TRADEBOT_<NAME>``."""

_REGISTERED: set[str] = set()
_PATTERN: re.Pattern[str] | None = None
MASK = "***"


def encoded_forms(value: str) -> set[str]:
    """A secret as it can appear in text: as is, URL-encoded, base64-encoded, JSON-escaped."""
    raw = value.encode("utf-8")
    forms = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        urllib.parse.quote(value),
        base64.b64encode(raw).decode("ascii"),
        base64.urlsafe_b64encode(raw).decode("ascii"),
        base64.b64encode(raw).decode("ascii").rstrip("="),
        value.replace("/", "\\/"),
    }
    return {f for f in forms if f}


def register_secret(value: str) -> None:
    """Remember a secret value so :func:`redact` hides it everywhere, in every encoded form."""
    global _PATTERN
    if value and len(value) >= 4:
        forms = encoded_forms(value)
        if not forms <= _REGISTERED:
            _REGISTERED.update(forms)
            # the longest form first, so no shorter one leaves part of it behind
            _PATTERN = re.compile("|".join(re.escape(f) for f in sorted(_REGISTERED, key=len, reverse=True)))


def has_secrets() -> bool:
    """Whether any secret is registered (else :func:`redact` changes nothing)."""
    return _PATTERN is not None


def redact(text: str) -> str:
    """Replace every registered secret value (and its encoded forms) in ``text`` with ``***``."""
    if _PATTERN is None or not text:
        return text
    return _PATTERN.sub(MASK, text)


def check_private(path: Path) -> None:
    """Refuse a secrets file that the group or others can read or write (as ssh does)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it reports the problem
    if stat.S_ISREG(mode) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secrets file {path} is accessible by others (mode {stat.S_IMODE(mode):04o}): it must be readable by "
            f"its owner only; run: chmod 600 {path}"
        )


class SecretStore(Mapping[str, str]):
    """Read-only secret values by name. Its repr and str never show a value."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        for value in self._values.values():
            register_secret(value)

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretStore(names={sorted(self._values)})"

    __str__ = __repr__


def load_secrets(
    secrets_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    declared: Iterable[str] = (),
) -> SecretStore:
    """Load secrets from the secrets file (flat TOML ``name = "value"``), then env vars (which win).

    The file path comes from the argument or ``TRADEBOT_SECRETS_FILE``. The names known are
    the core's (:data:`KNOWN_SECRETS`) and those the loaded plugins ``declared``
    (:meth:`PluginHost.secret_names <tradebot.core.plugins.PluginHost.secret_names>`).
    """
    env = os.environ if environ is None else environ
    names = {**{name: secret_env_var(name) for name in declared}, **KNOWN_SECRETS}
    values: dict[str, str] = {}
    path = secrets_file or env.get("TRADEBOT_SECRETS_FILE")
    if path:
        p = Path(path).expanduser()
        check_private(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"secrets file not found: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read secrets file {p}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            # the decoder's message names line/column only, never the content
            raise ConfigError(f"secrets file {p} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key not in names:
                known = ", ".join(sorted(names))
                raise ConfigError(
                    f"secrets file {p}: unknown secret name {key!r} (known: {known}; a plugin's secret is known"
                    " once the plugin is loaded)"
                )
            if not isinstance(value, str):
                raise ConfigError(f"secrets file {p}: {key} must be a string")
            values[key] = value
    for name, var in names.items():
        if env.get(var):
            values[name] = env[var]
    return SecretStore(values)
