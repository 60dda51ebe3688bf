"""The plugin host: discovery, enabling, validation, isolation and tracing of plugins.

Plugins are found through the ``tradebot`` entry-point group (built-ins included, so a
built-in is discovered exactly like a third-party package). Only enabled plugins are
imported. Every hook call and every call into a plugin-provided object goes through
:meth:`PluginHost.call` / :meth:`PluginHost.acall`, the one path that opens a span,
records exceptions and attributes failures to the plugin that raised them. A plugin that
fails ``quarantine_after`` times in a row is quarantined for the run.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from importlib import metadata
from typing import Any, TypeVar

import attrs
import pluggy

from tradebot.core import hookspecs, telemetry
from tradebot.core.components import ComponentSpec
from tradebot.core.errors import PluginError, PluginQuarantined, TradebotError, describe

__all__ = [
    "ENV_PLUGINS",
    "OPT_IN_GROUP",
    "LoadReport",
    "PluginHost",
    "PluginInfo",
    "QuarantineCause",
    "RegisteredComponent",
    "installed_plugins",
    "name_clashes",
    "opt_in_plugins",
]

log = logging.getLogger("tradebot.plugins")

ENV_PLUGINS = "TRADEBOT_PLUGINS"
GROUP = hookspecs.PROJECT

OPT_IN_GROUP = f"{GROUP}.opt_in"
"""Entry-point group where a package declares which of its plugins are opt-in: off until the
user enables them (``[plugins] enabled``, ``tradebot plugins enable``), as a plugin needing
the user's settings (tokens, URLs) should be. Read from the package metadata: nothing is
imported to learn it. The built-in ``telegram`` and ``webhook`` notifiers are declared there."""

_CATEGORY_ORDER = [
    "tradebot_register_exchanges",
    "tradebot_register_strategies",
    "tradebot_register_halt_triggers",
    "tradebot_register_checks",
    "tradebot_register_recovery_actions",
    "tradebot_register_position_policies",
    "tradebot_register_notifiers",
]

T = TypeVar("T")

_SETTINGS_HOOK = "tradebot_plugin_settings"


@attrs.frozen
class RegisteredComponent:
    """A component together with the plugin that provides it."""

    plugin: str
    category: str
    spec: ComponentSpec


@attrs.frozen
class PluginInfo:
    """One installed plugin, as ``tradebot plugins list`` shows it."""

    name: str
    category: str
    distribution: str | None
    version: str | None
    enabled: bool
    hooks: tuple[str, ...]
    error: str | None = None
    state: str = "loaded"
    """``loaded``, ``failed`` (enabled, but it did not load: see ``error``), ``quarantined``
    (switched off for the run after repeated faults) or ``disabled``."""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "distribution": self.distribution,
            "version": self.version,
            "enabled": self.enabled,
            "state": self.state,
            "error": self.error,
            "hooks": list(self.hooks),
        }


@attrs.define
class LoadReport:
    """What happened when plugins were loaded."""

    loaded: list[str] = attrs.Factory(list)
    failed: dict[str, str] = attrs.Factory(dict)  # plugin -> error message
    unknown: list[str] = attrs.Factory(list)


def installed_plugins() -> dict[str, metadata.EntryPoint]:
    """Every entry point of group ``tradebot``, by name (no import happens)."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def name_clashes() -> list[str]:
    """Plugin names that more than one installed distribution claims, each as a problem
    naming the distributions: which one loads would be an accident of install order."""
    claims: dict[str, list[str]] = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
        where = f"{dist} ({ep.value})"
        if where not in claims.setdefault(ep.name, []):
            claims[ep.name].append(where)
    return [
        f"plugin name {name!r} is claimed by {len(dists)} distributions: {' and '.join(dists)}; uninstall or rename "
        f"one of them @ $.plugins"
        for name, dists in sorted(claims.items())
        if len(dists) > 1
    ]


def opt_in_plugins() -> frozenset[str]:
    """Installed plugins their package declares opt-in (group :data:`OPT_IN_GROUP`; no import)."""
    return frozenset(ep.name for ep in metadata.entry_points(group=OPT_IN_GROUP))


def hook_names(module: object) -> tuple[str, ...]:
    """The tradebot hook implementations a plugin object defines."""
    marker = f"{hookspecs.PROJECT}_impl"
    names = []
    for attr in dir(module):
        if attr.startswith("_"):
            continue
        value = getattr(module, attr, None)
        if callable(value) and hasattr(value, marker):
            names.append(attr)
    return tuple(sorted(names))


