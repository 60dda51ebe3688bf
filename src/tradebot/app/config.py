"""Configuration: a TOML file turned into attrs classes with cattrs, validated with paths.

Every problem is reported with the rule and where it is, e.g.
``threshold_s must be > 0 (got -5) @ $.checks.staleness.threshold_s``; unknown keys are
rejected. Core sections are attrs classes; each plugin's table (``[checks.<name>]``,
``[exchanges.<name>]``, ``[strategies.<instance>.params]`` ...) is validated against the
config class the plugin declares, once plugins are loaded (:func:`validate_plugin_tables`).
Secrets never live here: see :mod:`tradebot.core.secrets`.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mutable_sequence,
    is_sequence,
    list_structure_factory,
)
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from tradebot.core.errors import ConfigError
from tradebot.core.validate import ge, gt, lt, non_empty, one_of

if TYPE_CHECKING:
    from tradebot.core.plugins import PluginHost

__all__ = [
    "CORE_SECTIONS",
    "PLUGIN_TABLES",
    "BackupSettings",
    "BotSettings",
    "InvalidSettings",
    "PluginsSettings",
    "RiskSettings",
    "Settings",
    "StrategyInstance",
    "find_config",
    "load_settings",
    "protection_issues",
    "required_plugin_issues",
    "structure",
    "validate_plugin_tables",
]

T = TypeVar("T")

log = logging.getLogger("tradebot.config")

ENV_CONFIG = "TRADEBOT_CONFIG"

CORE_SECTIONS: dict[str, str] = {
    "monitoring": "tradebot.core.health:MonitoringSettings",
    "halt": "tradebot.core.policy:HaltSettings",
    "healing": "tradebot.core.healing:HealingSettings",
    "supervisor": "tradebot.core.supervisor:SupervisorSettings",
    "http": "tradebot.services.http_server:HttpSettings",
    "logging": "tradebot.services.logs:LoggingSettings",
    "notifications": "tradebot.services.notify:NotificationSettings",
}
"""Core settings sections owned by core modules: section -> ``module:Class``."""

PLUGIN_TABLES: dict[str, str] = {
    "exchanges": "exchange",
    "checks": "check",
    "recovery": "recovery",
    "policies": "policy",
    "notifiers": "notifier",
}
"""Top-level table -> component category whose config classes validate its sub-tables."""

SECRET_WORDS = ("api_key", "api_secret", "secret", "token", "password", "passphrase", "private_key")


# --- core settings classes -----------------------------------------------------------


def _pair_names(_inst: Any, attribute: attrs.Attribute[Any], value: list[str] | None) -> None:
    """Every pair is written ``BASE/QUOTE``."""
    for pair in value or ():
        if "/" not in pair:
            raise ValueError(f"{attribute.name} must look like 'BTC/USD' (got {pair!r})")


_BOT_ID = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _bot_id(_inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _BOT_ID.fullmatch(value):
        raise ValueError(f"{attribute.name} must be 1-40 letters, digits, '-', '_' or '.' (got {value!r})")


@attrs.frozen
class BotSettings:
    """``[bot]``: what to trade, where, and where to keep state."""

    name: str = "tradebot"
    id: str | None = attrs.field(default=None, validator=_bot_id)
    """Marks this bot's orders on the exchange (in their client order ids), so a bot whose
    state was lost recognises its orders; also stamped into its state database. Defaults to
    ``name``. Bots sharing one exchange account need different ids."""
    exchange: str = "paper"
    pairs: list[str] = attrs.field(factory=lambda: ["BTC/USD", "ETH/USD"], validator=[non_empty, _pair_names])
    quote: str = "USD"
    state_dir: str = "tradebot-state"
    secrets_file: str | None = None
    market_data: str = attrs.field(default="simulator", validator=one_of(("simulator", "exchange", "kraken")))
    """Where a paper run's market data comes from: ``simulator`` (the built-in one, on
    127.0.0.1, no network; for an exchange plugin that can run against it, as ``kraken`` can)
    or ``exchange`` (the exchange plugin's own public data, live; ``kraken`` is the older
    spelling of it). An exchange plugin that cannot run against the simulator is always
    paper-traded on its own data."""
    markets_refresh_s: float = attrs.field(default=60.0, validator=gt(0))
    """How often the running bot asks the exchange for its market rules again (precision,
    minimums, fees, each pair's status), so a pair the exchange turns ``cancel_only`` or
    delists is refused before sending. The exchange plugin may answer from its own cache
    (Kraken: ``[exchanges.kraken] markets_refresh_s``)."""


@attrs.frozen
class PluginsSettings:
    """``[plugins]``: which plugins load, which must load, and when to quarantine."""

    enabled: list[str] | None = None
    disabled: list[str] = attrs.field(factory=list)
    """Plugins not to load, whatever ``enabled`` or the default set says."""
    required: list[str] = attrs.field(factory=list)
    quarantine_after: int = attrs.field(default=5, validator=gt(0))


@attrs.frozen
class RiskSettings:
    """``[risk]``: limits every order intent must respect."""

    max_position: Decimal = attrs.field(default=Decimal("1"), validator=gt(0))
    """Largest absolute position per pair, in base units."""
    max_notional_per_order: Decimal = attrs.field(default=Decimal("5000"), validator=gt(0))
    """Largest order value, in quote currency."""
    max_orders_per_minute: int = attrs.field(default=30, validator=gt(0))
    accept_unprotected: bool = False
    """Run without a drawdown trigger, a loss trigger or a staleness check HALTing (or
    reducing) trading, on purpose; otherwise such a config is refused."""
    spot: bool = True
    """Spot-account rules: no short, a sell only of what the bot holds, a buy only with its cash."""
    cash_tolerance: Decimal = attrs.field(default=Decimal("1"), validator=ge(0))
    """At start-up, how far (in quote currency) the exchange's cash may fall short of the bot's."""
    holding_tolerance_pct: Decimal = attrs.field(default=Decimal("1"), validator=[ge(0), lt(100)])
    """At start-up, how far (percent of the position) the exchange's holding may fall short of it."""
    min_order_volume: Decimal = attrs.field(default=Decimal(0), validator=ge(0))
    """An extra floor on every order's volume (base units); the pair's own minimum from the
    exchange's market rules always applies."""


@attrs.frozen
class BackupSettings:
    """``[backup]``: rotating backups of the state database."""

    count: int = attrs.field(default=24, validator=gt(0))
    interval_s: float = attrs.field(default=3600.0, validator=gt(0))
    min_spacing_s: float = attrs.field(default=2.0, validator=gt(0))
    """Besides the periodic copy, a backup follows every change that matters (a fill, a
    HALT), at most one per ``min_spacing_s``: a restore loses at most that much."""


@attrs.frozen
class StrategyInstance:
    """``[strategies.<instance>]``: one running strategy; ``params`` go to the plugin's class."""

    plugin: str
    pairs: list[str] | None = attrs.field(default=None, validator=_pair_names)
    timeout_s: float = attrs.field(default=5.0, validator=gt(0))
    warn_s: float = attrs.field(default=1.0, validator=gt(0))
    max_failures: int = attrs.field(default=3, validator=gt(0))
    enabled: bool = True
    params: dict[str, Any] = attrs.field(factory=dict)


def _default_strategies() -> dict[str, StrategyInstance]:
    return {
        "sma": StrategyInstance(plugin="sma-crossover"),
        "rsi": StrategyInstance(plugin="rsi-reversion"),
    }


@attrs.frozen
class Settings:
    """The whole effective configuration."""

    bot: BotSettings = attrs.Factory(BotSettings)
    plugins: PluginsSettings = attrs.Factory(PluginsSettings)
    risk: RiskSettings = attrs.Factory(RiskSettings)
    backup: BackupSettings = attrs.Factory(BackupSettings)
    strategies: dict[str, StrategyInstance] = attrs.Factory(_default_strategies)
    exchanges: dict[str, dict[str, Any]] = attrs.Factory(dict)
    checks: dict[str, dict[str, Any]] = attrs.Factory(dict)
    recovery: dict[str, dict[str, Any]] = attrs.Factory(dict)
    policies: dict[str, dict[str, Any]] = attrs.Factory(dict)
    notifiers: dict[str, dict[str, Any]] = attrs.Factory(dict)
    plugin_tables: dict[str, dict[str, Any]] = attrs.Factory(dict)
    """``[plugins.<name>]``: a plugin's own settings (``tradebot_plugin_settings``), raw until
    validate_plugin_tables puts the validated object in plugin_configs as ("plugin", name)."""
    sections: dict[str, Any] = attrs.Factory(dict)
    """Core sections of :data:`CORE_SECTIONS`, structured; see :meth:`section`."""
    source: str | None = None
    """The file these settings came from (None: built-in defaults)."""
    plugin_configs: dict[tuple[str, str], Any] = attrs.Factory(dict)
    """(category, name) -> validated plugin config object, filled by validate_plugin_tables."""
    written: frozenset[str] = frozenset()
    """Paths the config file sets (``$.bot``, ``$.bot.exchange`` ...): the rest are defaults."""
    notes: list[str] = attrs.Factory(list)
    """What validation changed that is not an error (built-in defaults it left out), each
    with its path; filled by validate_plugin_tables."""

    def is_written(self, path: str) -> bool:
        """Whether the config file sets ``path`` (``$.section`` or ``$.section.key``)."""
        return path in self.written

    def section(self, name: str) -> Any:
        """A core section's settings object (its defaults when the file has none)."""
        if name in self.sections:
            return self.sections[name]
        cls = _section_class(name)
        return cls() if cls is not None else None

    def plugin_config(self, category: str, name: str) -> Any:
        """The validated config object of a component (defaults if the file has no table)."""
        return self.plugin_configs.get((category, name))

    @property
    def secrets_path(self) -> Path | None:
        """The secrets file, relative paths taken from the config file's folder (None: none set)."""
        if not self.bot.secrets_file:
            return None
        p = Path(self.bot.secrets_file).expanduser()
        if not p.is_absolute() and self.source:
            p = Path(self.source).resolve().parent / p
        return p

    @property
    def bot_id(self) -> str:
        """The bot's id (``[bot] id``, else ``[bot] name``)."""
        return self.bot.id or self.bot.name

    @property
    def state_path(self) -> Path:
        """The state directory, relative paths taken from the config file's folder."""
        p = Path(self.bot.state_dir).expanduser()
        if not p.is_absolute() and self.source:
            p = Path(self.source).resolve().parent / p
        return p


# --- cattrs plumbing -------------------------------------------------------------------


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def to_decimal(value: Any, _t: Any) -> Decimal:
        if isinstance(value, bool):
            raise ValueError(f"expected a number (got {value!r})")
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"expected a decimal number (got {value!r})") from None
        if not d.is_finite():
            raise ValueError(f"expected a finite number (got {value!r})")
        return d

    def strict(kind: type) -> Any:
        def check(value: Any, _t: Any) -> Any:
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if type(value) is not kind:
                raise ValueError(f"expected {kind.__name__} (got {type(value).__name__} {value!r})")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"expected a finite number (got {value!r})")
            return value

        return check

    def sequence(type_: Any) -> Any:
        """Lists (and tuples, sequences) from lists only: cattrs alone would take a string
        for a list of its characters, and a table for the list of its keys."""
        if is_mutable_sequence(type_):
            base = list_structure_factory(type_, conv)
        else:
            base = homogenous_tuple_structure_factory(type_, conv)

        def check(value: Any, t: Any) -> Any:
            if isinstance(value, str):
                raise ValueError(f"expected a list, like {_as_list(value)} (got a string)")
            if isinstance(value, Mapping):
                raise ValueError("expected a list (got a table)")
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"expected a list (got {type(value).__name__} {value!r})")
            return base(value, t)

        return check

    conv.register_structure_hook(Decimal, to_decimal)
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, strict(kind))
    conv.register_structure_hook_factory(is_sequence, sequence)
    return conv


