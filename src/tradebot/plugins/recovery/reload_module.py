"""``reload-module``: reload a plugin's module after an ImportError/NameError and re-register it.

Applies only when the error (or its cause) is an ImportError or NameError raised from a
plugin's module — never from the framework (``tradebot.core``, ``.api``, ``.app``,
``.services``, ``.resilience``, ``.drill``). Recovery reloads
the module that raised (and the plugin's entry module, when different) with
:func:`importlib.reload`, then re-registers the plugin with the plugin host
(``reregister``, which works for a quarantined plugin too, then ``release``). Functions
of the old module object see the fixed globals, since a reload re-runs the code in the
same module namespace.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from collections.abc import Sequence
from typing import Any

import attrs

from tradebot.api import ActionBase, ComponentSpec, Failure, RecoveryLimits, gt, hookimpl, is_core_module

__all__ = ["ReloadModuleAction", "ReloadModuleConfig", "tradebot_register_recovery_actions"]

log = logging.getLogger("tradebot.healing.reload")


@attrs.frozen
class ReloadModuleConfig(RecoveryLimits):
    """``[recovery.reload-module]``: reloading is heavy, so fewer uses per window."""

    max_per_window: int = attrs.field(default=5, validator=gt(0))


def _package_of(module_name: str) -> str:
    return module_name.rpartition(".")[0]


class ReloadModuleAction(ActionBase):
    """Reloads a plugin module and re-registers the plugin."""

    name = "reload-module"

    def __init__(self, config: ReloadModuleConfig | None, context: Any) -> None:
        super().__init__(config or ReloadModuleConfig(), context)
        self.reloaded: list[str] = []

    @property
    def host(self) -> Any:
        return getattr(self.context, "plugins", None)

    def _target(self, failure: Failure) -> tuple[str, str, str] | None:
        """(plugin name, plugin module, failing module) or None when not applicable."""
        if not failure.caused_by(ImportError, NameError):
            return None
        module = failure.module
        if module is None or is_core_module(module) or module == "__main__" or module not in sys.modules:
            return None
        host = self.host
        if host is None:
            return None
        for plugin_name, obj in host.pm.list_name_plugin():
            if not isinstance(obj, types.ModuleType) or plugin_name is None:
                continue
            pmod = obj.__name__
            if is_core_module(pmod):
                continue
            package = _package_of(pmod)
            same = module == pmod or (package and (module == package or module.startswith(package + ".")))
            if same and (failure.plugin is None or failure.plugin == plugin_name or module == pmod):
                return plugin_name, pmod, module
        return None

    def applies_to(self, failure: Failure) -> bool:
        return self._target(failure) is not None

    async def recover(self, failure: Failure) -> bool:
        target = self._target(failure)
        if target is None:
            return False
        plugin_name, plugin_module, failing = target
        importlib.invalidate_caches()
        order = [failing] if failing == plugin_module else [failing, plugin_module]
        # A module that fails to import again raises here: not healed, the ladder goes on.
        reloaded = [importlib.reload(sys.modules[name]) for name in order]
        new_plugin = reloaded[-1]
        host = self.host
        if not host.reregister(new_plugin, plugin_name):
            log.error("reload-module: %s reloaded but could not be registered again", plugin_name)
            return False
        host.release(plugin_name)
        self.reloaded.append(plugin_name)
        log.warning("reload-module: reloaded %s and re-registered plugin %r", ", ".join(order), plugin_name)
        return True

    async def verify(self, failure: Failure) -> bool:
        target_plugin = self.reloaded[-1] if self.reloaded else None
        host = self.host
        return (
            target_plugin is not None
            and host.pm.get_plugin(target_plugin) is not None
            and not host.is_quarantined(target_plugin)
        )


def create(config: ReloadModuleConfig | None, context: Any) -> ReloadModuleAction:
    return ReloadModuleAction(config, context)


@hookimpl
def tradebot_register_recovery_actions() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="reload-module",
            factory=create,
            config_cls=ReloadModuleConfig,
            description="reload a plugin module after an ImportError/NameError and re-register it",
        )
    ]
