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
import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from tradebot.core.errors import ConfigError
from tradebot.core.validate import ge, gt, non_empty, one_of

if TYPE_CHECKING:
    from tradebot.core.plugins import PluginHost

__all__ = [
    "BackupSettings",
    "BotSettings",
    "CORE_SECTIONS",
    "PLUGIN_TABLES",
    "PluginsSettings",
    "RiskSettings",
    "Settings",
    "StrategyInstance",
    "find_config",
    "load_settings",
    "structure",
    "validate_plugin_tables",
]

T = TypeVar("T")

ENV_CONFIG = "TRADEBOT_CONFIG"

CORE_SECTIONS: dict[str, str] = {
    "monitoring": "tradebot.core.health:MonitoringSettings",
    "halt": "tradebot.core.policy:HaltSettings",
    "healing": "tradebot.core.healing:HealingSettings",
    "supervisor": "tradebot.core.supervisor:SupervisorSettings",
    "http": "tradebot.core.http_server:HttpSettings",
    "logging": "tradebot.core.logs:LoggingSettings",
    "notifications": "tradebot.core.notify:NotificationSettings",
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


@attrs.frozen
class BotSettings:
    """``[bot]``: what to trade, where, and where to keep state."""

    name: str = "tradebot"
    exchange: str = "paper"
    pairs: list[str] = attrs.field(factory=lambda: ["BTC/USD", "ETH/USD"], validator=non_empty)
    quote: str = "USD"
    state_dir: str = "tradebot-state"
    secrets_file: str | None = None
    market_data: str = "simulator"
    """Where market data comes from for the paper exchange: ``simulator`` (built-in, on
    127.0.0.1, no network) or ``kraken`` (Kraken's public data; needs the internet)."""

    def __attrs_post_init__(self) -> None:
        for pair in self.pairs:
            if "/" not in pair:
                raise ValueError(f"pairs must look like 'BTC/USD' (got {pair!r})")
        one_of(("simulator", "kraken"))(self, attrs.fields(BotSettings).market_data, self.market_data)


@attrs.frozen
class PluginsSettings:
    """``[plugins]``: which plugins load, which must load, and when to quarantine."""

    enabled: list[str] | None = None
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
    min_order_volume: Decimal = attrs.field(default=Decimal("0.0001"), validator=ge(0))


@attrs.frozen
class BackupSettings:
    """``[backup]``: rotating backups of the state database."""

    count: int = attrs.field(default=24, validator=gt(0))
    interval_s: float = attrs.field(default=3600.0, validator=gt(0))


@attrs.frozen
class StrategyInstance:
    """``[strategies.<instance>]``: one running strategy; ``params`` go to the plugin's class."""

    plugin: str
    pairs: list[str] | None = None
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
    sections: dict[str, Any] = attrs.Factory(dict)
    """Core sections of :data:`CORE_SECTIONS`, structured; see :meth:`section`."""
    source: str | None = None
    """The file these settings came from (None: built-in defaults)."""
    plugin_configs: dict[tuple[str, str], Any] = attrs.Factory(dict)
    """(category, name) -> validated plugin config object, filled by validate_plugin_tables."""

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
            return value

        return check

    conv.register_structure_hook(Decimal, to_decimal)
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, strict(kind))
    return conv


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
    if not isinstance(raw, Mapping):
        return None, [f"must be a table (got {type(raw).__name__}) @ {path}"]
    issues: list[str] = []
    try:
        with attrs.validators.disabled():
            obj = converter.structure(dict(raw), cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        return None, _cattrs_messages(exc, path)
    except (ValueError, TypeError) as exc:  # cross-field checks in __attrs_post_init__
        return None, [f"{exc} @ {path}"]
    _validate_instance(obj, path, issues)
    return (obj if not issues else None), issues


def _section_class(name: str) -> type | None:
    target = CORE_SECTIONS.get(name)
    if target is None:
        return None
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None


def _find_secret_keys(raw: Any, path: str, found: list[str]) -> None:
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
            else:
                _find_secret_keys(value, sub, found)


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
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def settings_from_dict(raw: Mapping[str, Any], *, source: str | None = None) -> Settings:
    """Validate a parsed config; :class:`ConfigError` lists every problem with its path."""
    issues: list[str] = []
    _find_secret_keys(raw, "$", issues)
    known = {f.name for f in attrs.fields(Settings)} - {"sections", "source", "plugin_configs"}
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"$.{key}"
        if key in ("bot", "plugins", "risk", "backup"):
            cls = {"bot": BotSettings, "plugins": PluginsSettings, "risk": RiskSettings, "backup": BackupSettings}[key]
            obj, errs = structure(value, cls, path)
            issues.extend(errs)
            if obj is not None:
                kwargs[key] = obj
        elif key == "strategies":
            if not isinstance(value, Mapping):
                issues.append(f"must be a table of strategy instances @ {path}")
                continue
            instances = {}
            for inst_name, inst_raw in value.items():
                obj, errs = structure(inst_raw, StrategyInstance, f"{path}.{inst_name}")
                issues.extend(errs)
                if obj is not None:
                    instances[inst_name] = obj
            kwargs["strategies"] = instances
        elif key in PLUGIN_TABLES:
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                issues.append(f"must hold one table per {PLUGIN_TABLES[key]}, like [{key}.<name>] @ {path}")
                continue
            kwargs[key] = {k: dict(v) for k, v in value.items()}
        elif key in CORE_SECTIONS:
            section_cls = _section_class(key)
            if section_cls is None:
                issues.append(f"section [{key}] is not available in this installation @ {path}")
                continue
            obj, errs = structure(value, section_cls, path)
            issues.extend(errs)
            if obj is not None:
                sections[key] = obj
        elif key not in known:
            hint = _near(key, [*known, *CORE_SECTIONS])
            issues.append(f"unknown section {key!r}{hint} @ {path}")
    if issues:
        where = f" in {source}" if source else ""
        raise ConfigError(f"invalid configuration{where}", issues)
    return Settings(**kwargs, sections=sections, source=source)


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
    every problem with its path. Tables naming a component that is not loaded are errors.
    """
    issues: list[str] = []
    configs = settings.plugin_configs
    for table, category in PLUGIN_TABLES.items():
        raw_tables: dict[str, dict[str, Any]] = getattr(settings, table)
        categories = [category, "halt-trigger"] if category == "check" else [category]
        comps = {}
        for cat in categories:
            comps.update({n: (cat, c) for n, c in host.components(cat).items()})
        for name, raw in raw_tables.items():
            if name not in comps:
                issues.append(f"no loaded {category} plugin provides {name!r}{_near(name, list(comps))} @ $.{table}.{name}")
        for name, (cat, comp) in comps.items():
            obj, errs = _plugin_config(comp.spec.config_cls, raw_tables.get(name, {}), f"$.{table}.{name}")
            issues.extend(errs)
            if not errs:
                configs[(cat, name)] = obj
    strategies = host.components("strategy")
    for inst_name, inst in settings.strategies.items():
        path = f"$.strategies.{inst_name}"
        strategy_comp = strategies.get(inst.plugin)
        if strategy_comp is None:
            issues.append(f"no loaded strategy plugin named {inst.plugin!r}{_near(inst.plugin, list(strategies))} @ {path}.plugin")
            continue
        obj, errs = _plugin_config(strategy_comp.spec.config_cls, inst.params, f"{path}.params")
        issues.extend(errs)
        if not errs:
            configs[("strategy-instance", inst_name)] = obj
    halt = settings.section("halt")
    policy = getattr(halt, "position_policy", None)
    if policy is not None and policy not in host.components("policy"):
        known = list(host.components("policy"))
        issues.append(
            f"no loaded position policy named {policy!r}{_near(policy, known)}; enable its plugin "
            f"or choose one of: {', '.join(sorted(known)) or 'none loaded'} @ $.halt.position_policy"
        )
    if settings.bot.exchange not in host.components("exchange"):
        known = list(host.components("exchange"))
        issues.append(f"no loaded exchange plugin named {settings.bot.exchange!r}{_near(settings.bot.exchange, known)} @ $.bot.exchange")
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