def _as_list(text: str) -> str:
    """How a string meant as a list is written as one: ``"a, b"`` -> ``["a", "b"]``."""
    items = [part.strip() for part in text.split(",") if part.strip()] or [text]
    return json.dumps(items, ensure_ascii=False)


converter = _make_converter()


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        return f"unknown key(s): {keys}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    if isinstance(exc, ValueError | TypeError):
        return str(exc)
    return f"invalid value ({type(exc).__name__}: {exc})"


def _cattrs_messages(exc: BaseException, path: str) -> list[str]:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        return list(cattrs.transform_error(exc, path=path, format_exception=_format_exception))
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"{_format_exception(exc, None)} @ {path}"]
    return [f"{_format_exception(exc, None)} @ {path}"]


def _validate_instance(obj: Any, path: str, issues: list[str]) -> None:
    """Run every attrs field validator, collecting each failure with its path."""
    if attrs.has(type(obj)):
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            if field.validator is not None:
                try:
                    field.validator(obj, field, value)
                except (ValueError, TypeError) as exc:
                    issues.append(f"{exc} @ {path}.{field.name}")
            _validate_instance(value, f"{path}.{field.name}", issues)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _validate_instance(value, f"{path}.{key}", issues)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _validate_instance(value, f"{path}[{i}]", issues)


