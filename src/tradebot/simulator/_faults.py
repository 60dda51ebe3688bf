"""Fault injection: rules that make the simulator misbehave like a real exchange does.

Spec format (``--faults`` and ``POST /_sim/faults``)
----------------------------------------------------
Rules are separated by ``;`` (or new lines). A rule is comma-separated items; the first is
``KIND`` or ``KIND=VALUE``, the others are options::

    latency=0.2; http5xx=503,p=0.3,on=AddOrder|Balance; error=EService:Unavailable,on=AddOrder,n=2
    drop_response,on=AddOrder,n=1; stale,at=5,for=10; status=maintenance; ratelimit=3/0.1

Request faults (apply to REST calls; ``on`` chooses endpoints):

==============  =============  ===============================================================
kind            value          effect
==============  =============  ===============================================================
latency         seconds        add this delay before answering (adds up across rules)
timeout         seconds (60)   hang this long (longer than a client timeout), then drop
http5xx         code (502)     Cloudflare-style HTML error page with that status
error           Kraken error   ``{"error":[VALUE],"result":{}}``, request not executed
malformed       -              execute, answer 200 with a body that is not JSON
truncated       -              execute, answer 200 with the JSON cut in half
drop            -              close the connection without executing or answering
drop_response   -              execute (an AddOrder is placed), then close without answering
==============  =============  ===============================================================

State faults (hold while the rule is active; ``on``/``p``/``n`` do not apply):

==============  =============  ===============================================================
stale           -              prices freeze: REST Ticker/OHLC and WS channels stop moving
status          mode           SystemStatus becomes maintenance | cancel_only | post_only;
                               maintenance rejects AddOrder/CancelOrder with
                               EService:Unavailable, cancel_only rejects AddOrder with
                               EService:Market in cancel_only mode, post_only rejects orders
                               that would take liquidity with EService:Market in post_only mode
ratelimit       MAX[/DECAY]    tighter REST counter (EAPI:Rate limit exceeded)
order_ratelimit MAX[/DECAY]    tighter per-pair AddOrder/CancelOrder limit (EOrder:Rate limit exceeded)
ws_disconnect   seconds (0)    close every WebSocket now, refuse new ones for that long
                               (HTTP 503); a one-shot action, the rule is gone afterwards
==============  =============  ===============================================================

Options: ``on=A|B`` endpoint names (``AddOrder``, ``Ticker``...) or the groups ``public``,
``private`` and ``*`` (the default); ``p=0.3`` probability per matching call (default 1);
``n=2`` only the next 2 triggered calls, then the rule is gone; ``at=5`` becomes active 5 s
after it was added; ``for=10`` is removed 10 s after it became active.
Probabilities draw from a generator seeded by the simulator's seed, so a run that makes the
same calls in the same order sees the same faults.

Scenario files (``--scenario FILE``) are TOML: a ``faults = "SPEC"`` string and/or
``[[fault]]`` tables with keys ``kind``, ``value``, ``on`` (list), ``p``, ``n``, ``at``, ``for``.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from tradebot.core.clock import Clock

__all__ = ["FaultInjector", "FaultRule", "FaultSpecError", "load_scenario", "parse_faults"]

REQUEST_KINDS = frozenset(
    {"latency", "timeout", "http5xx", "error", "malformed", "truncated", "drop", "drop_response"}
)
STATE_KINDS = frozenset({"stale", "status", "ratelimit", "order_ratelimit", "ws_disconnect"})
KINDS = REQUEST_KINDS | STATE_KINDS
GROUPS = frozenset({"*", "public", "private"})
_NO_VALUE = frozenset({"stale", "malformed", "truncated", "drop", "drop_response"})
_DEFAULTS = {"timeout": "60", "http5xx": "502", "ws_disconnect": "0"}
STATUSES = ("online", "maintenance", "cancel_only", "post_only")


class FaultSpecError(ValueError):
    """A fault spec or scenario that cannot be understood; the message says which part."""


def _check_value(kind: str, value: str | None) -> str | None:
    if kind in _NO_VALUE:
        if value is not None:
            raise FaultSpecError(f"fault {kind!r} takes no value (got {value!r})")
        return None
    value = value if value is not None else _DEFAULTS.get(kind)
    if value is None:
        raise FaultSpecError(f"fault {kind!r} needs a value ({kind}=...)")
    try:
        if kind in ("latency", "timeout", "ws_disconnect"):
            if float(value) < 0:
                raise ValueError
        elif kind == "http5xx":
            if not 500 <= int(value) <= 599:
                raise ValueError
        elif kind in ("ratelimit", "order_ratelimit"):
            parts = [float(x) for x in value.split("/")]
            if len(parts) > 2 or any(x < 0 for x in parts):
                raise ValueError
        elif kind == "error":
            if not (value.startswith("E") and ":" in value):
                raise ValueError
        elif kind == "status" and value not in STATUSES:
            raise ValueError
    except ValueError:
        raise FaultSpecError(f"bad value for fault {kind!r}: {value!r}") from None
    return value


@attrs.frozen
class FaultRule:
    """One fault: what (``kind``/``value``), where (``targets``), how often, and when."""

    kind: str
    value: str | None = None
    targets: frozenset[str] = frozenset({"*"})
    probability: float = 1.0
    count: int | None = None
    at_s: float = 0.0
    for_s: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FaultSpecError(f"unknown fault kind {self.kind!r}; known: {', '.join(sorted(KINDS))}")
        object.__setattr__(self, "value", _check_value(self.kind, self.value))
        if not 0.0 <= self.probability <= 1.0:
            raise FaultSpecError(f"p must be between 0 and 1 (got {self.probability})")
        if self.count is not None and self.count < 1:
            raise FaultSpecError(f"n must be >= 1 (got {self.count})")
        if self.at_s < 0 or (self.for_s is not None and self.for_s <= 0):
            raise FaultSpecError("at must be >= 0 and for > 0")
        if not self.targets:
            raise FaultSpecError("on= names no endpoint")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build from a scenario table / admin JSON object (keys kind, value, on, p, n, at, for)."""
        unknown = set(data) - {"kind", "value", "on", "p", "n", "at", "for"}
        if unknown:
            raise FaultSpecError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        if not isinstance(data.get("kind"), str):
            raise FaultSpecError("a fault needs a 'kind'")
        on = data.get("on", ["*"])
        targets = [on] if isinstance(on, str) else list(on)
        try:
            return cls(
                kind=data["kind"],
                value=None if data.get("value") is None else str(data["value"]),
                targets=frozenset(str(t) for t in targets),
                probability=float(data.get("p", 1.0)),
                count=None if data.get("n") is None else int(data["n"]),
                at_s=float(data.get("at", 0.0)),
                for_s=None if data.get("for") is None else float(data["for"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, FaultSpecError):
                raise
            raise FaultSpecError(f"bad fault {dict(data)!r}: {exc}") from None

    def to_spec(self) -> str:
        """This rule in the spec format (round-trips through :func:`parse_faults`)."""
        items = [self.kind if self.value is None else f"{self.kind}={self.value}"]
        if self.targets != frozenset({"*"}):
            items.append("on=" + "|".join(sorted(self.targets)))
        if self.probability != 1.0:
            items.append(f"p={self.probability:g}")
        if self.count is not None:
            items.append(f"n={self.count}")
        if self.at_s:
            items.append(f"at={self.at_s:g}")
        if self.for_s is not None:
            items.append(f"for={self.for_s:g}")
        return ",".join(items)


def parse_faults(spec: str) -> list[FaultRule]:
    """Parse a spec string (see the module docs) into rules."""
    rules = []
    for text in spec.replace("\n", ";").split(";"):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        head, *options = [item.strip() for item in text.split(",")]
        kind, _, value = head.partition("=")
        data: dict[str, Any] = {"kind": kind.strip()}
        if value:
            data["value"] = value.strip()
        for option in options:
            key, sep, val = option.partition("=")
            if not sep or key not in ("on", "p", "n", "at", "for"):
                raise FaultSpecError(f"bad option {option!r} in fault {text!r} (use on=, p=, n=, at=, for=)")
            data[key] = [t.strip() for t in val.split("|") if t.strip()] if key == "on" else val
        rules.append(FaultRule.from_mapping(data))
    return rules


def load_scenario(path: str | Path) -> list[FaultRule]:
    """Read a TOML scenario file: ``faults = "SPEC"`` and/or ``[[fault]]`` tables."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FaultSpecError(f"cannot read scenario {path}: {exc}") from None
    unknown = set(data) - {"faults", "fault"}
    if unknown:
        raise FaultSpecError(f"unknown keys in scenario {path}: {', '.join(sorted(unknown))}")
    rules = parse_faults(data["faults"]) if isinstance(data.get("faults"), str) else []
    tables = data.get("fault", [])
    if not isinstance(tables, list):
        raise FaultSpecError(f"'fault' in {path} must be an array of tables ([[fault]])")
    rules.extend(FaultRule.from_mapping(table) for table in tables)
    return rules


@attrs.define
class ActiveFault:
    """A rule as installed: its id, how many triggers remain, and its active window."""

    id: int
    rule: FaultRule
    remaining: int | None
    starts_at: float
    ends_at: float | None

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.rule.to_spec(),
            "kind": self.rule.kind,
            "value": self.rule.value,
            "on": sorted(self.rule.targets),
            "p": self.rule.probability,
            "remaining": self.remaining,
            "active": self.starts_at <= now,
            "starts_in_s": max(0.0, self.starts_at - now),
            "ends_in_s": None if self.ends_at is None else max(0.0, self.ends_at - now),
        }


class FaultInjector:
    """The rules in force, with deterministic draws.

    Request handlers call :meth:`draw` once per REST call; the simulator reads the state
    faults (:meth:`status`, :meth:`stale`, :meth:`rest_limit`, ...) where they matter.
    """

    def __init__(self, seed: int, clock: Clock, *, known_targets: Iterable[str] = ()) -> None:
        self._rng = random.Random(f"{seed}:faults")
        self._clock = clock
        self._known = frozenset(known_targets) | GROUPS
        self._rules: list[ActiveFault] = []
        self._next_id = 1
        self._fired_disconnects: list[float] = []

    def add(self, rules: str | FaultRule | Iterable[FaultRule]) -> list[int]:
        """Install rules (a spec string, one rule or several); returns their ids."""
        if isinstance(rules, str):
            rules = parse_faults(rules)
        elif isinstance(rules, FaultRule):
            rules = [rules]
        rules = list(rules)
        for rule in rules:
            unknown = rule.targets - self._known if self._known != GROUPS else set()
            if unknown:
                raise FaultSpecError(f"unknown endpoint(s) in on=: {', '.join(sorted(unknown))}")
        now = self._clock.monotonic()
        ids = []
        for rule in rules:
            starts = now + rule.at_s
            ends = None if rule.for_s is None else starts + rule.for_s
            self._rules.append(ActiveFault(self._next_id, rule, rule.count, starts, ends))
            ids.append(self._next_id)
            self._next_id += 1
        return ids

    def remove(self, rule_id: int) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock.monotonic()
        self._expire(now)
        return [r.to_dict(now) for r in self._rules]

    def _expire(self, now: float) -> None:
        kept = []
        for rule in self._rules:
            if rule.ends_at is not None and now >= rule.ends_at:
                continue
            if rule.rule.kind == "ws_disconnect" and rule.starts_at <= now:
                self._fired_disconnects.append(float(rule.rule.value or 0))
                continue
            kept.append(rule)
        self._rules = kept

    def _active(self) -> list[ActiveFault]:
        now = self._clock.monotonic()
        self._expire(now)
        return [r for r in self._rules if r.starts_at <= now]

    def draw(self, endpoint: str, *, private: bool) -> list[FaultRule]:
        """The request faults that hit this call (consuming ``n`` counts as they trigger)."""
        if not self._rules:  # the usual case: nothing injected, nothing to expire
            return []
        hits = []
        for active in self._active():
            rule = active.rule
            if rule.kind not in REQUEST_KINDS:
                continue
            targets = rule.targets
            if not ("*" in targets or endpoint in targets or ("private" if private else "public") in targets):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            hits.append(rule)
            if active.remaining is not None:
                active.remaining -= 1
        self._rules = [r for r in self._rules if r.remaining is None or r.remaining > 0]
        return hits

    def _state_value(self, kind: str) -> str | None:
        values = [r.rule.value for r in self._active() if r.rule.kind == kind]
        return values[-1] if values else None

    def status(self) -> str:
        """The system status the newest active ``status`` rule sets (``online`` without one)."""
        return self._state_value("status") or "online"

    def stale(self) -> bool:
        return any(r.rule.kind == "stale" for r in self._active())

    def _limit(self, kind: str) -> tuple[float, float | None] | None:
        value = self._state_value(kind)
        if value is None:
            return None
        parts = [float(x) for x in value.split("/")]
        return parts[0], (parts[1] if len(parts) > 1 else None)

    def rest_limit(self) -> tuple[float, float | None] | None:
        """(max, decay or None) of an active ``ratelimit`` rule."""
        return self._limit("ratelimit")

    def order_limit(self) -> tuple[float, float | None] | None:
        """(max, decay or None) of an active ``order_ratelimit`` rule."""
        return self._limit("order_ratelimit")

    def take_disconnects(self) -> list[float]:
        """Refusal periods of ``ws_disconnect`` rules that fired since the last call."""
        self._active()
        fired, self._fired_disconnects = self._fired_disconnects, []
        return fired