def category_of(hooks: Iterable[str]) -> str:
    """The plugin category implied by the register hooks it implements."""
    present = set(hooks)
    for hook in _CATEGORY_ORDER:
        if hook in present:
            return hookspecs.REGISTER_HOOKS[hook]
    return "other"


def resolve_enabled(
    configured: Collection[str] | None,
    installed: Collection[str],
    environ: dict[str, str] | None = None,
    *,
    disabled: Collection[str] = (),
    opt_in: Collection[str] | None = None,
) -> list[str]:
    """The plugin set to load: ``TRADEBOT_PLUGINS`` wins, then the config, then the default.

    The default is every installed plugin except the opt-in ones (``opt_in``, by default
    those the installed packages declare: :func:`opt_in_plugins`). ``disabled``
    (``[plugins] disabled``) is taken out of the configured or default set, so a plugin
    installed later is still loaded by default.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_PLUGINS)
    if raw is not None:
        return [n.strip() for n in raw.split(",") if n.strip()]
    off = set(disabled)
    if configured is not None:
        return [n for n in configured if n not in off]
    if opt_in is None:
        opt_in = opt_in_plugins()
    return sorted(n for n in installed if n not in opt_in and n not in off)


@attrs.frozen
class QuarantineCause:
    """The fault that got a plugin quarantined: the call that failed, and its exception."""

    method: str
    error: BaseException


class PluginHost:
    """Typed front of the pluggy manager; the rest of the code never calls pluggy by string."""

    def __init__(self, *, quarantine_after: int = 5) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.quarantine_after = quarantine_after
        self._failures: dict[str, int] = {}
        self._quarantined: dict[str, str] = {}
        self._causes: dict[str, QuarantineCause] = {}  # quarantined plugin -> the fault that did it
        self._reregistering: set[str] = set()  # plugins whose faults must not quarantine them again now
        # live views for hot loops that unroll the guarded call; typed read-only, and the very
        # dicts rather than proxies, as a proxy's lookups cost more than the rest of the check
        self.quarantined_view: Mapping[str, str] = self._quarantined
        """Live, read-only: quarantined plugin -> why."""
        self.failures_view: Mapping[str, int] = self._failures
        """Live, read-only: plugin -> consecutive failures (no entry while it has none)."""
        self._components: dict[str, dict[str, RegisteredComponent]] = {}
        self._settings_classes: dict[str, type] = {}  # plugin -> class of its [plugins.<name>] table
        self.quarantine_listeners: list[Callable[[str, str], None]] = []
        self.report = LoadReport()
        self.enabled: list[str] | None = None
        """The plugin names :meth:`load` was asked to load (None: it was not called; the
        plugins, if any, were registered one by one)."""

    # --- loading ---------------------------------------------------------------

    def load(self, enabled: Iterable[str], *, required: Collection[str] = ()) -> LoadReport:
        """Import and register the enabled plugins from their entry points.

        A plugin that is not installed, fails to import or validate is reported and skipped;
        if it is in ``required``, :class:`PluginError` is raised instead. A required plugin
        that ``enabled`` leaves out is not loaded: it is not an error here, but one of the
        problems :func:`tradebot.app.config.validate_plugin_tables` reports with its path.
        """
        eps = installed_plugins()
        enabled = list(enabled)
        self.enabled = [*(self.enabled or []), *enabled]
        for name in enabled:
            ep = eps.get(name)
            if ep is None:
                self.report.unknown.append(name)
                msg = f"plugin {name!r} is enabled but not installed"
                if name in required:
                    raise PluginError(
                        f"required plugin {name!r} is enabled but not installed; install the package that "
                        f"provides it, or remove it from [plugins] required and enabled{_required_at(name, required)}",
                        plugin=name,
                    )
                log.error("%s; starting without it", msg)
                continue
            with _load_span(name) as span:
                try:
                    obj = ep.load()
                except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                    _span_failed(span, exc)
                    self._load_failed(name, f"import failed: {type(exc).__name__}: {exc}", required)
                    continue
                if not self.register(obj, name, required=required):
                    _span_failed(span, self.report.failed.get(name, "not registered"))
        return self.report

    def register(self, obj: object, name: str, *, required: Collection[str] = ()) -> bool:
        """Register a plugin object, validate it against the specs, collect its components."""
        try:
            self.pm.register(obj, name=name)
        except pluggy.PluginValidationError as exc:
            self._load_failed(name, f"invalid hook implementation: {exc}", required)
            return False
        except ValueError:  # already registered (pluggy's message lists every plugin object)
            self._load_failed(
                name, f"a plugin named {name!r} is already loaded (is it enabled twice?)", required
            )
            return False
        unknown = [
            h
            for h in hook_names(obj)
            if not hasattr(self.pm.hook, h) or getattr(self.pm.hook, h).spec is None
        ]
        if unknown:
            self.pm.unregister(name=name)
            self._load_failed(
                name, f"implements hook {unknown[0]!r}, which has no spec", required, hook=unknown[0]
            )
            return False
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            self._load_failed(name, f"invalid plugin: {exc}", required)
            return False
        try:
            self._collect_components(name, obj)
        except PluginError as exc:
            self.pm.unregister(name=name)
            self._load_failed(name, exc.message, required, hook=exc.hook)
            return False
        self.report.loaded.append(name)
        return True

    def reregister(self, obj: object, name: str) -> bool:
        """Replace plugin ``name`` by ``obj`` (its reloaded module); a quarantine stays as it was.

        Registering calls the plugin's register hooks through the host, which refuses a
        quarantined plugin: the quarantine is set aside for those calls only. Lifting it
        is the caller's decision (:meth:`release`), once the new code is known to work.
        """
        self.unregister(name)
        reason = self._quarantined.pop(name, None)
        failures = self._failures.get(name)
        self._reregistering.add(name)
        try:
            return self.register(obj, name)
        finally:
            self._reregistering.discard(name)
            if reason is not None:
                self._quarantined[name] = reason
                if failures is not None:
                    self._failures[name] = failures

    def unregister(self, name: str) -> None:
        """Remove a plugin and its components (used by module reload)."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        for comps in self._components.values():
            for key in [k for k, c in comps.items() if c.plugin == name]:
                del comps[key]
        self._settings_classes.pop(name, None)
        if name in self.report.loaded:
            self.report.loaded.remove(name)

    def _load_failed(
        self, name: str, message: str, required: Collection[str], hook: str | None = None
    ) -> None:
        self.report.failed[name] = message
        if name in required:
            raise PluginError(
                f"required plugin {name!r} could not be loaded: {message}; fix or reinstall it, "
                f"or remove it from [plugins] required{_required_at(name, required)}",
                plugin=name,
                hook=hook,
            )
        log.error("plugin %r not loaded, starting without it: %s", name, message)

    def _collect_components(self, name: str, obj: object) -> None:
        for hook, category in hookspecs.REGISTER_HOOKS.items():
            fn = getattr(obj, hook, None)
            if fn is None or not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
                continue
            try:
                specs = self.call(name, hook, fn)
            except PluginError as exc:
                raise PluginError(f"{hook} raised: {exc.__cause__!r}", plugin=name, hook=hook) from exc
            if not isinstance(specs, (list, tuple)) or not all(isinstance(s, ComponentSpec) for s in specs):
                raise PluginError(f"{hook} must return a list of ComponentSpec", plugin=name, hook=hook)
            bucket = self._components.setdefault(category, {})
            for spec in specs:
                if spec.name in bucket:
                    other = bucket[spec.name].plugin
                    raise PluginError(
                        f"{category} {spec.name!r} is already provided by plugin {other!r}",
                        plugin=name,
                        hook=hook,
                    )
                bucket[spec.name] = RegisteredComponent(plugin=name, category=category, spec=spec)
        fn = getattr(obj, _SETTINGS_HOOK, None)
        if fn is not None and hasattr(fn, f"{hookspecs.PROJECT}_impl"):
            try:
                cls = self.call(name, _SETTINGS_HOOK, fn)
            except PluginError as exc:
                raise PluginError(
                    f"{_SETTINGS_HOOK} raised: {exc.__cause__!r}", plugin=name, hook=_SETTINGS_HOOK
                ) from exc
            if not (isinstance(cls, type) and attrs.has(cls)):
                raise PluginError(
                    f"{_SETTINGS_HOOK} must return an attrs class (got {cls!r})",
                    plugin=name,
                    hook=_SETTINGS_HOOK,
                )
            self._settings_classes[name] = cls

    # --- queries -----------------------------------------------------------------

    def secret_names(self) -> set[str]:
        """Every secret name a loaded component declares (needed or optional)."""
        return {
            name
            for bucket in self._components.values()
            for comp in bucket.values()
            for name in (*comp.spec.secrets, *comp.spec.optional_secrets)
        }

    def components(self, category: str) -> dict[str, RegisteredComponent]:
        """Registered components of a category (``exchange``, ``strategy``, ``check`` ...)."""
        return dict(self._components.get(category, {}))

    def component(self, category: str, name: str) -> RegisteredComponent:
        """One component by category and name; :class:`PluginError` naming near matches if absent."""
        found = self._components.get(category, {}).get(name)
        if found is None:
            import difflib

            known = sorted(self._components.get(category, {}))
            near = difflib.get_close_matches(name, known, n=3)
            hint = (
                f"; did you mean {', '.join(near)}?" if near else f"; available: {', '.join(known) or 'none'}"
            )
            raise PluginError(f"no {category} named {name!r} is loaded{hint}", plugin=name)
        return found

    def settings_classes(self) -> dict[str, type]:
        """Plugin -> the attrs class of its own ``[plugins.<name>]`` table (``tradebot_plugin_settings``)."""
        return dict(self._settings_classes)

    async def configure(self, settings: Any, context: Any, *, required: Collection[str] = ()) -> None:
        """Hand every plugin that declares its own settings its validated config (``tradebot_configure``).

        Each plugin is called on its own, through the guarded path, with its config and a
        :class:`~tradebot.core.plugin_context.PluginContext`. A plugin whose call fails is
        quarantined for the run (it never ran with its settings); one in ``required`` raises
        :class:`PluginError` instead.
        """
        from tradebot.core.plugin_context import PluginContext

        for name in list(self._settings_classes):
            obj = self.pm.get_plugin(name)
            fn = getattr(obj, "tradebot_configure", None)
            if fn is None or not hasattr(fn, f"{hookspecs.PROJECT}_impl") or name in self._quarantined:
                continue
            config = settings.plugin_config("plugin", name)
            if config is None and ("plugin", name) not in settings.plugin_configs:
                try:  # settings not validated against the plugins (a caller that skipped it): defaults
                    config = self._settings_classes[name]()
                except Exception:  # noqa: BLE001 - a class with required fields has no defaults
                    config = None
            view = PluginContext.of(context, plugin=name, config=config)
            try:
                await self.acall(name, "tradebot_configure", fn, config=config, context=view)
            except TradebotError as exc:
                if name in required:
                    raise PluginError(
                        f"required plugin {name!r} could not take its settings: {exc}", plugin=name
                    ) from exc
                if name not in self._quarantined:
                    self.quarantine(name, f"tradebot_configure failed: {exc}")

    @property
    def loaded(self) -> list[str]:
        return list(self.report.loaded)

    def is_quarantined(self, plugin: str) -> bool:
        return plugin in self._quarantined

    @property
    def quarantined(self) -> dict[str, str]:
        """Quarantined plugin -> why."""
        return dict(self._quarantined)

    # --- the guarded call path ------------------------------------------------------

    def call(self, plugin: str, method: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on behalf of ``plugin``: traced, failures attributed and counted.

        :class:`TradebotError` subclasses are the plugin's normal way to report an
        operational failure (network down ...): they propagate unchanged and do not count
        towards quarantine. Any other exception is a plugin fault: it is logged, recorded on
        the span and re-raised as :class:`PluginError` chained to the original.
        """
        tracer = telemetry.state.tracer if telemetry.state.enabled else None
        if tracer is None:
            return self.call_untraced(plugin, method, fn, *args, **kwargs)
        with _plugin_span(tracer, plugin, method):
            return self.call_untraced(plugin, method, fn, *args, **kwargs)

    async def acall(
        self, plugin: str, method: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Like :meth:`call`, awaiting the result when it is awaitable (span covers the await)."""
        tracer = telemetry.state.tracer if telemetry.state.enabled else None
        if tracer is None:
            return await self.acall_untraced(plugin, method, fn, *args, **kwargs)
        with _plugin_span(tracer, plugin, method):
            return await self.acall_untraced(plugin, method, fn, *args, **kwargs)

    def call_untraced(
        self, plugin: str, method: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> T:
        """:meth:`call` without a span: failures are still attributed, counted and wrapped.

        For hot paths that sample their own spans (the strategy runner traces failed, slow
        and one in N calls instead of every tick).
        """
        if plugin in self._quarantined:
            raise PluginQuarantined(f"plugin {plugin!r} is quarantined", plugin=plugin, hook=method)
        try:
            result = fn(*args, **kwargs)
        except TradebotError:
            raise
        except Exception as exc:
            raise self.record_fault(plugin, method, exc) from exc
        self.record_success(plugin)
        return result

    async def acall_untraced(
        self, plugin: str, method: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """:meth:`acall` without a span (see :meth:`call_untraced`)."""
        if plugin in self._quarantined:
            raise PluginQuarantined(f"plugin {plugin!r} is quarantined", plugin=plugin, hook=method)
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except TradebotError:
            raise
        except Exception as exc:
            raise self.record_fault(plugin, method, exc) from exc
        self.record_success(plugin)
        return result

    def record_success(self, plugin: str) -> None:
        """A call on behalf of ``plugin`` succeeded: its consecutive-failure count restarts.

        With :meth:`record_fault`, :attr:`quarantined_view` and :attr:`failures_view`, this lets
        a hot loop unroll :meth:`call_untraced` (the strategy runner's dispatcher does).
        """
        self._failures.pop(plugin, None)  # kept empty while nothing fails: hot loops test that

    def record_fault(self, plugin: str, method: str, exc: BaseException) -> PluginError:
        """Attribute a plugin fault as :meth:`call_untraced` does; the error to raise or report."""
        text = describe(exc)
        count = self._failures.get(plugin, 0) + 1
        self._failures[plugin] = count
        log.error(
            "plugin %r failed in %s (%d in a row): %s: %s",
            plugin,
            method,
            count,
            type(exc).__name__,
            text,
            exc_info=exc,
            extra={"plugin": plugin, "hook": method},
        )
        if (
            count >= self.quarantine_after
            and plugin not in self._quarantined
            and plugin not in self._reregistering
        ):
            reason = f"{count} consecutive failures, last in {method}: {type(exc).__name__}: {text}"
            self._causes[plugin] = QuarantineCause(method, exc)
            self.quarantine(plugin, reason)
        return PluginError(
            f"plugin {plugin!r} failed in {method}: {type(exc).__name__}: {text}", plugin=plugin, hook=method
        )

    def quarantine(self, plugin: str, reason: str) -> None:
        """Switch a plugin off for the rest of this run and tell the listeners."""
        self._quarantined[plugin] = reason
        log.critical("plugin %r quarantined for this run: %s", plugin, reason, extra={"plugin": plugin})
        for listener in list(self.quarantine_listeners):
            try:
                listener(plugin, reason)
            except Exception:  # a listener must not break quarantine
                log.exception("quarantine listener failed")

    def quarantine_cause(self, plugin: str) -> QuarantineCause | None:
        """The fault that made the host quarantine ``plugin`` (None: not quarantined for a fault)."""
        return self._causes.get(plugin) if plugin in self._quarantined else None

    def release(self, plugin: str) -> None:
        """Lift a quarantine (after the plugin was reloaded and re-registered)."""
        self._quarantined.pop(plugin, None)
        self._causes.pop(plugin, None)
        self.record_success(plugin)

    def failures(self, plugin: str) -> int:
        """Consecutive failures of a plugin so far."""
        return self._failures.get(plugin, 0)

    # --- broadcast hooks --------------------------------------------------------------

    async def broadcast(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of a broadcast hook, each isolated from the others."""
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            if impl.plugin_name in self._quarantined:
                continue
            try:
                await self.acall(impl.plugin_name, hook, impl.function, **kwargs)
            except TradebotError as exc:
                log.warning("plugin %r: %s raised %s", impl.plugin_name, hook, exc)

    def wrap(self, plugin: str, obj: T) -> T:
        """A proxy of ``obj`` whose method calls go through the guarded path."""
        return _Guarded(self, plugin, obj)  # type: ignore[return-value]

    # --- building components ----------------------------------------------------------

    def build(self, category: str, name: str, config: Any, context: Any) -> Any:
        """Build a component through its factory (guarded) and return it wrapped."""
        comp = self.component(category, name)
        obj = self.call(comp.plugin, f"{category}:{name}.factory", comp.spec.factory, config, context)
        return self.wrap(comp.plugin, obj)


def _required_at(name: str, required: Collection[str]) -> str:
    """`` @ $.plugins.required[i]``: where the config requires ``name`` (when it is a list)."""
    if isinstance(required, list | tuple) and name in required:
        return f" @ $.plugins.required[{list(required).index(name)}]"
    return ""


def _load_span(plugin: str) -> Any:
    """The span of loading one plugin (import and register hooks; no-op with tracing off)."""
    import contextlib

    tracer = telemetry.state.tracer if telemetry.state.enabled else None
    if tracer is None:
        return contextlib.nullcontext(None)
    return tracer.start_as_current_span(
        "plugin.load",
        attributes={"tradebot.plugin": plugin},
        record_exception=True,
        set_status_on_exception=True,
    )


def _span_failed(span: Any, error: BaseException | str) -> None:
    """Mark a load span failed (``span`` None: tracing is off)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, BaseException):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)[:300]))