def structure(raw: Any, cls: type[T], path: str) -> tuple[T | None, list[str]]:
    """Build ``cls`` from ``raw``; returns (object or None, every problem with its path)."""
    obj, issues, _ = _structure(raw, cls, path)
    return (obj if not issues else None), issues


def _structure(raw: Any, cls: type[T], path: str) -> tuple[T | None, list[str], set[str]]:
    """Build ``cls`` from ``raw`` as far as it goes: (object, problems, keys left at defaults).

    Keys whose values cannot be read (wrong type, unknown key) are reported, then left out
    and the table built again from the rest, so that the field validators still check every
    value that could be read: ``max_orders_per_minute = "thirty"`` does not hide
    ``max_position = -1``. The object is then partly defaults: good enough to check what
    depends on it, not to run with. A cross-field check (``__attrs_post_init__``) on such a
    rebuilt table is not reported: it would compare with a default the user did not write.
    The object is None when the table cannot be built at all.
    """
    if not isinstance(raw, Mapping):
        return None, [f"must be a table (got {type(raw).__name__}) @ {path}"], set()
    data = dict(raw)
    dropped: set[str] = set()
    issues: list[str] = []
    while True:
        try:
            with attrs.validators.disabled():
                obj = converter.structure(data, cls)
        except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
            if dropped:  # what remains fails again: the keys it misses were reported already
                return None, issues, dropped
            issues.extend(_cattrs_messages(exc, path))
            bad = _failed_keys(exc) & data.keys()
            if not bad:
                return None, issues, dropped
            dropped |= bad
            for key in bad:
                del data[key]
            continue
        except (ValueError, TypeError) as exc:  # cross-field checks in __attrs_post_init__
            if dropped:
                return None, issues, dropped
            return None, [f"{exc} @ {path}"], dropped
        # the fields left out hold their defaults, which pass their validators
        _validate_instance(obj, path, issues)
        return obj, issues, dropped


