"""System resources: host and bot-process CPU and RAM, and event-loop lag.

Only what threatens this bot can make the check critical (and so HALT trading): its own
event-loop lag, its own memory (``process_rss_critical_mb``) and its memory headroom (the
host memory still available to it, ``mem_headroom_critical_mb``). Host-wide CPU and memory
use, which other processes cause, is at most degraded.

Every ``interval_s`` a sample is taken (psutil, non-blocking). A metric is degraded once
it has stayed at or over its ``*_warn`` threshold for ``sustained_s`` and critical once it
has stayed at or over its ``*_critical`` threshold that long; one sample under the
threshold restarts the clock, so a short spike never trips it.

Event-loop lag is the lateness of a timer that fires every ``lag_probe_s``: a blocked
loop delays every timer, order and heartbeat of the bot. The worst lateness since the
previous sample is the sample's ``loop_lag_s``; over ``lag_warn_s`` is degraded at once,
critical only when sustained like the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from tradebot.api import (
    BaseCheck,
    CheckResult,
    ComponentSpec,
    HealthStatus,
    TriggerOptions,
    gt,
    hookimpl,
    in_range,
)

__all__ = ["PsutilSampler", "ResourceCheck", "ResourceSampler", "ResourcesConfig", "tradebot_register_checks"]

_pct = in_range(0, 100)


@attrs.frozen
class ResourcesConfig(TriggerOptions):
    """``[checks.resources]``: thresholds in percent, MB and seconds; unset means not checked."""

    interval_s: float = attrs.field(default=5.0, validator=gt(0))
    sustained_s: float = attrs.field(default=60.0, validator=gt(0))
    host_cpu_warn_pct: float | None = attrs.field(default=90.0, validator=_pct)
    """Host-wide CPU use: degraded only (other processes cause it)."""
    host_mem_warn_pct: float | None = attrs.field(default=90.0, validator=_pct)
    """Host-wide memory use: degraded only; see the headroom limits for what HALTs."""
    mem_headroom_warn_mb: float | None = attrs.field(default=256.0, validator=gt(0))
    mem_headroom_critical_mb: float | None = attrs.field(default=64.0, validator=gt(0))
    """Memory still available to the bot (the host's available memory), below which it
    would soon fail to allocate: critical when it stays under this."""
    process_cpu_warn_pct: float | None = attrs.field(default=None, validator=gt(0))
    process_cpu_critical_pct: float | None = attrs.field(default=None, validator=gt(0))
    process_rss_warn_mb: float | None = attrs.field(default=None, validator=gt(0))
    process_rss_critical_mb: float | None = attrs.field(default=None, validator=gt(0))
    lag_probe_s: float = attrs.field(default=0.1, validator=gt(0))
    lag_warn_s: float | None = attrs.field(default=0.25, validator=gt(0))
    lag_critical_s: float | None = attrs.field(default=2.0, validator=gt(0))


class ResourceSampler(Protocol):
    """Where samples come from: ``{metric: value}`` with the metric names of this module."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def sample(self) -> dict[str, float]: ...


class PsutilSampler:
    """Real samples: psutil for CPU/RAM, a loop timer for lag."""

    def __init__(self, lag_probe_s: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self.lag_probe_s = lag_probe_s
        self._max_lag = 0.0
        self._task: asyncio.Task[None] | None = None
        # cpu_percent(None) compares with the previous call: prime both counters
        psutil.cpu_percent(None)
        self._proc.cpu_percent(None)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._probe())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            from tradebot.api import cancel_and_wait

            await cancel_and_wait(task)

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.lag_probe_s
            await asyncio.sleep(self.lag_probe_s)
            self._max_lag = max(self._max_lag, loop.time() - expected)

    def sample(self) -> dict[str, float]:
        lag, self._max_lag = self._max_lag, 0.0
        memory = self._psutil.virtual_memory()
        with self._proc.oneshot():
            rss_mb = self._proc.memory_info().rss / 1_048_576
            proc_cpu = self._proc.cpu_percent(None)
        return {
            "host_cpu_pct": float(self._psutil.cpu_percent(None)),
            "host_mem_pct": float(memory.percent),
            "mem_headroom_mb": float(memory.available / 1_048_576),
            "process_cpu_pct": float(proc_cpu),
            "process_rss_mb": float(rss_mb),
            "loop_lag_s": float(lag),
        }


# metric -> (warn field, critical field, unit); host-wide load has no critical level
_LIMITS: dict[str, tuple[str | None, str | None, str]] = {
    "host_cpu_pct": ("host_cpu_warn_pct", None, "%"),
    "host_mem_pct": ("host_mem_warn_pct", None, "%"),
    "mem_headroom_mb": ("mem_headroom_warn_mb", "mem_headroom_critical_mb", " MB"),
    "process_cpu_pct": ("process_cpu_warn_pct", "process_cpu_critical_pct", "%"),
    "process_rss_mb": ("process_rss_warn_mb", "process_rss_critical_mb", " MB"),
    "loop_lag_s": ("lag_warn_s", "lag_critical_s", " s"),
}
_IMMEDIATE_WARN = frozenset({"loop_lag_s"})
_BELOW = frozenset({"mem_headroom_mb"})  # bad when it falls under its limits


class ResourceCheck(BaseCheck):
    """Applies sustained thresholds to resource samples."""

    def __init__(
        self, name: str, config: ResourcesConfig, sampler: ResourceSampler, clock: Any = None
    ) -> None:
        super().__init__(name, config, clock)
        self.config = config
        self.sampler = sampler
        # (metric, level) -> monotonic time since which the metric has been at/over the level
        self._over_since: dict[tuple[str, str], float] = {}

    async def start(self, emit: Any) -> None:
        await super().start(emit)
        await self.sampler.start()

    async def stop(self) -> None:
        await self.sampler.stop()
        await super().stop()

    async def evaluate(self) -> CheckResult:
        sample = self.sampler.sample()
        now = self.clock.monotonic()
        critical: list[str] = []
        degraded: list[str] = []
        for metric, (warn_f, crit_f, unit) in _LIMITS.items():
            value = sample.get(metric)
            if value is None:
                continue
            below = metric in _BELOW
            for level, field in (("critical", crit_f), ("warn", warn_f)):
                limit = getattr(self.config, field) if field is not None else None
                key = (metric, level)
                if limit is None or (value > limit if below else value < limit):
                    self._over_since.pop(key, None)
                    continue
                since = self._over_since.setdefault(key, now)
                held = now - since
                text = f"{metric} {value:.2f}{unit} {'<=' if below else '>='} {limit:g}{unit}"
                if level == "critical" and held >= self.config.sustained_s:
                    critical.append(f"{text} for {held:.0f}s")
                elif level == "warn" and (held >= self.config.sustained_s or metric in _IMMEDIATE_WARN):
                    degraded.append(f"{text}" + (f" for {held:.0f}s" if held else ""))
        if critical:
            return self.result(HealthStatus.CRITICAL, "sustained: " + "; ".join(critical), sample)
        if degraded:
            return self.result(HealthStatus.DEGRADED, "; ".join(degraded), sample)
        return self.result(
            HealthStatus.OK,
            f"cpu {sample.get('host_cpu_pct', 0):.0f}%, mem {sample.get('host_mem_pct', 0):.0f}%, "
            f"loop lag {sample.get('loop_lag_s', 0) * 1000:.0f} ms",
            sample,
        )


def make(config: ResourcesConfig | None, context: Any) -> ResourceCheck:
    """Factory: real psutil samples and a loop-lag probe."""
    config = config or ResourcesConfig()
    return ResourceCheck(
        "resources", config, PsutilSampler(config.lag_probe_s), getattr(context, "clock", None)
    )


@hookimpl
def tradebot_register_checks() -> Sequence[ComponentSpec]:
    return [
        ComponentSpec(
            name="resources",
            factory=make,
            config_cls=ResourcesConfig,
            description="Host/process CPU and RAM and event-loop lag, sustained over a window",
        )
    ]