def _plugin_span(tracer: Any, plugin: str, method: str) -> Any:
    """The span of one plugin call: exceptions recorded, status set on failure."""
    return tracer.start_as_current_span(
        f"{plugin}.{method}",
        attributes={"tradebot.plugin": plugin, "tradebot.hook": method},
        record_exception=True,
        set_status_on_exception=True,
    )


class _Guarded:
    """Proxy routing every method call of a plugin-provided object through the host."""

    __slots__ = ("_tb_cache", "_tb_host", "_tb_obj", "_tb_plugin")

    def __init__(self, host: PluginHost, plugin: str, obj: object) -> None:
        object.__setattr__(self, "_tb_host", host)
        object.__setattr__(self, "_tb_plugin", plugin)
        object.__setattr__(self, "_tb_obj", obj)
        object.__setattr__(self, "_tb_cache", {})

    @property
    def unwrapped(self) -> object:
        return self._tb_obj

    @property
    def plugin_name(self) -> str:
        return self._tb_plugin

    def __getattr__(self, name: str) -> Any:
        cache: dict[str, Any] = self._tb_cache
        if name in cache:
            return cache[name]
        value = getattr(self._tb_obj, name)
        if not callable(value) or inspect.isclass(value) or name.startswith("__"):
            return value
        host, plugin = self._tb_host, self._tb_plugin
        if inspect.iscoroutinefunction(value):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await host.acall(plugin, name, getattr(self._tb_obj, name), *args, **kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        elif inspect.isasyncgenfunction(value):
            # streams are not wrapped item by item; creating the stream is guarded
            def stream_wrapper(*args: Any, **kwargs: Any) -> Any:
                return host.call(plugin, name, getattr(self._tb_obj, name), *args, **kwargs)

            wrapper = stream_wrapper
        else:

            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return host.call(plugin, name, getattr(self._tb_obj, name), *args, **kwargs)

            wrapper = sync_wrapper
        cache[name] = wrapper
        return wrapper

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tb_obj, name, value)

    def __repr__(self) -> str:
        return f"<{self._tb_plugin}: {self._tb_obj!r}>"