def _failed_keys(exc: BaseException) -> set[str]:
    """The keys of a table whose values cattrs could not read, or did not know."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return set(exc.extra_fields)
    keys: set[str] = set()
    if isinstance(exc, ClassValidationError):
        with_notes, without_notes = exc.group_exceptions()
        keys.update(note.name for _, note in with_notes)
        for sub in without_notes:
            if isinstance(sub, ForbiddenExtraKeysError):
                keys.update(sub.extra_fields)
    return keys


def _section_class(name: str) -> type | None:
    target = CORE_SECTIONS.get(name)
    if target is None:
        return None
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None


def _find_secret_keys(raw: Any, path: str, found: list[str], paths: set[str] | None = None) -> None:
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            sub = f"{path}.{key}"
            if (
                isinstance(key, str)
                and key != "secrets_file"  # the path of the secrets file, not a secret
                and any(word in key.lower() for word in SECRET_WORDS)
                and not isinstance(value, (Mapping, bool))
            ):
                found.append(
                    f"secrets are not allowed in the config file; set the environment variable or "
                    f"use the secrets file (see README, Secrets) @ {sub}"
                )
                if paths is not None:
                    paths.add(sub)
            else:
                _find_secret_keys(value, sub, found, paths)


def _without(raw: Any, path: str, paths: set[str]) -> Any:
    """``raw`` without the keys at ``paths`` (tables copied, nothing else)."""
    if not paths or not isinstance(raw, Mapping):
        return raw
    return {k: _without(v, f"{path}.{k}", paths) for k, v in raw.items() if f"{path}.{k}" not in paths}


def _where(issue: str) -> str:
    """The path of a problem: ``... @ $.bot.pairs`` -> ``$.bot.pairs``."""
    return issue.rpartition(" @ ")[2]


def _under(path: str, base: str) -> bool:
    """Whether ``path`` is ``base`` or inside it (``$.a.b`` and ``$.a[0]`` are inside ``$.a``)."""
    return path == base or path.startswith((base + ".", base + "["))


# --- loading ---------------------------------------------------------------------------


def find_config(path: str | Path | None) -> Path | None:
    """The config file to use: the argument, ``$TRADEBOT_CONFIG``, ``./tradebot.toml``, or none."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    default = Path("tradebot.toml")
    return default if default.exists() else None


def parse_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} nests tables or arrays too deeply (at most {MAX_DEPTH} levels)"
        ) from None
    return data


MAX_DEPTH = 32
"""How deep tables and arrays may nest in a config file (no setting needs more than a few)."""


def _too_deep(value: Any, path: str, depth: int) -> str | None:
    """The path where ``value`` nests deeper than :data:`MAX_DEPTH`, or None."""
    if depth > MAX_DEPTH:
        return path
    if isinstance(value, Mapping):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, v in items:
        found = _too_deep(v, sub, depth + 1)
        if found is not None:
            return found
    return None


def settings_from_dict(raw: Mapping[str, Any], *, source: str | None = None) -> Settings:
    """Validate a parsed config; :class:`InvalidSettings` lists every problem with its path.

    Every section is checked, whatever the others hold. When any has a problem, start-up and
    ``config check`` check the plugin tables as well (:meth:`InvalidSettings.add_plugin_issues`),
    so that one ``config check`` lists every problem of the file, not those of the core
    sections first and the rest later.
    """
    where = _too_deep(raw, "$", 0)
    if where is not None:
        place = f"config file {source}" if source else "the configuration"
        raise ConfigError(
            f"{place} nests tables or arrays too deeply", [f"more than {MAX_DEPTH} levels @ {where}"]
        )
    issues: list[str] = []
    secrets: set[str] = set()
    _find_secret_keys(raw, "$", issues, secrets)
    raw = _without(raw, "$", secrets)  # reported as secrets: not again as unknown keys
    not_sections = {"sections", "source", "plugin_configs", "written", "notes", "plugin_tables"}
    known = {f.name for f in attrs.fields(Settings)} - not_sections
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    bad: set[str] = set()  # paths already reported: their values are defaults from here on

    def take(path: str, result: tuple[Any, list[str], set[str]]) -> Any:
        obj, errs, dropped = result
        issues.extend(errs)
        bad.update(f"{path}.{key}" for key in dropped)
        bad.update(_where(e) for e in errs)  # a value a validator refused: nothing more to say of it
        if obj is None:
            bad.add(path)
        return obj

    for key, value in raw.items():
        path = f"$.{key}"
        if key == "plugins" and isinstance(value, Mapping):  # [plugins.<name>]: a plugin's own table
            own = {f.name for f in attrs.fields(PluginsSettings)}
            kwargs["plugin_tables"] = {
                k: dict(v) for k, v in value.items() if isinstance(v, Mapping) and k not in own
            }
            value = {k: v for k, v in value.items() if k not in kwargs["plugin_tables"]}
        if key in ("bot", "plugins", "risk", "backup"):
            cls = {
                "bot": BotSettings,
                "plugins": PluginsSettings,
                "risk": RiskSettings,
                "backup": BackupSettings,
            }[key]
            obj = take(path, _structure(value, cls, path))
            if obj is not None:
                kwargs[key] = obj
        elif key == "strategies":
            if not isinstance(value, Mapping):
                issues.append(f"must be a table of strategy instances @ {path}")
                bad.add(path)
                continue
            instances = {}
            for inst_name, inst_raw in value.items():
                obj = take(
                    f"{path}.{inst_name}", _structure(inst_raw, StrategyInstance, f"{path}.{inst_name}")
                )
                if obj is not None:
                    instances[inst_name] = obj
            kwargs["strategies"] = instances
        elif key in PLUGIN_TABLES:
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                issues.append(f"must hold one table per {PLUGIN_TABLES[key]}, like [{key}.<name>] @ {path}")
                bad.add(path)
                continue
            kwargs[key] = {k: dict(v) for k, v in value.items()}
        elif key in CORE_SECTIONS:
            section_cls = _section_class(key)
            if section_cls is None:
                issues.append(f"section [{key}] is not available in this installation @ {path}")
                bad.add(path)
                continue
            obj = take(path, _structure(value, section_cls, path))
            if obj is not None:
                sections[key] = obj
        elif key not in known:
            hint = _near(key, [*known, *CORE_SECTIONS])
            issues.append(f"unknown section {key!r}{hint} @ {path}")
    settings = Settings(**kwargs, sections=sections, source=source, written=_written(raw))
    if issues:
        where = f" in {source}" if source else ""
        raise InvalidSettings(f"invalid configuration{where}", issues, settings=settings, bad=frozenset(bad))
    return settings