def unwrap(obj: Any) -> Any:
    """The plugin object behind a guarded proxy (or the object itself)."""
    return obj.unwrapped if isinstance(obj, _Guarded) else obj


def gather_infos(
    host: PluginHost | None, enabled: Collection[str], *, include_disabled: bool
) -> list[PluginInfo]:
    """Describe installed plugins for ``plugins list``.

    Enabled plugins are described from the loaded host. Disabled ones are imported for
    inspection only with ``include_disabled`` (never registered).
    """
    infos: list[PluginInfo] = []
    for name, ep in sorted(installed_plugins().items()):
        is_enabled = name in enabled
        if not is_enabled and not include_disabled:
            continue
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        error: str | None = None
        hooks: tuple[str, ...] = ()
        obj = host.pm.get_plugin(name) if host is not None else None
        if obj is None:
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001
                error = f"{type(exc).__name__}: {exc}"
        if host is not None and name in host.report.failed:
            error = host.report.failed[name]
        if obj is not None:
            hooks = hook_names(obj)
        if not is_enabled:
            state = "disabled"
        elif error is not None or (host is not None and name not in host.report.loaded):
            state = "failed"
        elif host is not None and host.is_quarantined(name):
            state = "quarantined"
        else:
            state = "loaded"
        if state == "failed" and error is None:
            error = "not loaded"
        infos.append(
            PluginInfo(
                name=name,
                category=category_of(hooks) if hooks else "other",
                distribution=dist,
                version=version,
                enabled=is_enabled,
                hooks=hooks,
                error=error,
                state=state,
            )
        )
    if host is not None:
        for name in host.report.unknown:
            if name in enabled and not any(i.name == name for i in infos):
                infos.append(
                    PluginInfo(
                        name=name,
                        category="other",
                        distribution=None,
                        version=None,
                        enabled=True,
                        hooks=(),
                        error="enabled but not installed",
                        state="failed",
                    )
                )
    return infos