class InvalidSettings(ConfigError):
    """What :func:`settings_from_dict` raises: the problems of the core sections, and what
    it could build around them, so that a caller that loads plugins anyway (start-up,
    ``config check``) can list the plugin tables' problems too (:meth:`add_plugin_issues`).
    A caller that only wants a setting (the state directory) loads no plugin code."""

    def __init__(self, message: str, issues: list[str], *, settings: Settings, bad: frozenset[str]) -> None:
        super().__init__(message, issues)
        self.settings = settings
        self.bad = bad  # paths already reported: their values are defaults in ``settings``

    def add_plugin_issues(self) -> None:
        """Add the plugin tables' problems (:func:`_plugin_issues`) to :attr:`issues`."""
        self.issues.extend(i for i in _plugin_issues(self.settings, set(self.bad)) if i not in self.issues)


def _written(raw: Mapping[str, Any]) -> frozenset[str]:
    paths = set()
    for key, value in raw.items():
        paths.add(f"$.{key}")
        if isinstance(value, Mapping):
            paths.update(f"$.{key}.{sub}" for sub in value)
    return frozenset(paths)


def _plugin_issues(settings: Settings, bad: set[str]) -> list[str]:
    """The plugin tables' problems, for a config whose core sections have some already.

    Loads the enabled plugins (their config classes validate their tables) as start-up
    would. ``settings`` holds defaults where a value was reported (``bad``): problems at
    those paths, or inside them, are follow-ons and left out. Nothing is checked when
    ``[plugins]`` itself has a problem, as it is then not known which plugins load.
    """
    if any(_under(p, "$.plugins") for p in bad):
        return []
    from tradebot.core.plugins import PluginHost, installed_plugins, name_clashes, resolve_enabled

    plugin_log = logging.getLogger("tradebot.plugins")
    # its "not loaded, starting without it" would mislead: nothing starts
    was_disabled, plugin_log.disabled = plugin_log.disabled, True
    try:
        host = PluginHost(quarantine_after=settings.plugins.quarantine_after)
        # without `required`: a required plugin that fails is one more problem in the list
        host.load(
            resolve_enabled(settings.plugins.enabled, installed_plugins(), disabled=settings.plugins.disabled)
        )
        found = name_clashes() + _validate_plugin_tables(settings, host, log_notes=False)
        if not any(_under(p, "$.risk") or _under(p, "$.strategies") or _under(p, "$.bot") for p in bad):
            found += protection_issues(settings, host)
    except Exception:  # the problems found so far are reported whatever happens here
        log.debug("plugin tables not checked", exc_info=True)
        return []
    finally:
        plugin_log.disabled = was_disabled
    return [i for i in found if not any(_under(_where(i), b) for b in bad)]


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate the config file (or the built-in defaults when there is none)."""
    found = find_config(path)
    if found is None:
        return Settings()
    return settings_from_dict(parse_toml(found), source=str(found))


def _near(word: str, choices: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(word, choices, n=2)
    return f" (did you mean {' or '.join(near)}?)" if near else ""


# --- plugin tables ------------------------------------------------------------------------


def validate_plugin_tables(settings: Settings, host: PluginHost) -> list[str]:
    """Validate every plugin table and strategy ``params`` against the plugins' config classes.

    Fills ``settings.plugin_configs`` (defaults for components without a table) and returns
    every problem with its path. Tables naming a component that is not loaded are errors,
    and so is a ``[plugins] required`` plugin that did not load (not installed, not
    enabled, or it failed). Built-in default strategy instances whose plugin the enabled
    set leaves out are removed from ``settings.strategies``, each with a note in
    ``settings.notes`` (logged too): the user chose not to run that plugin.
    """
    return _validate_plugin_tables(settings, host, log_notes=True)


def _validate_plugin_tables(settings: Settings, host: PluginHost, *, log_notes: bool) -> list[str]:
    from tradebot.core.plugins import installed_plugins

    installed = set(installed_plugins())
    issues = _required_issues(settings, host, installed)
    configs = settings.plugin_configs
    notes: list[str] = []  # new ones: validating the same settings twice notes nothing twice

    def note(text: str) -> None:
        if text not in settings.notes:
            settings.notes.append(text)
            notes.append(text)

    def why(name: str, fix_prefix: str = "") -> str:
        cause, fix = _why_not_loaded(name, settings, host, installed)
        return f"{cause}; {fix_prefix}{fix}" if cause else ""

    for table, category in PLUGIN_TABLES.items():
        raw_tables: dict[str, dict[str, Any]] = getattr(settings, table)
        categories = [category, "halt-trigger"] if category == "check" else [category]
        comps = {}
        for cat in categories:
            comps.update({n: (cat, c) for n, c in host.components(cat).items()})
        for name in raw_tables:
            if name not in comps:
                near = _near(name, list(comps))
                issues.append(
                    f"no loaded {category} plugin provides {name!r}{near}{why(name)} @ $.{table}.{name}"
                )
        for name, (cat, comp) in comps.items():
            obj, errs = _plugin_config(comp.spec.config_cls, raw_tables.get(name, {}), f"$.{table}.{name}")
            issues.extend(errs)
            if not errs:
                configs[(cat, name)] = obj
    settings_classes = host.settings_classes()
    for name in settings.plugin_tables:
        if name in settings_classes:
            continue
        if name in host.report.loaded:
            issues.append(f"plugin {name!r} takes no settings of its own @ $.plugins.{name}")
        else:
            near = _near(name, sorted(host.report.loaded))
            issues.append(f"no loaded plugin named {name!r}{near}{why(name)} @ $.plugins.{name}")
    for name, cls in settings_classes.items():
        obj, errs = _plugin_config(cls, settings.plugin_tables.get(name, {}), f"$.plugins.{name}")
        issues.extend(errs)
        if not errs:
            configs[("plugin", name)] = obj
    strategies = host.components("strategy")
    for inst_name, inst in list(settings.strategies.items()):
        path = f"$.strategies.{inst_name}"
        strategy_comp = strategies.get(inst.plugin)
        if strategy_comp is None:
            if not settings.is_written("$.strategies") and _left_out(inst.plugin, host, installed):
                # a built-in default instance of a plugin the user did not enable: not wanted
                del settings.strategies[inst_name]
                note(
                    f"built-in strategy instance {inst_name!r} (plugin {inst.plugin!r}) is left out"
                    f"{why(inst.plugin, 'to run it, ')} @ {path}"
                )
                continue
            near = _near(inst.plugin, list(strategies))
            issues.append(
                f"no loaded strategy plugin named {inst.plugin!r}{near}{why(inst.plugin)} @ {path}.plugin"
            )
            continue
        obj, errs = _plugin_config(strategy_comp.spec.config_cls, inst.params, f"{path}.params")
        issues.extend(errs)
        if not errs:
            configs[("strategy-instance", inst_name)] = obj
    halt = settings.section("halt")
    policy = getattr(halt, "position_policy", None)
    if policy is not None and policy not in host.components("policy"):
        known = sorted(host.components("policy"))
        default = (
            "" if settings.is_written("$.halt.position_policy") else " (the default [halt] position_policy)"
        )
        reason = why(policy, "a HALT needs a position policy: ") or "; enable the plugin that provides it"
        fix = f", or set [halt] position_policy to one of: {', '.join(known) or 'none loaded'}"
        issues.append(
            f"no loaded position policy named {policy!r}{default}{_near(policy, known)}{reason}{fix} @ $.halt.position_policy"
        )
    exchange = settings.bot.exchange
    exchanges = host.components("exchange")
    if exchange not in exchanges:
        known = sorted(exchanges)
        default = "" if settings.is_written("$.bot.exchange") else " (the default [bot] exchange)"
        reason = why(exchange) or "; enable the plugin that provides it"
        fix = f", or set [bot] exchange to one of: {', '.join(known) or 'none loaded'}"
        issues.append(
            f"no loaded exchange plugin named {exchange!r}{default}{_near(exchange, known)}{reason}{fix} @ $.bot.exchange"
        )
    engine = exchanges.get(exchange)
    if host.enabled is not None and engine is not None and engine.spec.fills_on_paper:
        from tradebot.core.paper_trading import paper_plan

        try:
            plan = paper_plan(settings, host, paper=False)
        except ConfigError:
            plan = None  # said by the setup checks, with its path
        if plan is not None and plan.source not in exchanges:
            # an exchange filling on paper trades on prices from another exchange plugin
            # (against the simulator or live): a note, not an error, as the settings are
            # usable without trading (checks, tools); `tradebot run` would stop at start-up
            source = f"[bot] market_data = {settings.bot.market_data!r}"
            if not settings.is_written("$.bot.market_data"):
                source += ", the default"
            cause, fix = _why_not_loaded(plan.source, settings, host, installed)
            note(
                f"the {exchange} exchange takes its market data ({source}) from the exchange plugin {plan.source!r}"
                f"{cause or ', which is not loaded'}, so paper trading cannot start; "
                f"{fix or 'install or enable it'} @ $.bot.market_data"
            )
    issues.extend(_reference_issues(settings, host, why))
    if log_notes:
        for text in notes:
            log.warning("note: %s", text)
    return issues


def _reference_issues(settings: Settings, host: PluginHost, why: Any) -> list[str]:
    """Names the config file writes that must name a loaded component: healing ladder
    steps, notifiers, readiness checks. (Defaults that name a plugin left out are not the
    user's mistake: the step, notifier or check is then skipped.)"""
    checks = {**host.components("check"), **host.components("halt-trigger")}
    refs = [
        ("healing", "ladder", "recovery action", host.components("recovery")),
        ("notifications", "notifiers", "notifier", host.components("notifier")),
        ("http", "readiness_checks", "check", checks),
    ]
    issues = []
    for section, key, what, loaded in refs:
        if not settings.is_written(f"$.{section}.{key}"):
            continue
        names = getattr(settings.section(section), key, None) or []
        for i, name in enumerate(names):
            if name in loaded:
                continue
            known = sorted(loaded)
            issues.append(
                f"no loaded {what} named {name!r}{_near(name, known)}{why(name)}; loaded: {', '.join(known) or 'none'}"
                f" @ $.{section}.{key}[{i}]"
            )
    return issues


PROTECTION: dict[str, str] = {
    "drawdown": "a drawdown trigger (plugin 'drawdown')",
    "consecutive-losses": "a loss trigger (plugin 'consecutive-losses')",
    "staleness": "a staleness check (plugin 'staleness')",
}
"""The HALT triggers a bot trading money must run, by component name."""


def protection_issues(settings: Settings, host: PluginHost, *, need_strategy: bool = True) -> list[str]:
    """What keeps this config from protecting the money it trades, each with its path.

    A config without a drawdown trigger, a loss trigger and a staleness check that HALT (or
    reduce) trading is refused unless ``[risk] accept_unprotected = true``; so is one with
    no enabled strategy (it would trade nothing), a pair not quoted in ``[bot] quote``, and
    a strategy whose order size is over ``[risk] max_position`` (a base ``volume``) or
    ``max_notional_per_order`` (a ``quote_amount``).
    """
    issues: list[str] = []
    if not settings.risk.accept_unprotected:
        loaded = {**host.components("check"), **host.components("halt-trigger")}
        missing = []
        for name, what in PROTECTION.items():
            comp = loaded.get(name)
            if comp is None:
                from tradebot.core.plugins import installed_plugins

                installed = set(installed_plugins())
                cause, _fix = _why_not_loaded(name, settings, host, installed)
                if not cause and name not in installed:
                    cause = " (not installed)"
                missing.append(f"{what} is not loaded{cause}")
                continue
            cfg = settings.plugin_config(comp.category, name)
            on_critical = getattr(cfg, "on_critical", "halt")
            if on_critical not in ("halt", "reduce"):
                missing.append(f"{what} only alerts ([checks.{name}] on_critical = {on_critical!r})")
        if missing:
            issues.append(
                "trading would run unprotected: "
                + "; ".join(missing)
                + "; enable and configure them, or set "
                "[risk] accept_unprotected = true to run without them on purpose @ $.risk.accept_unprotected"
            )
    enabled = [name for name, inst in settings.strategies.items() if inst.enabled]
    if not enabled and need_strategy:
        issues.append(
            "no strategy instance is enabled in [strategies]: the bot would trade nothing; enable one or add one, like "
            '[strategies.sma] plugin = "sma-crossover" @ $.strategies'
        )
    quote = settings.bot.quote
    pair_lists = [("$.bot.pairs", settings.bot.pairs)]
    pair_lists += [(f"$.strategies.{n}.pairs", i.pairs or []) for n, i in settings.strategies.items()]
    for path, pairs in pair_lists:
        for i, pair in enumerate(pairs):
            pair_quote = pair.rpartition("/")[2]
            if pair_quote != quote:
                issues.append(
                    f"pair {pair!r} is quoted in {pair_quote}, but [bot] quote is {quote!r}: cash, equity and every "
                    f"limit are counted in {quote}; trade pairs quoted in {quote}, or set [bot] quote = "
                    f"{pair_quote!r} @ {path}[{i}]"
                )
    # order sizes a strategy's params set (by base volume or by quote amount) that the risk
    # gate would refuse every time: generic, by the names sizing params go by
    limits = (
        (("volume", "order_volume"), "max_position", settings.risk.max_position),
        (
            ("quote_amount", "order_value", "notional"),
            "max_notional_per_order",
            settings.risk.max_notional_per_order,
        ),
    )
    for name, inst in settings.strategies.items():
        cfg = settings.plugin_config("strategy-instance", name)
        if cfg is None or not inst.enabled:
            continue
        for keys, limit_name, limit in limits:
            for key in keys:
                size = getattr(cfg, key, None)
                if (
                    isinstance(size, (int, float, Decimal))
                    and not isinstance(size, bool)
                    and Decimal(str(size)) > limit
                ):
                    issues.append(
                        f"{key} {size} is over [risk] {limit_name} {limit}: every order of this strategy would "
                        f"be refused; lower it or raise {limit_name} @ $.strategies.{name}.params.{key}"
                    )
    return issues


def _enabled_source(settings: Settings) -> tuple[str, str]:
    """Where the enabled plugin set comes from, and how to add a plugin to it (a format
    string: ``{}`` is the plugin's name)."""
    from tradebot.core.plugins import ENV_PLUGINS

    if os.environ.get(ENV_PLUGINS) is not None:
        return f"{ENV_PLUGINS} (it overrides [plugins] enabled)", f"add it to {ENV_PLUGINS}"
    if settings.plugins.enabled is not None:
        return "[plugins] enabled", "add it there (tradebot plugins enable {})"
    return "the default plugin set", "enable it (tradebot plugins enable {})"


def _left_out(name: str, host: PluginHost, installed: set[str]) -> bool:
    """Plugin ``name`` is installed, but the set of plugins the host loaded leaves it out."""
    return host.enabled is not None and name in installed and name not in host.enabled


def _why_not_loaded(name: str, settings: Settings, host: PluginHost, installed: set[str]) -> tuple[str, str]:
    """Why the plugin of component ``name`` is not loaded, and what to do: ``(": cause", "fix")``.

    Built-in plugins are named like their components. ``("", "")``: no plugin of that name
    is installed, or it is loaded and provides no such component.
    """
    if name in host.report.failed:
        return f": its plugin failed to load ({host.report.failed[name]})", "fix or reinstall it"
    if (
        _left_out(name, host, installed)
        and name in settings.plugins.disabled
        and os.environ.get("TRADEBOT_PLUGINS") is None
    ):
        return ": [plugins] disabled names it", f"remove it from there (tradebot plugins enable {name})"
    if _left_out(name, host, installed):
        source, add = _enabled_source(settings)
        return f": {source} leaves out its plugin", add.format(name)
    return "", ""


def required_plugin_issues(settings: Settings, host: PluginHost) -> list[str]:
    """The ``[plugins] required`` plugins ``host`` did not load, each with why, what to do
    and its path (part of :func:`validate_plugin_tables`, for tools that only load plugins)."""
    from tradebot.core.plugins import installed_plugins

    return _required_issues(settings, host, set(installed_plugins()))


def _required_issues(settings: Settings, host: PluginHost, installed: set[str]) -> list[str]:
    """``[plugins] required`` plugins that are not loaded: not installed, not enabled, or failed."""
    issues = []
    report = host.report
    for i, name in enumerate(settings.plugins.required):
        path = f"$.plugins.required[{i}]"
        drop = "remove it from [plugins] required"
        if name in report.loaded:
            continue
        if name in report.failed:
            issues.append(
                f"required plugin {name!r} could not be loaded: {report.failed[name]}; fix or reinstall it, "
                f"or {drop} @ {path}"
            )
        elif name not in installed:
            issues.append(
                f"required plugin {name!r} is not installed{_near(name, sorted(installed))}; install the package "
                f"that provides it, or {drop} @ {path}"
            )
        else:
            source, add = _enabled_source(settings)
            issues.append(
                f"required plugin {name!r} is not enabled: {source} leaves it out; {add.format(name)}, or {drop} @ {path}"
            )
    return issues


def _plugin_config(cls: type | None, raw: Mapping[str, Any], path: str) -> tuple[Any, list[str]]:
    if cls is None:
        if raw:
            return None, [f"this plugin takes no settings @ {path}"]
        return None, []
    return structure(raw, cls, path)


def unstructure(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data (for ``config show``), defaults included."""
    conv = cattrs.Converter()
    conv.register_unstructure_hook(Decimal, str)
    out: dict[str, Any] = {
        "bot": conv.unstructure(settings.bot),
        "plugins": conv.unstructure(settings.plugins),
        "risk": conv.unstructure(settings.risk),
        "backup": conv.unstructure(settings.backup),
        "strategies": {k: conv.unstructure(v) for k, v in settings.strategies.items()},
    }
    if out["plugins"]["enabled"] is None:
        del out["plugins"]["enabled"]
    for (cat, n), cfg in sorted(settings.plugin_configs.items()):
        if cat == "plugin" and cfg is not None:
            out["plugins"][n] = conv.unstructure(cfg)
    for n, raw in settings.plugin_tables.items():
        out["plugins"].setdefault(n, raw)
    for name in CORE_SECTIONS:
        sec = settings.section(name)
        if sec is not None:
            out[name] = conv.unstructure(sec)
    for table, category in PLUGIN_TABLES.items():
        cats = [category, "halt-trigger"] if category == "check" else [category]
        entries = {
            n: conv.unstructure(cfg)
            for (cat, n), cfg in sorted(settings.plugin_configs.items())
            if cat in cats and cfg is not None
        }
        for n, raw in getattr(settings, table).items():
            entries.setdefault(n, raw)
        if entries:
            out[table] = entries
    for inst_name, inst in out["strategies"].items():
        cfg = settings.plugin_configs.get(("strategy-instance", inst_name))
        if cfg is not None:
            inst["params"] = conv.unstructure(cfg)
        if inst.get("pairs") is None:
            inst.pop("pairs", None)
    return _drop_none(out)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value
